"""The AHA bullseye plot (matplotlib, PNG) of per-segment values.

Standard orientation (Cerqueira et al. 2002): anterior at the top, septum on
the left, inferior at the bottom, lateral on the right; rings from outside in:
basal (1-6), mid (7-12), apical (13-16), apex (17, not measured: grey).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping


#: (inner radius, outer radius, first segment, segment count, start angle in degrees
#: of the first segment, counter-clockwise).
_RINGS = ((0.75, 1.0, 1, 6, 60.0), (0.5, 0.75, 7, 6, 60.0), (0.25, 0.5, 13, 4, 45.0))


def bullseye_figure(values: Mapping[int, float], *, title: str = "", unit: str = "mm",
                    vmin: float | None = None, vmax: float | None = None,
                    cmap: str = "viridis"):
    """A matplotlib figure of ``values`` (segment 1-16 -> value; NaN or missing: grey)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Wedge

    finite = [float(v) for v in values.values() if v is not None and math.isfinite(float(v))]
    lo = vmin if vmin is not None else (min(finite) if finite else 0.0)
    hi = vmax if vmax is not None else (max(finite) if finite else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    colours = matplotlib.colormaps[cmap]
    norm = matplotlib.colors.Normalize(lo, hi)
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=100)
    for inner, outer, first, count, start in _RINGS:
        step = 360.0 / count
        for i in range(count):
            segment = first + i
            value = values.get(segment)
            ok = value is not None and math.isfinite(float(value))
            a0 = start + i * step
            ax.add_patch(Wedge((0, 0), outer, a0, a0 + step, width=outer - inner,
                               facecolor=colours(norm(float(value))) if ok else "#cccccc",
                               edgecolor="white", linewidth=1.5))
            mid = math.radians(a0 + step / 2)
            r = (inner + outer) / 2
            text = f"{segment}\n{float(value):.1f}" if ok else f"{segment}\n-"
            ax.text(r * math.cos(mid), r * math.sin(mid), text, ha="center", va="center",
                    fontsize=7, color="white" if ok and norm(float(value)) < 0.6 else "black")
    ax.add_patch(Circle((0, 0), 0.25, facecolor="#cccccc", edgecolor="white", linewidth=1.5))
    ax.text(0, 0, "17", ha="center", va="center", fontsize=7)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.text(0, 1.02, "anterior", ha="center", va="bottom", fontsize=7)
    ax.text(-1.03, 0, "septal", ha="right", va="center", fontsize=7, rotation=90)
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=colours)
    fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.08, label=unit)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def figure_png(fig) -> bytes:
    """PNG bytes of a matplotlib figure (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def bullseye_png(values: Mapping[int, float], **kwargs) -> bytes:
    """PNG bytes of :func:`bullseye_figure`."""
    return figure_png(bullseye_figure(values, **kwargs))


def segment_values(rows, key: str) -> dict[int, float]:
    """``{segment: row[key]}`` from :func:`lvseg_core.regional.aha_wall_thickness` rows."""
    return {int(r["segment"]): float(r[key]) if r[key] is not None else float("nan")
            for r in rows}


__all__ = ["bullseye_figure", "bullseye_png", "figure_png", "segment_values"]
