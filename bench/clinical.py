"""Clinical agreement: predicted vs manual LV EDV, ESV, EF and myocardial mass.

Per patient (ED and ES frames both evaluated), the indices come from
:func:`lvseg_core.workflows.evaluate_dataset` (``ef`` rows, computed with
:mod:`lvseg_core.clinical`); the statistics (Pearson r, bias, 95 % limits of
agreement) from :mod:`bench.agreement`. Bland-Altman plots are PNG files
drawn with matplotlib.

    python -m bench.clinical --accuracy bench/results/accuracy.json \
        --json bench/results/clinical.json --figures docs/figures
    python -m bench.clinical --models unet --cases 4      # evaluates first
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.agreement import INDICES, bland_altman_axes, clinical_agreement, index_pairs
from bench.common import (DISPLAY, add_common_options, finish, fmt, log, read_json,
                          resolve_models, run_main, setup_torch)
from lvseg_core.errors import LVSegError

#: One colour per model in every figure.
COLOURS = {"unet": "tab:blue", "attention_unet": "tab:orange", "vnet": "tab:green"}


def compute(accuracy: dict) -> dict:
    """Agreement statistics of every model of an accuracy report."""
    out = {"kind": "clinical", "data": accuracy.get("data"), "split": accuracy.get("split"),
           "models": {}, "skipped": dict(accuracy.get("skipped", {}))}
    for arch, result in accuracy.get("models", {}).items():
        rows = result.get("ef", [])
        out["models"][arch] = {"patients": len(rows), "indices": clinical_agreement(rows),
                               "per_patient": rows}
    return out


def _index_axes(width: float = 3.4, height: float = 3.2):
    """A figure with one axis per index of :data:`INDICES`, 4 per row (LV and
    mass on the first, RV on the second); unused axes hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(INDICES) // 4)
    fig, axes = plt.subplots(rows, 4, figsize=(4 * width, rows * height), squeeze=False)
    for ax in axes.ravel()[len(INDICES):]:
        ax.set_visible(False)
    return plt, fig, axes.ravel()[:len(INDICES)]


def bland_altman_figure(accuracy: dict, path: Path, arch: str) -> Path | None:
    """Bland-Altman plots of one model, one per index (LV EDV, ESV, EF, mass;
    RV EDV, ESV, EF); None without patients."""
    rows = accuracy["models"][arch].get("ef", [])
    if not rows:
        return None
    plt, fig, axes = _index_axes()
    for ax, (key, (label, unit)) in zip(axes, INDICES.items()):
        manual, predicted = index_pairs(rows, key)
        bland_altman_axes(ax, manual, predicted, title=label, unit=unit,
                          colour=COLOURS.get(arch, "tab:blue"))
    fig.suptitle(f"{DISPLAY.get(arch, arch)}: predicted vs manual, Bland-Altman "
                 f"({len(rows)} patients)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scatter_figure(accuracy: dict, path: Path) -> Path | None:
    """Predicted vs manual scatter (identity line) of each index, all models."""
    import numpy as np

    models = {a: r.get("ef", []) for a, r in accuracy.get("models", {}).items() if r.get("ef")}
    if not models:
        return None
    plt, fig, axes = _index_axes(3.5, 3.4)
    for ax, (key, (label, unit)) in zip(axes, INDICES.items()):
        values = []
        for arch, rows in models.items():
            manual, predicted = index_pairs(rows, key)
            m = np.array([np.nan if v is None else v for v in manual], float)
            p = np.array([np.nan if v is None else v for v in predicted], float)
            ax.scatter(m, p, s=18, label=DISPLAY.get(arch, arch), color=COLOURS.get(arch))
            values.extend([*m[np.isfinite(m)], *p[np.isfinite(p)]])
        if values:
            lo, hi = min(values), max(values)
            ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(f"manual ({unit})", fontsize=8)
        ax.set_ylabel(f"predicted ({unit})", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_table(report: dict) -> None:
    print(f"{'model':<16}{'index':<18}{'n':>4}{'r':>8}{'bias':>9}{'LoA low':>10}{'LoA high':>10}")
    for arch, res in report["models"].items():
        for key, stats in res["indices"].items():
            label, unit = INDICES[key]
            print(f"{arch:<16}{label + ' (' + unit + ')':<18}{stats['n']:>4}{fmt(stats['r']):>8}"
                  f"{fmt(stats['bias'], 2):>9}{fmt(stats['loa_low'], 2):>10}"
                  f"{fmt(stats['loa_high'], 2):>10}")
    for arch, note in report["skipped"].items():
        print(f"{arch:<16}skipped: {note}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.clinical",
                                     description=__doc__.split("\n\n")[0])
    add_common_options(parser, json_default="bench/results/clinical.json")
    parser.add_argument("--accuracy", type=Path, default=None, metavar="JSON",
                        help="reuse the JSON of python -m bench.accuracy instead of evaluating")
    parser.add_argument("--figures", type=Path, default=None, metavar="DIR",
                        help="write bland_altman_<model>.png here")
    return parser.parse_args(argv)


def _main(args) -> int:
    if args.accuracy is not None:
        accuracy = read_json(args.accuracy)
        if accuracy is None:
            raise LVSegError(f"{args.accuracy}: not a readable accuracy JSON")
    else:
        from bench import accuracy as acc

        setup_torch(args.threads)
        specs = resolve_models(args.models, args.weights_dir, args.runs)
        accuracy = acc.run(args.data, specs, args.split, args.cases, args.device)
    report = compute(accuracy)
    if args.figures is not None:
        for arch in accuracy["models"]:
            path = bland_altman_figure(accuracy, args.figures / f"bland_altman_{arch}.png", arch)
            if path:
                log(f"figure: {path}")
    return finish(report, args.json, print_table)


def main(argv=None) -> int:
    return run_main(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
