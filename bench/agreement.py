"""Agreement between a method and a reference: Pearson r and Bland-Altman statistics.

Differences are ``predicted - reference`` (a positive bias means the method
over-estimates). The limits of agreement are ``bias ± 1.96 SD`` of the
differences, with the sample standard deviation (``ddof=1``), as in Bland &
Altman (1986). Pairs where either value is missing (NaN/None) are left out;
``n`` says how many pairs were used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Multiplier of the SD for the 95 % limits of agreement.
LOA_Z = 1.96

NAN = float("nan")


def paired(reference: Sequence[float], predicted: Sequence[float]
           ) -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both values are finite, as two float arrays."""
    ref = np.asarray([np.nan if v is None else v for v in reference], dtype=np.float64)
    pred = np.asarray([np.nan if v is None else v for v in predicted], dtype=np.float64)
    if ref.shape != pred.shape or ref.ndim != 1:
        raise ValueError(f"need two 1D sequences of equal length, got {ref.shape} "
                         f"and {pred.shape}")
    keep = np.isfinite(ref) & np.isfinite(pred)
    return ref[keep], pred[keep]


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation coefficient of the finite pairs.

    NaN with fewer than 2 pairs or when either variable is constant.
    """
    a, b = paired(x, y)
    if a.size < 2:
        return NAN
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db)))
    if denom == 0.0:
        return NAN
    return float(np.clip(np.dot(da, db) / denom, -1.0, 1.0))


def bland_altman(reference: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """Bland-Altman statistics of ``predicted`` against ``reference``.

    Returns:
        ``n`` (pairs used), ``bias`` (mean difference), ``sd`` (sample SD of
        the differences; NaN with one pair), ``loa_low`` / ``loa_high``
        (``bias ∓ 1.96 SD``), ``mean_abs`` (mean absolute difference) and
        ``mean_reference``.
    """
    ref, pred = paired(reference, predicted)
    n = int(ref.size)
    if n == 0:
        return {"n": 0, "bias": NAN, "sd": NAN, "loa_low": NAN, "loa_high": NAN,
                "mean_abs": NAN, "mean_reference": NAN}
    diff = pred - ref
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if n > 1 else NAN
    return {"n": n, "bias": bias, "sd": sd,
            "loa_low": bias - LOA_Z * sd, "loa_high": bias + LOA_Z * sd,
            "mean_abs": float(np.abs(diff).mean()), "mean_reference": float(ref.mean())}


def agreement(reference: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """:func:`bland_altman` plus ``r`` (:func:`pearson_r`)."""
    out = bland_altman(reference, predicted)
    out["r"] = pearson_r(reference, predicted)
    return out


#: Clinical indices compared per patient: key in evaluate_dataset's ``ef`` rows -> (label, unit).
INDICES: dict[str, tuple[str, str]] = {
    "LV_EDV_ml": ("LV EDV", "mL"),
    "LV_ESV_ml": ("LV ESV", "mL"),
    "LV_EF_pct": ("LV EF", "%"),
    "Myo_mass_g": ("Myocardial mass", "g"),
    "RV_EDV_ml": ("RV EDV", "mL"),
    "RV_ESV_ml": ("RV ESV", "mL"),
    "RV_EF_pct": ("RV EF", "%"),
}


def index_pairs(ef_rows: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """Manual and predicted values of ``key`` from evaluate_dataset's ``ef`` rows."""
    manual = [row["manual"].get(key) for row in ef_rows]
    predicted = [row["predicted"].get(key) for row in ef_rows]
    return manual, predicted


def clinical_agreement(ef_rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """:func:`agreement` of each of :data:`INDICES` over the patients of ``ef_rows``."""
    return {key: agreement(*index_pairs(ef_rows, key)) for key in INDICES}


def bland_altman_axes(ax, reference: Sequence[float], predicted: Sequence[float], *,
                      title: str = "", unit: str = "", colour: str = "tab:blue") -> dict:
    """Draw a Bland-Altman plot on a matplotlib ``ax``; returns the statistics.

    x: mean of the two methods; y: ``predicted - reference``; lines at the bias
    and the limits of agreement.
    """
    ref, pred = paired(reference, predicted)
    stats = agreement(reference, predicted)
    suffix = f" ({unit})" if unit else ""
    if ref.size:
        ax.scatter((ref + pred) / 2, pred - ref, s=22, color=colour, alpha=0.8,
                   edgecolor="white", linewidth=0.5)
        ax.axhline(stats["bias"], color="black", lw=1.2,
                   label=f"bias {stats['bias']:+.2f}")
        if math.isfinite(stats["sd"]):
            ax.axhline(stats["loa_low"], color="grey", lw=1, ls="--")
            ax.axhline(stats["loa_high"], color="grey", lw=1, ls="--",
                       label=f"95% LoA [{stats['loa_low']:.2f}, {stats['loa_high']:.2f}]")
        ax.axhline(0.0, color="lightgrey", lw=0.8, zorder=0)
        ax.legend(fontsize=7, loc="best", frameon=False)
    else:
        ax.text(0.5, 0.5, "no patients", ha="center", va="center", transform=ax.transAxes)
    r = stats["r"]
    ax.set_title(f"{title}  (n={stats['n']}, r={r:.3f})" if math.isfinite(r)
                 else f"{title}  (n={stats['n']})", fontsize=9)
    ax.set_xlabel(f"mean of manual and predicted{suffix}", fontsize=8)
    ax.set_ylabel(f"predicted - manual{suffix}", fontsize=8)
    ax.tick_params(labelsize=7)
    return stats
