"""Drawing helpers every page uses: one-line errors, never a traceback; number labels."""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager

import streamlit as st

from lvseg_core.errors import LVSegError, one_line

log = logging.getLogger("lvseg.app")


@contextmanager
def guard(what: str = "this step"):
    """Show any failure inside the block as one ``st.error`` line, never a traceback.

    :class:`LVSegError` messages (written for users) are shown as they are;
    anything unexpected gets a generic line and its traceback goes to the
    server log. Streamlit's own control flow (rerun, stop) passes through.
    """
    try:
        yield
    except Exception as err:  # noqa: BLE001 - the app must keep working
        st.error(error_message(err, what), icon=":material/error:")


#: An absolute or relative file path in a message: its folders are dropped.
_PATH = re.compile(r"(?:(?<=^)|(?<=[\s(\[{'\"=,]))(?:~|\.{1,2})?/(?:[^\s/'\"()\[\]]+/)*"
                   r"([^\s/'\"()\[\],:]*)")


def without_paths(text: str) -> str:
    """``text`` with every file path cut to its last part, so that no server
    folder (a temporary upload folder, the data or weights location) is shown:
    ``"/tmp/lvseg-upload-x/scan.nii.gz: too large"`` -> ``"scan.nii.gz: too large"``."""
    return _PATH.sub(lambda m: m.group(1) or "…", text)


def error_message(err: BaseException, what: str = "this step") -> str:
    """The one line shown for ``err``, without server paths (unexpected errors
    are logged with their traceback)."""
    if isinstance(err, LVSegError):
        return without_paths(one_line(err))
    if isinstance(err, MemoryError):
        return f"Out of memory while {what}; try a smaller scan."
    log.error("unexpected error while %s", what, exc_info=err)
    return f"Unexpected error while {what}; the details are in the server log."


def fmt(value, digits: int = 3) -> str:
    """A number for a label: rounded, ``"n/a"`` for None/NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if number != number:
        return "n/a"
    return f"{number:.{digits}f}"
