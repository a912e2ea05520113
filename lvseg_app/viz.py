"""The app's Plotly figures.

Conventions: arrays are in voxel order, a slice is ``(x, y)`` and a volume
``(x, y, z)`` (as :class:`~lvseg_core.scan.Scan` stores them). Slices are
drawn with ``x`` to the right and ``y`` downwards, axes in millimetres (the
in-plane voxel spacing), so that anisotropic pixels keep their true shape.
Label maps use the ACDC values (0 background, 1 RV, 2 Myo, 3 LV) and the
colours of :data:`lvseg_core.labels.COLOURS`.

Images are sent to the browser as PNG (``go.Image(source=...)``), not as
lists of numbers, so a 256 x 256 slice costs tens of kilobytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lvseg_core.labels import COLOURS, LABEL_OF, STRUCTURES
from lvseg_core.render import ERROR_COLOURS, blend, error_masks, overlay_rgb, png_data_uri

#: Axis titles of table columns used by :func:`box_plot`.
AXIS_TITLES: dict[str, str] = {"dice": "Dice", "hd95_mm": "HD95 (mm)", "iou": "IoU",
                               "assd_mm": "ASSD (mm)", "model": "model", "group": "group",
                               "structure": "structure"}

#: Plotly layout shared by image figures.
_IMAGE_MARGIN = dict(l=0, r=0, t=30, b=10)


def _rgb(colour: tuple[int, int, int]) -> str:
    return f"rgb({colour[0]},{colour[1]},{colour[2]})"


def structure_colour(structure: str) -> str:
    """CSS colour of a structure, e.g. ``"rgb(234,67,53)"`` for LV."""
    return _rgb(COLOURS[structure])


def _image_figure(rgb: np.ndarray, spacing: Sequence[float], title: str,
                  height: int | None) -> go.Figure:
    """A figure showing ``rgb`` ``(y, x, 3)`` with mm axes and square pixels in mm."""
    sx, sy = float(spacing[0]), float(spacing[1])
    fig = go.Figure(go.Image(source=png_data_uri(rgb), x0=sx / 2, dx=sx, y0=sy / 2, dy=sy,
                             hoverinfo="skip", name="slice"))
    rows, cols = rgb.shape[:2]
    fig.update_xaxes(range=[0, cols * sx], showgrid=False, zeroline=False,
                     ticksuffix=" mm", constrain="domain")
    fig.update_yaxes(range=[rows * sy, 0], showgrid=False, zeroline=False,
                     ticksuffix=" mm", scaleanchor="x", scaleratio=1, constrain="domain")
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=14)),
                      margin=_IMAGE_MARGIN, height=height,
                      plot_bgcolor="black",
                      legend=dict(orientation="h", x=1.0, xanchor="right", y=-0.07,
                                  yanchor="top", font=dict(size=11)))
    return fig


def _legend_entries(fig: go.Figure, entries: Mapping[str, str]) -> None:
    """Legend items (name -> CSS colour) drawn as invisible square markers."""
    for name, colour in entries.items():
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker=dict(size=11, color=colour, symbol="square"),
                                 hoverinfo="skip", showlegend=True))


# ---------------------------------------------------------------- slice figures


def slice_overlay(image: np.ndarray, mask: np.ndarray | None = None, *,
                  spacing: Sequence[float] = (1.0, 1.0), window: float | None = None,
                  level: float | None = None, opacity: float = 0.45,
                  structures: Sequence[str] = STRUCTURES, title: str = "",
                  height: int | None = 480) -> go.Figure:
    """One slice with the segmentation as a coloured overlay.

    Args:
        image: intensities, shape ``(x, y)``.
        mask: labels (0..3), shape ``(x, y)``, or None for the image alone.
        spacing: in-plane voxel size ``(sx, sy[, sz])`` in mm (axes are in mm).
        window, level: display range (default: 1st..99th percentile of the slice).
        opacity: overlay opacity in 0..1.
        structures: structures drawn (per-structure toggles).
        title: figure title.
        height: figure height in pixels (None: Plotly's default).

    Returns:
        A figure with one image trace and a legend of the drawn structures.
    """
    rgb = overlay_rgb(image, mask, window=window, level=level, opacity=opacity,
                      structures=structures)
    fig = _image_figure(rgb, spacing, title, height)
    if mask is not None:
        _legend_entries(fig, {s: structure_colour(s) for s in structures})
    return fig


def _colour_table(colorscale: str = "Inferno", n: int = 256) -> np.ndarray:
    """``n`` RGB colours (uint8, ``(n, 3)``) sampled along a Plotly colour scale."""
    from plotly.colors import get_colorscale, sample_colorscale, unlabel_rgb

    colours = sample_colorscale(get_colorscale(colorscale), list(np.linspace(0.0, 1.0, n)))
    return np.array([unlabel_rgb(c) for c in colours], dtype=np.float32).round().astype(np.uint8)


def probability_map(probability: np.ndarray, image: np.ndarray | None = None, *,
                    spacing: Sequence[float] = (1.0, 1.0), structure: str = "LV",
                    window: float | None = None, level: float | None = None,
                    opacity: float = 0.75, colorscale: str = "Inferno",
                    height: int | None = 480) -> go.Figure:
    """The predicted probability of one structure on a slice, as a colour map.

    Args:
        probability: probabilities in 0..1, shape ``(x, y)``.
        image: the slice ``(x, y)`` drawn in grey underneath, or None (black).
        spacing: in-plane voxel size ``(sx, sy[, sz])`` in mm.
        structure: name shown in the title and colour bar.
        window, level: display range of ``image``.
        opacity: opacity of the colours over the image.
        colorscale: a Plotly colour scale name.
        height: figure height in pixels.

    Returns:
        The slice with the probabilities blended in (one PNG; values below
        0.02 are left out so the anatomy shows through) and a 0..1 colour bar.
    """
    prob = np.asarray(probability, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"expected a 2D (x, y) probability map, got shape {prob.shape}")
    if image is not None:
        rgb = overlay_rgb(image, None, window=window, level=level).astype(np.float32)
        if rgb.shape[:2] != prob.T.shape:
            raise ValueError(f"probability shape {prob.shape} does not match image "
                             f"shape {np.asarray(image).shape}")
    else:
        rgb = np.zeros((*prob.T.shape, 3), np.float32)
    values = np.nan_to_num(np.clip(prob.T, 0.0, 1.0))
    table = _colour_table(colorscale)
    colours = table[(values * (len(table) - 1)).round().astype(np.intp)].astype(np.float32)
    shown = (values >= 0.02)[..., None]
    rgb = np.where(shown, (1.0 - opacity) * rgb + opacity * colours, rgb)
    fig = _image_figure((rgb + 0.5).clip(0, 255).astype(np.uint8), spacing,
                        f"P({structure})", height)
    # The colour bar, from a marker trace without points.
    fig.add_trace(go.Scatter(
        x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
        marker=dict(colorscale=colorscale, cmin=0.0, cmax=1.0, color=[0.0], showscale=True,
                    colorbar=dict(title=dict(text=f"P({structure})"), thickness=12))))
    return fig


def error_map(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray, *,
              spacing: Sequence[float] = (1.0, 1.0), window: float | None = None,
              level: float | None = None, structures: Sequence[str] = STRUCTURES,
              opacity: float = 0.8, title: str = "Errors", height: int | None = 480
              ) -> go.Figure:
    """False positives and false negatives of one slice in two colours.

    Args:
        image: intensities ``(x, y)``.
        prediction, truth: label maps ``(x, y)``.
        spacing: in-plane voxel size in mm.
        window, level: display range of ``image``.
        structures: structures whose errors are drawn (see :func:`error_masks`).
        opacity: colour opacity.
        title: figure title (the voxel counts are appended).
        height: figure height in pixels.

    Returns:
        The slice with false positives in amber and false negatives in magenta
        (:data:`ERROR_COLOURS`), with a legend.
    """
    fp, fn = error_masks(prediction, truth, structures)
    grey = overlay_rgb(image, None, window=window, level=level).astype(np.float32)
    blend(grey, fp.T, ERROR_COLOURS["false positive"], opacity)
    blend(grey, fn.T, ERROR_COLOURS["false negative"], opacity)
    rgb = (grey + 0.5).clip(0, 255).astype(np.uint8)
    fig = _image_figure(rgb, spacing, f"{title} (FP {int(fp.sum())}, FN {int(fn.sum())} px)",
                        height)
    _legend_entries(fig, {name: _rgb(c) for name, c in ERROR_COLOURS.items()})
    return fig


# ---------------------------------------------------------------- cine and 3D


def volume_curve(lv_ml: Sequence[float], rv_ml: Sequence[float] | None = None, *,
                 ed: int | None = None, es: int | None = None,
                 frame_ms: Sequence[float] | None = None, height: int | None = 360
                 ) -> go.Figure:
    """Ventricular volume over the cardiac cycle, with ED and ES marked.

    Args:
        lv_ml: LV cavity volume (mL) per frame, length ``t``.
        rv_ml: RV cavity volume (mL) per frame, or None.
        ed, es: 0-based end-diastolic / end-systolic frames (None: not marked).
        frame_ms: time of each frame in ms (e.g. DICOM trigger times); the
            x axis shows frame numbers when None.
        height: figure height in pixels.

    Returns:
        A line figure (one line per ventricle) with ED/ES vertical markers.
    """
    lv = [float(v) for v in lv_ml]
    x = list(frame_ms) if frame_ms is not None and len(frame_ms) == len(lv) else \
        list(range(len(lv)))
    x_title = "time (ms)" if frame_ms is not None and len(frame_ms) == len(lv) else "frame"
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=lv, mode="lines+markers", name="LV",
                             line=dict(color=structure_colour("LV"), width=2.5)))
    if rv_ml is not None:
        fig.add_trace(go.Scatter(x=x, y=[float(v) for v in rv_ml], mode="lines+markers",
                                 name="RV", line=dict(color=structure_colour("RV"), width=2)))
    for label, frame, dash in (("ED", ed, "dash"), ("ES", es, "dot")):
        if frame is None or not 0 <= frame < len(lv):
            continue
        fig.add_vline(x=x[frame], line=dict(color="grey", dash=dash))
        fig.add_annotation(x=x[frame], y=lv[frame], text=f"{label} {lv[frame]:.0f} mL",
                           showarrow=True, arrowhead=2, ax=0, ay=-30)
    if x_title == "frame":
        fig.update_xaxes(tickmode="linear", dtick=max(1, len(lv) // 12))
    fig.update_layout(xaxis_title=x_title, yaxis_title="volume (mL)", height=height,
                      margin=dict(l=10, r=10, t=30, b=10), title="Volume over the cycle",
                      legend=dict(orientation="h", y=1.1))
    return fig


def surface_mesh(mask: np.ndarray, spacing: Sequence[float], *,
                 structures: Sequence[str] = STRUCTURES, step_size: int = 1,
                 opacity: float | Mapping[str, float] | None = None,
                 max_faces: int = 60_000, height: int | None = 520) -> go.Figure:
    """3D surfaces of the segmented structures (marching cubes) in millimetres.

    Args:
        mask: label map ``(x, y, z)``.
        spacing: voxel size ``(sx, sy, sz)`` in mm (thick short-axis slices
            give the stepped look of the true data; nothing is interpolated).
        structures: structures drawn.
        step_size: marching-cubes step in voxels (2 or more: coarser, lighter).
        opacity: one value or one per structure (default: Myo 0.5, others 0.9).
        max_faces: triangle budget of the figure, shared by the structures; a
            structure over its share is redone with a larger step, so that a
            ragged mask cannot produce a figure too heavy for the browser.
        height: figure height in pixels.

    Returns:
        A figure with one ``Mesh3d`` per non-empty structure, equal mm axes.
    """
    from skimage.measure import marching_cubes

    labels = np.asarray(mask)
    if labels.ndim != 3:
        raise ValueError(f"expected a 3D (x, y, z) label map, got shape {labels.shape}")
    spacing3 = tuple(float(s) for s in list(spacing)[:3])
    default_opacity = {"RV": 0.9, "Myo": 0.5, "LV": 0.9}
    fig = go.Figure()
    for name in structures:
        region = labels == LABEL_OF[name]
        if region.sum() < 8:
            continue
        # Pad so that surfaces touching the volume border are closed.
        padded = np.pad(region, 1).astype(np.float32)
        budget = max(1000, int(max_faces) // max(1, len(structures)))
        step, verts, faces = max(1, int(step_size)), None, None
        while step <= 8:
            try:
                verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=spacing3,
                                                    step_size=step)
            except (RuntimeError, ValueError):   # no surface at this step size
                verts = faces = None
                break
            if len(faces) <= budget:
                break
            step += 1
        if faces is None or len(faces) == 0:
            continue
        verts -= np.asarray(spacing3)
        alpha = (opacity.get(name, 0.8) if isinstance(opacity, Mapping)
                 else opacity if opacity is not None else default_opacity[name])
        fig.add_trace(go.Mesh3d(
            x=verts[:, 0].round(2), y=verts[:, 1].round(2), z=verts[:, 2].round(2),
            i=faces[:, 0], j=faces[:, 1], k=faces[:, 2], color=structure_colour(name),
            opacity=float(alpha), name=name, showlegend=True, flatshading=False,
            hoverinfo="name", lighting=dict(ambient=0.5, diffuse=0.8, specular=0.2)))
    fig.update_layout(scene=dict(aspectmode="data", xaxis_title="x (mm)",
                                 yaxis_title="y (mm)", zaxis_title="z (mm)",
                                 camera=dict(eye=dict(x=1.1, y=1.1, z=0.8))),
                      height=height, margin=dict(l=0, r=0, t=30, b=0),
                      title="3D surface", legend=dict(orientation="h"))
    return fig


# ---------------------------------------------------------------- tables of cases


def box_plot(frame, value: str, *, x: str = "model", color: str | None = "structure",
             title: str = "", points: str | bool = "all", height: int | None = 420
             ) -> go.Figure:
    """Box plots of a per-case metric.

    Args:
        frame: a pandas DataFrame in long format, one row per case (and
            structure), with the columns ``value``, ``x`` and ``color``.
        value: the metric column, e.g. ``"dice"`` or ``"hd95_mm"``.
        x: column giving the boxes along the x axis (e.g. ``"model"``, ``"group"``).
        color: column giving the box colour (e.g. ``"structure"``), or None.
        title: figure title.
        points: Plotly's ``points`` (``"all"``, ``"outliers"`` or False).
        height: figure height in pixels.

    Returns:
        A grouped box-plot figure; structures use their overlay colours.
    """
    colours = {s: structure_colour(s) for s in STRUCTURES}
    fig = px.box(frame, x=x, y=value, color=color, points=points, title=title,
                 color_discrete_map=colours if color == "structure" else None,
                 category_orders={"structure": list(STRUCTURES)}, height=height,
                 labels=AXIS_TITLES)
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), boxmode="group")
    return fig


def training_curves(epochs: Sequence[Mapping], height: int | None = 340) -> go.Figure:
    """Loss and validation Dice per epoch of a training run.

    Args:
        epochs: the ``event == "epoch"`` records of ``metrics.jsonl`` (keys
            ``epoch``, ``train_loss``, ``val_loss``, ``val_dice``,
            ``val_dice_RV`` ...; missing or None values are skipped).
        height: figure height in pixels.

    Returns:
        Two side-by-side panels: losses (left) and validation Dice (right).
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Validation Dice"))
    x = [e.get("epoch") for e in epochs]

    def series(key: str) -> list:
        return [e.get(key) for e in epochs]

    for key, name, dash in (("train_loss", "train loss", None), ("val_loss", "val loss", "dot")):
        if any(v is not None for v in series(key)):
            fig.add_trace(go.Scatter(x=x, y=series(key), name=name, mode="lines+markers",
                                     line=dict(dash=dash)), row=1, col=1)
    if any(v is not None for v in series("val_dice")):
        fig.add_trace(go.Scatter(x=x, y=series("val_dice"), name="mean Dice",
                                 mode="lines+markers", line=dict(color="black", width=3)),
                      row=1, col=2)
    for s in STRUCTURES:
        if any(v is not None for v in series(f"val_dice_{s}")):
            fig.add_trace(go.Scatter(x=x, y=series(f"val_dice_{s}"), name=f"Dice {s}",
                                     mode="lines", line=dict(color=structure_colour(s))),
                          row=1, col=2)
    fig.update_xaxes(title_text="epoch", tickformat="d",
                     dtick=1 if len(x) <= 12 else None)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def lr_find_curve(lr: Sequence[float], loss: Sequence[float],
                  suggestion: float | None = None, height: int | None = 340) -> go.Figure:
    """The learning-rate range test: loss against learning rate (log axis).

    Args:
        lr, loss: the tested learning rates and the (smoothed) losses, same length.
        suggestion: the suggested learning rate, marked with a vertical line.
        height: figure height in pixels.
    """
    fig = go.Figure(go.Scatter(x=list(lr), y=list(loss), mode="lines", name="loss"))
    if suggestion is not None and math.isfinite(suggestion):
        fig.add_vline(x=suggestion, line=dict(color="red", dash="dash"),
                      annotation_text=f"suggested {suggestion:.2g}")
    fig.update_xaxes(type="log", title_text="learning rate")
    fig.update_yaxes(title_text="loss")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      title="LR range test")
    return fig


# ---------------------------------------------------------------- dataset figures


def bar_counts(counts: Mapping[str, float], *, title: str = "", x_title: str = "",
               y_title: str = "count", height: int | None = 300) -> go.Figure:
    """A bar chart of ``{category: count}`` (e.g. patients per pathology group)."""
    fig = go.Figure(go.Bar(x=list(counts), y=list(counts.values()),
                           text=[f"{v:g}" for v in counts.values()], textposition="auto"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=height,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def class_balance(frame, *, value: str = "ml", height: int | None = 340) -> go.Figure:
    """Grouped bars of structure size per phase (ED vs ES).

    Args:
        frame: DataFrame with columns ``structure``, ``phase`` and ``value``
            (one row per case and structure; bars show the mean over cases,
            error bars the standard deviation, cut at zero below).
        value: the size column, e.g. ``"ml"`` or ``"voxels"``.
        height: figure height in pixels.
    """
    stats = frame.groupby(["structure", "phase"], sort=False)[value].agg(["mean", "std"])
    stats = stats.reset_index()
    fig = go.Figure()
    for phase, pattern in (("ED", ""), ("ES", "/")):
        part = stats[stats["phase"] == phase].set_index("structure").reindex(list(STRUCTURES))
        if part["mean"].notna().any():
            fig.add_trace(go.Bar(
                x=list(STRUCTURES), y=part["mean"], name=phase,
                # A size is never negative: the lower bar stops at zero.
                error_y=dict(type="data", array=part["std"].fillna(0),
                             arrayminus=np.minimum(part["std"].fillna(0), part["mean"])),
                marker=dict(color=[structure_colour(s) for s in STRUCTURES],
                            pattern_shape=pattern, line=dict(color="black", width=1))))
    fig.update_layout(barmode="group", yaxis_title=f"mean {value} per case",
                      title="Class balance: structure size, ED vs ES", height=height,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def histograms(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], *, title: str = "",
               x_title: str = "intensity", height: int | None = 320) -> go.Figure:
    """Overlaid histograms, one line per name.

    Args:
        curves: ``{name: (edges, density)}`` with ``len(edges) == len(density) + 1``.
        title, x_title: labels.
        height: figure height in pixels.
    """
    fig = go.Figure()
    for name, (edges, density) in curves.items():
        centres = (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2
        colour = structure_colour(name) if name in COLOURS else \
            ("rgb(110,110,110)" if name == "background" else None)
        fig.add_trace(go.Scatter(x=centres, y=np.asarray(density), mode="lines", name=name,
                                 line=dict(shape="hvh", color=colour)))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title="density", height=height,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig
