"""PNG figures of the report, drawn with matplotlib (no browser or kaleido needed).

Pictures of slices reuse :mod:`lvseg_core.render` (window/level, label overlay,
error masks and colours), so the report looks like the app.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from bench.common import DISPLAY  # noqa: E402
from lvseg_core.labels import COLOURS, STRUCTURES  # noqa: E402

MODEL_COLOURS = {"unet": "tab:blue", "attention_unet": "tab:orange", "vnet": "tab:green"}
STRUCTURE_COLOURS = {s: tuple(c / 255 for c in COLOURS[s]) for s in STRUCTURES}
DPI = 110


def save(fig, path: Path) -> Path:
    """Write ``fig`` as PNG (at :data:`DPI`) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _name(arch: str) -> str:
    return DISPLAY.get(arch, arch)


# ---------------------------------------------------------------- data


def group_counts(counts: Mapping[str, int], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3))
    names = list(counts)
    ax.bar(names, [counts[n] for n in names], color="tab:gray")
    for i, n in enumerate(names):
        ax.text(i, counts[n], str(counts[n]), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("patients")
    ax.set_title("Patients per pathology group", fontsize=10)
    return save(fig, path)


def class_balance(frame, path: Path) -> Path:
    """Box plot of each structure's volume (mL) per phase, from explore.class_balance."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    sub = frame[frame["structure"].isin(STRUCTURES)]
    phases = [p for p in ("ED", "ES") if p in set(sub["phase"])] or sorted(set(sub["phase"]))
    for i, s in enumerate(STRUCTURES):
        for j, phase in enumerate(phases):
            values = sub[(sub["structure"] == s) & (sub["phase"] == phase)]["ml"].to_numpy()
            if values.size:
                bp = axes[0].boxplot(values, positions=[i * (len(phases) + 1) + j],
                                     widths=0.8, patch_artist=True)
                for patch in bp["boxes"]:
                    patch.set_facecolor(STRUCTURE_COLOURS[s])
                    patch.set_alpha(0.5 + 0.4 * j)
    axes[0].set_xticks([i * (len(phases) + 1) + (len(phases) - 1) / 2
                        for i in range(len(STRUCTURES))])
    axes[0].set_xticklabels([f"{s}\n({'/'.join(phases)})" for s in STRUCTURES], fontsize=8)
    axes[0].set_ylabel("volume (mL)")
    axes[0].set_title("Structure volumes per frame", fontsize=10)
    share = frame.groupby("structure")["fraction"].mean()
    order = ["background", *STRUCTURES]
    values = [100 * float(share.get(s, 0.0)) for s in order]
    axes[1].bar(order, values, color=["lightgrey", *[STRUCTURE_COLOURS[s] for s in STRUCTURES]])
    axes[1].set_yscale("log")
    for i, v in enumerate(values):
        axes[1].text(i, v, f"{v:.2f}%", ha="center", va="bottom", fontsize=8)
    axes[1].set_ylabel("share of voxels (%, log)")
    axes[1].set_title("Class balance (mean over frames)", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def intensity_histograms(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path
                         ) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, (edges, density) in curves.items():
        centres = (edges[:-1] + edges[1:]) / 2
        colour = STRUCTURE_COLOURS.get(name, "grey")
        ax.plot(centres, density, label=name, color=colour, lw=1.5)
    ax.set_xlabel("intensity / 99.5th percentile of the volume")
    ax.set_ylabel("density")
    ax.set_title("Intensity distribution inside the expert labels", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return save(fig, path)


def gallery(items: Sequence[tuple[str, np.ndarray]], path: Path, title: str = "") -> Path:
    n = len(items)
    cols = min(n, 6)
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (caption, rgb) in zip(axes.ravel(), items):
        ax.imshow(rgb)
        ax.set_title(caption.split(" · ")[-1], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


# ---------------------------------------------------------------- method


def _builder_defaults(arch: str) -> dict[str, Any]:
    from lvseg_core.models import builder

    return {k: v.default for k, v in inspect.signature(builder(arch)).parameters.items()
            if v.default is not inspect.Parameter.empty}


def architecture_facts(arch: str, model=None) -> dict[str, Any]:
    """Widths and parameter count of ``arch`` (from ``model`` or a fresh one)."""
    from lvseg_core.models import create_model

    if model is None:
        model = create_model(arch)
    args = {**_builder_defaults(arch), **model.arch_args}
    facts: dict[str, Any] = {"arch": arch, "parameters": model.num_parameters, "args": args,
                             "spatial_dims": model.spatial_dims}
    if arch == "unet":
        channels = list(model.net.encoder.out_channels)[1:]
        facts["encoder"] = channels
        facts["decoder"] = list(args["decoder_channels"])
        facts["block"] = f"{args['encoder_name']} residual encoder, 3x3 conv decoder"
    elif arch == "attention_unet":
        channels = list(args["channels"])
        facts["encoder"] = channels[:-1]
        facts["bottleneck"] = channels[-1]
        facts["decoder"] = list(reversed(channels[:-1]))
        facts["block"] = "2 x (3x3 conv, BN, ReLU); attention gate on every skip"
    else:
        levels = len(args["convs_per_level"])
        widths = [args["base_channels"] * 2 ** i for i in range(levels + 1)]
        facts["encoder"] = widths[:-1]
        facts["bottleneck"] = widths[-1]
        facts["decoder"] = list(reversed(widths[1:]))
        facts["convs_per_level"] = list(args["convs_per_level"])
        z_kernels = args.get("z_kernels")
        kernels = ("5x5x5" if not z_kernels else
                   "5x5 (through-plane " + "/".join(str(k) for k in z_kernels) + " by level)")
        facts["block"] = f"residual {kernels} conv stages, strided-conv down, transposed-conv up"
    return facts


def _box(ax, x, y, w, h, text, colour, fontsize=7):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h,
                                boxstyle="round,pad=0.02,rounding_size=0.05",
                                facecolor=colour, edgecolor="black", lw=0.6))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, a, b, colour="black", style="-|>", ls="-"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=7, color=colour,
                                 lw=0.8, linestyle=ls, shrinkA=2, shrinkB=2))


def _draw_u(ax, facts: dict, title: str) -> None:
    enc = facts["encoder"]
    dec = facts["decoder"]
    depth = len(enc)
    dims = "3D" if facts["spatial_dims"] == 3 else "2D"
    attention = facts["arch"] == "attention_unet"
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.8, depth + 1.6)
    ax.axis("off")
    ys = [depth - i for i in range(depth)]
    _box(ax, 0.8, depth + 0.9, 1.4, 0.5, f"image\n1 x {'D x ' if dims == '3D' else ''}H x W",
         "white")
    for i, (c, y) in enumerate(zip(enc, ys)):
        _box(ax, 2.5, y, 2.0, 0.55, f"enc {i + 1}: {c} ch", "#cfe2f3")
        if i:
            _arrow(ax, (2.5, ys[i - 1] - 0.3), (2.5, y + 0.3))
    _arrow(ax, (1.2, depth + 0.65), (2.5, ys[0] + 0.3))
    bottom = facts.get("bottleneck")
    yb = 0.0
    if bottom is not None:
        _box(ax, 5.0, yb, 2.0, 0.55, f"bottleneck {bottom} ch", "#d9d2e9")
        _arrow(ax, (2.5, ys[-1] - 0.3), (4.0, yb))
    else:
        _box(ax, 5.0, yb, 2.0, 0.55, f"enc {depth} output", "#d9d2e9")
        _arrow(ax, (2.5, ys[-1] - 0.3), (4.0, yb))
    dec_ys = list(reversed(ys))[:len(dec)]
    for i, (c, y) in enumerate(zip(dec, dec_ys)):
        _box(ax, 7.5, y, 2.0, 0.55, f"dec {len(dec) - i}: {c} ch", "#d9ead3")
        src = (6.0, yb) if i == 0 else (7.5, dec_ys[i - 1] + 0.3)
        _arrow(ax, src, (7.5, y - 0.3))
    for y in ys:
        if any(abs(y - d) < 1e-6 for d in dec_ys):
            if attention:
                ax.add_patch(plt.Circle((5.0, y), 0.22, facecolor="#fce5cd", edgecolor="black",
                                        lw=0.6))
                ax.text(5.0, y, "AG", ha="center", va="center", fontsize=6)
                _arrow(ax, (3.5, y), (4.78, y), colour="grey", ls="--")
                _arrow(ax, (5.22, y), (6.5, y), colour="grey", ls="--")
            else:
                _arrow(ax, (3.5, y), (6.5, y), colour="grey", ls="--")
    top = dec_ys[-1] if dec_ys else depth
    _box(ax, 9.2, top + 0.9, 1.3, 0.5, "logits\n4 classes", "#f4cccc")
    _arrow(ax, (7.5, top + 0.3), (9.0, top + 0.65))
    ax.set_title(f"{title} ({dims}, {facts['parameters'] / 1e6:.2f} M parameters)", fontsize=9)
    ax.text(5.0, -0.65, facts["block"], ha="center", va="center", fontsize=6.5,
            style="italic")


def architectures(facts: Sequence[dict], path: Path) -> Path:
    """Block diagrams of the architectures side by side."""
    fig, axes = plt.subplots(1, len(facts), figsize=(4.6 * len(facts), 3.6), squeeze=False)
    for ax, f in zip(axes[0], facts):
        _draw_u(ax, f, _name(f["arch"]))
    fig.text(0.5, 0.01, "dashed: skip connections (AG = attention gate); "
             "solid: data flow; ch = channels", ha="center", fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def lr_find(lr: Sequence[float], loss: Sequence[float], suggestion: float | None, model: str,
            path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot(lr, loss, color="tab:blue")
    ax.set_xscale("log")
    if suggestion:
        ax.axvline(suggestion, color="tab:red", ls="--", lw=1,
                   label=f"suggested {suggestion:.2e}")
        ax.legend(fontsize=8, frameon=False)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test ({_name(model)})", fontsize=10)
    return save(fig, path)


def learning_curves(curves: Mapping[str, Sequence[dict]], path: Path) -> Path:
    """Training / validation loss and validation Dice per epoch, one colour per model."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for arch, epochs in curves.items():
        colour = MODEL_COLOURS.get(arch)
        x = [e.get("epoch", i) + 1 for i, e in enumerate(epochs)]
        # Epochs without a value (validated every N epochs) are skipped, not gaps.
        for key, ls in (("train_loss", "-"), ("val_loss", "--")):
            pts = [(xi, e[key]) for xi, e in zip(x, epochs) if e.get(key) is not None]
            if pts:
                axes[0].plot(*zip(*pts), ls, color=colour,
                             label=f"{_name(arch)} {key.split('_')[0]}")
        pts = [(xi, e["val_dice"]) for xi, e in zip(x, epochs) if e.get("val_dice") is not None]
        if pts:
            axes[1].plot(*zip(*pts), "-o", ms=3, color=colour, label=_name(arch))
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("Dice + CE loss")
    axes[0].set_title("Loss (solid: training, dashed: validation)", fontsize=10)
    axes[0].legend(fontsize=7, frameon=False)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("mean validation Dice")
    axes[1].set_title("Validation Dice (3D, RV/Myo/LV mean)", fontsize=10)
    axes[1].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, path)


# ---------------------------------------------------------------- results


def grouped_bars(values: Mapping[str, Mapping[str, float]], categories: Sequence[str],
                 path: Path, ylabel: str, title: str, ylim: tuple | None = (0, 1),
                 fmt: str = "{:.2f}") -> Path:
    """Bars per category (x), one bar per model (``values[model][category]``)."""
    models = list(values)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(categories) * max(1, len(models)) / 2), 3.4))
    width = 0.8 / max(1, len(models))
    for i, arch in enumerate(models):
        xs = np.arange(len(categories)) + (i - (len(models) - 1) / 2) * width
        ys = [values[arch].get(c, np.nan) for c in categories]
        ys = [np.nan if v is None else v for v in ys]
        bars = ax.bar(xs, ys, width, label=_name(arch), color=MODEL_COLOURS.get(arch))
        for b, v in zip(bars, ys):
            if v is not None and math.isfinite(v):
                ax.text(b.get_x() + b.get_width() / 2, v, fmt.format(v), ha="center",
                        va="bottom", fontsize=6)
    ax.set_xticks(np.arange(len(categories)))
    ax.set_xticklabels(categories, fontsize=8)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return save(fig, path)


def case_dice_boxes(results: Mapping[str, dict], path: Path) -> Path:
    """Per-volume Dice of each structure, one box per model."""
    fig, axes = plt.subplots(1, len(STRUCTURES), figsize=(11, 3.2), sharey=True)
    for ax, s in zip(axes, STRUCTURES):
        data, labels, colours = [], [], []
        for arch, res in results.items():
            vals = [c["metrics"]["dice"][s] for c in res["per_case"]]
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            data.append(vals or [np.nan])
            labels.append(_name(arch))
            colours.append(MODEL_COLOURS.get(arch))
        bp = ax.boxplot(data, patch_artist=True, widths=0.6)
        for patch, c in zip(bp["boxes"], colours):
            patch.set_facecolor(c)
            patch.set_alpha(0.6)
        ax.set_xticks(range(1, len(labels) + 1))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(f"{s} Dice per volume", fontsize=10)
        ax.set_ylim(0, 1)
    fig.tight_layout()
    return save(fig, path)


def error_rgb(image: np.ndarray, pred: np.ndarray, gt: np.ndarray, window, level
              ) -> np.ndarray:
    """The slice in grey with false positives / negatives in the viz error colours."""
    from lvseg_core.render import ERROR_COLOURS, error_masks, overlay_rgb

    fp, fn = error_masks(pred, gt)
    rgb = overlay_rgb(image, None, window=window, level=level).astype(np.float32)
    for mask, name in ((fp.T, "false positive"), (fn.T, "false negative")):
        rgb[mask] = 0.2 * rgb[mask] + 0.8 * np.asarray(ERROR_COLOURS[name], np.float32)
    return (rgb + 0.5).clip(0, 255).astype(np.uint8)


def heart_box(gt: np.ndarray, margin: int = 24, minimum: int = 96
              ) -> tuple[slice, slice] | None:
    """In-plane box ``(x, y)`` around the expert labels of a volume (or slice), with a
    margin and a minimum size; None without labels."""
    fg = np.asarray(gt) > 0
    if fg.ndim == 3:
        fg = fg.any(axis=2)
    if not fg.any():
        return None
    box = []
    for axis in (0, 1):
        hits = np.flatnonzero(fg.any(axis=1 - axis))
        lo, hi = int(hits[0]) - margin, int(hits[-1]) + 1 + margin
        if hi - lo < minimum:
            grow = minimum - (hi - lo)
            lo, hi = lo - grow // 2, hi + grow - grow // 2
        n = fg.shape[axis]
        lo, hi = max(0, lo), min(n, hi)
        box.append(slice(lo, hi))
    return box[0], box[1]


def segmentation_panel(image: np.ndarray, gt: np.ndarray, pred: np.ndarray,
                       spacing: Sequence[float], title: str, path: Path,
                       volume: np.ndarray | None = None, box=None) -> Path:
    """Image, ground truth, prediction and error map of one slice ``(x, y)``.

    With ``box`` (see :func:`heart_box`), the first panel shows the whole slice
    with the box drawn and the other three are zoomed on it; errors outside
    the box are counted in the title of the error panel.
    """
    from lvseg_core.render import ERROR_COLOURS, auto_window, error_masks, overlay_rgb

    window, level = auto_window(volume if volume is not None else image)
    sx, sy = float(spacing[0]), float(spacing[1])
    full = overlay_rgb(image, None, window=window, level=level)
    bx, by = box if box is not None else (slice(0, image.shape[0]), slice(0, image.shape[1]))
    crop = (image[bx, by], gt[bx, by], pred[bx, by])
    fp, fn = error_masks(pred, gt)
    inside = np.zeros(image.shape, bool)
    inside[bx, by] = True
    outside = int((fp & ~inside).sum() + (fn & ~inside).sum())
    panels = [("ground truth", overlay_rgb(crop[0], crop[1], window=window, level=level)),
              ("prediction", overlay_rgb(crop[0], crop[2], window=window, level=level)),
              (f"errors (FP {int(fp.sum())}, FN {int(fn.sum())} px"
               + (f"; {outside} outside the view)" if outside else ")"),
               error_rgb(crop[0], crop[2], crop[1], window, level))]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    axes[0].imshow(full, extent=[0, image.shape[0] * sx, image.shape[1] * sy, 0])
    axes[0].set_title("image", fontsize=9)
    if box is not None:
        axes[0].add_patch(plt.Rectangle((bx.start * sx, by.start * sy),
                                        (bx.stop - bx.start) * sx, (by.stop - by.start) * sy,
                                        fill=False, edgecolor="yellow", lw=1))
    extent = [bx.start * sx, bx.stop * sx, by.stop * sy, by.start * sy]
    for ax, (name, rgb) in zip(axes[1:], panels):
        ax.imshow(rgb, extent=extent)
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=STRUCTURE_COLOURS[s]) for s in STRUCTURES]
    handles += [plt.Rectangle((0, 0), 1, 1, color=tuple(c / 255 for c in col))
                for col in ERROR_COLOURS.values()]
    fig.legend(handles, [*STRUCTURES, *ERROR_COLOURS], loc="lower center", ncol=5, fontsize=8,
               frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return save(fig, path)


def models_panel(image: np.ndarray, gt: np.ndarray, preds: Mapping[str, np.ndarray],
                 spacing: Sequence[float], title: str, path: Path,
                 volume: np.ndarray | None = None, box=None) -> Path:
    """One slice: ground truth and every model's prediction side by side (zoomed on ``box``)."""
    from lvseg_core.render import auto_window, overlay_rgb

    window, level = auto_window(volume if volume is not None else image)
    bx, by = box if box is not None else (slice(0, image.shape[0]), slice(0, image.shape[1]))
    img = image[bx, by]
    panels = [("ground truth", overlay_rgb(img, gt[bx, by], window=window, level=level))]
    panels += [(_name(a), overlay_rgb(img, p[bx, by], window=window, level=level))
               for a, p in preds.items()]
    sx, sy = float(spacing[0]), float(spacing[1])
    extent = [bx.start * sx, bx.stop * sx, by.stop * sy, by.start * sy]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4), squeeze=False)
    for ax, (name, rgb) in zip(axes[0], panels):
        ax.imshow(rgb, extent=extent)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def robustness(results: Mapping[str, dict], path: Path) -> Path:
    """Change of mean Dice under each perturbation (mild and strong), per model."""
    first = next(iter(results.values()))
    keys = list(first["perturbed"])
    labels = [first["perturbed"][k]["label"] for k in keys]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / max(1, len(results))
    for i, (arch, res) in enumerate(results.items()):
        xs = np.arange(len(keys)) + (i - (len(results) - 1) / 2) * width
        ys = [res["perturbed"][k]["delta"]["mean"] for k in keys]
        ax.bar(xs, ys, width, label=f"{_name(arch)} (clean {res['clean']['mean']:.3f})",
               color=MODEL_COLOURS.get(arch))
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("Δ mean Dice vs clean")
    ax.set_title("Robustness to simulated acquisition differences", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return save(fig, path)


def speed(results: Mapping[str, dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    models = list(results)
    xs = np.arange(len(models))
    batched = [results[a]["seconds_per_volume"] for a in models]
    loop = [results[a].get("slice_loop_seconds_per_volume") or np.nan for a in models]
    ax.bar(xs - 0.2, batched, 0.4, label="LVSeg (batched)", color="tab:blue")
    ax.bar(xs + 0.2, loop, 0.4, label="slice-by-slice loop", color="tab:gray")
    for x, b, lp in zip(xs, batched, loop):
        if math.isfinite(lp) and b:
            ax.text(x + 0.2, lp, f"{lp / b:.2f}x", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs)
    ax.set_xticklabels([_name(a) for a in models], fontsize=8)
    ax.set_ylabel("seconds per volume")
    ax.set_title("Inference time per volume (lower is better)", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return save(fig, path)


#: Backend variants of ``bench.speed`` in the order they are drawn, with labels.
VARIANTS = {"slice_loop": "slice loop", "torch_fp32": "torch fp32", "torch_bf16": "torch bf16",
            "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8"}


def speed_backends(models: Mapping[str, dict], ray: Mapping[str, Any] | None,
                   path: Path) -> Path | None:
    """Slices per second of each backend variant per model (``bench.speed``'s
    ``backends``), and seconds per volume of the cohort engines (``ray``);
    None when neither was measured."""
    measured = {a: r["backends"]["variants"] for a, r in models.items() if r.get("backends")}
    engines = (ray or {}).get("engines") or {}
    panels = [p for p, present in (("backends", measured), ("engines", engines)) if present]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.3), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "backends":
            names = [v for v in VARIANTS if any(v in m for m in measured.values())]
            width = 0.8 / max(1, len(measured))
            for i, (arch, variants) in enumerate(measured.items()):
                xs = np.arange(len(names)) + (i - (len(measured) - 1) / 2) * width
                ys = [variants.get(v, {}).get("slices_per_second", np.nan) for v in names]
                ax.bar(xs, ys, width, label=_name(arch), color=MODEL_COLOURS.get(arch))
            ax.set_xticks(np.arange(len(names)))
            ax.set_xticklabels([VARIANTS[v] for v in names], fontsize=8)
            ax.set_ylabel("slices per second")
            ax.set_title("Backends, one process (higher is better)", fontsize=10)
            ax.legend(fontsize=7, frameon=False)
        else:
            names = list(engines)
            ys = [engines[n]["seconds_per_volume"] for n in names]
            ax.bar(names, ys, color=["tab:gray"] + ["tab:purple"] * (len(names) - 1))
            for x, n in enumerate(names):
                e = engines[n]
                ax.text(x, ys[x], f"{ys[x]:.2f} s" + ("" if e.get("masks_identical_to_local")
                                                       else " (masks differ)"),
                        ha="center", va="bottom", fontsize=7)
            ax.set_ylabel("seconds per volume")
            ax.set_title(f"Cohort engines, {ray['volumes']} volumes (lower is better)",
                         fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def small_multiples(panels: Mapping[str, Mapping[str, Mapping[str, float]]],
                    categories: Sequence[str], path: Path, ylabel: str, title: str,
                    ylim: tuple | None = (0, 1)) -> Path:
    """One panel per key of ``panels`` (e.g. a structure); in each, bars per
    category (x) and model: ``panels[panel][model][category]``."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(max(4.0, 1.1 * len(categories) + 1.5) * n, 3.3),
                             squeeze=False, sharey=True)
    for ax, (panel, values) in zip(axes[0], panels.items()):
        models = list(values)
        width = 0.8 / max(1, len(models))
        for i, arch in enumerate(models):
            xs = np.arange(len(categories)) + (i - (len(models) - 1) / 2) * width
            ys = [values[arch].get(c) for c in categories]
            ys = [np.nan if v is None else v for v in ys]
            ax.bar(xs, ys, width, label=_name(arch), color=MODEL_COLOURS.get(arch))
        ax.set_xticks(np.arange(len(categories)))
        ax.set_xticklabels(categories, fontsize=8)
        ax.set_title(panel, fontsize=10)
        if ylim:
            ax.set_ylim(*ylim)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)
