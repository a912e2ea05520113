"""The report as a document: its sections, tables and figures, shared by the markdown
report (:mod:`bench.report`) and the slides (:mod:`bench.slides`).

:class:`Report` collects the markdown lines section by section, the figure
files and the facts (numbers, tables) a section found, so that the slides read
a section's bullets and facts from the model, never by parsing the markdown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Section headings of REPORT.md, in order (tests check them).
SECTIONS: tuple[str, ...] = (
    "## 1. Problem", "## 2. Data", "## 3. Method", "## 4. Experiments", "## 5. Results",
    "## 6. Failure analysis", "## 7. What to try next", "## Reproduce")

def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """Collects markdown lines, figure paths and facts for the slides and README."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.figures = out / "figures"
        self.lines: list[str] = []
        self.facts: dict[str, Any] = {"figures": {}}
        self.starts: dict[str, int] = {}     # section heading -> index of its line

    def add(self, *lines: str) -> None:
        """Append markdown lines; a line of :data:`SECTIONS` starts that section."""
        for line in lines:
            if line in SECTIONS:
                self.starts[line] = len(self.lines)
            self.lines.append(line)

    def section_lines(self, heading: str) -> list[str]:
        """The lines of the section ``heading`` (one of :data:`SECTIONS`), without it;
        [] when the section was not written."""
        if heading not in self.starts:
            return []
        start = self.starts[heading] + 1
        later = [i for i in self.starts.values() if i >= start]
        return self.lines[start:min(later, default=len(self.lines))]

    def bullets(self, heading: str) -> list[str]:
        """The top-level bullets of a section as plain text (no ``**`` or backticks)."""
        return [re.sub(r"\*\*|`", "", line[2:]) for line in self.section_lines(heading)
                if line.startswith("- ")]

    def figure(self, path: Path | None, caption: str, key: str | None = None) -> None:
        if path is None:
            return
        rel = os.path.relpath(path, self.out)
        self.add(f"![{caption}]({rel.replace(os.sep, '/')})", "", f"*{caption}*", "")
        if key:
            self.facts["figures"][key] = path

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"
