"""Quality control of a segmentation without ground truth.

:func:`assess` looks at a scan, its predicted label map and the class
probabilities of the model (optionally more probability maps: test-time flips
or other models) and returns a :class:`QCResult`: a ``status`` (``ok``: no
problem found; ``check``: look at the outlines before using the numbers;
``fail``: the result is not usable), a plain-language ``reason`` and the raw
signal values. Three families of signals:

- image: is this a short-axis cardiac cine at all (a constant image, slices
  that are copies of one picture, an intensity distribution unlike MRI with its
  dark background, inverted contrast, noise, blur);
- anatomy: a heart is found, the myocardium closes around the LV cavity on
  every slice, the RV lies beside the LV, one connected piece per structure, a
  smooth LV area from base to apex, adult volumes (mL), wall thickness (mm)
  and, for a cine, ejection fraction (%);
- agreement: mean Dice between the prediction and the extra probability maps,
  entropy of the probabilities inside the heart, the share of the raw
  prediction dropped by post-processing.

Every limit is calibrated on the 70 training patients of ACDC (for images and
anatomy the expert labels and the bundled U-Net's good predictions, mean Dice
>= 0.8; for the agreement signals the good predictions only): a limit sits
beyond the most extreme training value, see
:data:`RULES` and ``python -m bench.qc --calibrate``. The agreement, entropy
and removed-share limits are each model's own where its weights carry them
(:func:`model_rules`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from .clinical import ejection_fraction, structure_volumes
from .errors import WeightsError
from .labels import LABEL_OF, STRUCTURES
from .metrics import dice
from .scan import Scan

#: Statuses, from best to worst.
STATUSES: tuple[str, ...] = ("ok", "check", "fail")

#: Reason given when nothing is wrong.
OK_REASON = "no problem found"

#: LV cavities smaller than this (pixels) on a slice are not judged for closure.
MIN_LV_PIXELS = 20

#: Volume lower limits apply only to stacks covering at least this much (mm).
MIN_COVERAGE_MM = 50.0

#: :attr:`Issue.badness` of a problem that makes the result unusable by itself.
FATAL = 1000.0

#: Class probabilities are kept for QC up to this many values (classes x voxels,
#: float16: 2 bytes each); a larger series is checked without them.
MAX_PROBABILITY_VALUES = 120_000_000

#: In-plane flips used for the agreement signal (axes of ``(x, y, z)``).
QC_FLIPS: tuple[tuple[int, ...], ...] = ((0, 1),)

_CROSS = ndimage.generate_binary_structure(2, 1)
_CUBE = np.ones((3, 3, 3), bool)


#: How far beyond the most extreme training value the limits sit, as a share
#: of that value's distance to the training median: (check, fail).
MARGINS: tuple[float, float] = (0.25, 1.0)


def calibrated_limits(values: Sequence[float], high: bool, kind: str = "linear",
                      min_span: float = 0.0, margins: tuple[float, float] = MARGINS
                      ) -> tuple[float, float, float]:
    """``(typical, check, fail)`` limits of a signal from its training values.

    ``typical`` is the median; a limit lies beyond the training extreme (the
    maximum when ``high``, else the minimum) by ``margins`` times the distance
    from the median to that extreme (at least ``min_span``). ``kind`` is
    ``linear``, ``log`` (margins on a log scale: for positive quantities such
    as volumes) or ``count`` (check above the training maximum, i.e. at
    ``max + 0.5``; fail at ``max + 1.5``).
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        raise ValueError("no finite training values")
    if kind == "count":
        top = float(v.max() if high else v.min())
        step = 1 if high else -1
        return float(np.median(v)), top + 0.5 * step, top + 1.5 * step
    if kind == "log":
        v = np.log(np.clip(v, 1e-9, None))
        min_span = math.log1p(min_span)
    typical, extreme = float(np.median(v)), float(v.max() if high else v.min())
    span = max(abs(extreme - typical), min_span)
    sign = 1.0 if high else -1.0
    limits = [typical, extreme + sign * margins[0] * span, extreme + sign * margins[1] * span]
    return tuple(float(np.exp(x)) for x in limits) if kind == "log" else tuple(limits)


@dataclass(frozen=True)
class Rule:
    """A limit on one signal.

    A value beyond ``check`` (above it when ``high``, below it otherwise) asks
    for a check, beyond ``fail`` (None: never) it fails. ``typical`` is the
    median training value; :meth:`badness` is 0 there and 1 at the check
    limit. ``message`` is formatted with ``value``. ``kind`` and ``min_span``
    say how the limits were calibrated (:func:`calibrated_limits`).
    """

    signal: str
    high: bool
    typical: float
    check: float
    fail: float | None
    message: str
    kind: str = "linear"
    min_span: float = 0.0

    def badness(self, value: float) -> float:
        """How far ``value`` is towards the check limit (0 typical, 1 at the limit)."""
        if self.kind == "log":
            value, typical, check = (math.log(max(x, 1e-9)) for x in
                                     (value, self.typical, self.check))
        else:
            typical, check = self.typical, self.check
        span = (check - typical) if self.high else (typical - check)
        delta = (value - typical) if self.high else (typical - value)
        return min(FATAL, max(0.0, delta / span)) if span > 0 else (FATAL if delta > 0 else 0.0)

    def severity(self, value: float) -> str:
        """``ok``, ``check`` or ``fail`` for ``value``."""
        def beyond(limit: float) -> bool:
            return value > limit if self.high else value < limit

        if self.fail is not None and beyond(self.fail):
            return "fail"
        return "check" if beyond(self.check) else "ok"

    @property
    def key(self) -> str:
        """``"<signal>:high"`` or ``"<signal>:low"``."""
        return f"{self.signal}:{'high' if self.high else 'low'}"


#: The limits, from ``python -m bench.qc --calibrate`` on the 70 ACDC training
#: patients (docs/qc/calibration_unet.json; tests/test_qc.py checks that
#: they match it): (signal, high, typical, check, fail, message, kind, min_span).
RULES: tuple[Rule, ...] = (
    # image
    Rule("dark_fraction", False, 0.3924, 0.1086, -0.06173,
         "the image has little dark background ({value:.0%} of voxels), unlike a cardiac MRI"),
    Rule("median_level", True, 0.1465, 0.2494, 0.3111,
         "the background is not dark (median at {value:.0%} of the intensity range): "
         "inverted contrast, heavy noise or not an MRI"),
    Rule("noise", True, 0.009832, 0.02604, None,
         "the image is much noisier than the scans the model was trained on", "log"),
    Rule("noise", False, 0.009832, 0.001309, None,
         "the image looks blurred or enlarged from a lower resolution", "log"),
    Rule("slice_correlation", True, 0.6563, 0.9017, None,
         "neighbouring slices are nearly identical, unlike a short-axis stack"),
    # anatomy
    Rule("lv_myo_contrast", False, 0.3414, 0.0276, -0.1607,
         "the LV cavity is not brighter than the myocardium ({value:+.2f}): inverted "
         "contrast or not a bright-blood cine"),
    Rule("open_slices", True, 0, 2.5, None,
         "the myocardium does not close around the LV on {value:.0f} slice(s)", "count"),
    Rule("LV_components", True, 1, 1.5, None,
         "the LV cavity is in {value:.0f} separate pieces", "count"),
    Rule("Myo_components", True, 1, 2.5, None,
         "the myocardium is in {value:.0f} separate pieces", "count"),
    Rule("RV_components", True, 1, 2.5, None,
         "the RV is in {value:.0f} separate pieces", "count"),
    Rule("lv_gaps", True, 0, 0.5, None,
         "the LV is missing on {value:.0f} slice(s) between others", "count"),
    Rule("lv_area_jump", True, 0.2801, 0.9801, None,
         "the LV area jumps from one slice to the next ({value:.0%} of its largest area)"),
    Rule("rv_lv_distance_mm", True, 41.83, 61.94, 78.39,
         "the RV is far from the LV ({value:.0f} mm between their centres)", "log"),
    Rule("rv_lv_distance_mm", False, 41.83, 22.82, 15.87,
         "the RV lies on top of the LV ({value:.0f} mm between their centres)", "log"),
    Rule("rv_detached_slices", True, 0, 2.5, None,
         "the RV does not touch the myocardium on {value:.0f} slice(s)", "count"),
    Rule("wall_thickness_mm", True, 9.326, 28.18, 54.72,
         "the myocardium is implausibly thick ({value:.1f} mm)", "log"),
    Rule("wall_thickness_mm", False, 9.326, 4.505, 2.912,
         "the myocardium is implausibly thin ({value:.1f} mm)", "log"),
    Rule("LV_ml", True, 120.4, 497.1, 1164,
         "the LV volume is implausibly large ({value:.0f} mL)", "log"),
    Rule("LV_ml_covered", False, 120.4, 14.65, 4.138,
         "the LV volume is implausibly small ({value:.1f} mL)", "log"),
    Rule("Myo_ml", True, 126.9, 369.3, 701.2,
         "the myocardium volume is implausibly large ({value:.0f} mL)", "log"),
    Rule("Myo_ml_covered", False, 126.9, 25.41, 9.683,
         "the myocardium volume is implausibly small ({value:.0f} mL)", "log"),
    Rule("RV_ml", True, 109.7, 377.9, 793.7,
         "the RV volume is implausibly large ({value:.0f} mL)", "log"),
    Rule("RV_ml_covered", False, 109.7, 7.606, 1.534,
         "the RV volume is implausibly small ({value:.1f} mL)", "log"),
    Rule("LV_EF_pct", False, 50.25, 0.767, -28.92,
         "the LV ejection fraction is implausibly low ({value:.0f} %)"),
    Rule("LV_EF_pct", True, 50.25, 89.77, 113.5,
         "the LV ejection fraction is implausibly high ({value:.0f} %)"),
    # agreement (good training predictions of the bundled U-Net; other models carry theirs)
    Rule("agreement_dice", False, 0.9489, 0.8261, 0.7524,
         "the outlines change when the image is flipped (agreement Dice {value:.2f})",
         min_span=0.02),
    Rule("RV_agreement", False, 0.9487, 0.5741, 0.3493,
         "the RV outline changes when the image is flipped (RV agreement Dice {value:.2f})",
         min_span=0.02),
    Rule("Myo_agreement", False, 0.9358, 0.8282, 0.7637,
         "the myocardium outline changes when the image is flipped "
         "(Myo agreement Dice {value:.2f})", min_span=0.02),
    Rule("LV_agreement", False, 0.9757, 0.6903, 0.5191,
         "the LV outline changes when the image is flipped (LV agreement Dice {value:.2f})",
         min_span=0.02),
    Rule("entropy", True, 0.09535, 0.1501, 0.183, "the model is unsure about the outlines",
         min_span=0.02),
    Rule("removed_share", True, 0.003642, 0.1497, 0.2373,
         "{value:.0%} of the raw prediction lay outside the heart and was removed",
         min_span=0.02),
)

#: Signals of the model's certainty, calibrated on its good (mean Dice >= 0.8)
#: training predictions alone; the others also on the expert labels.
PREDICTION_SIGNALS: tuple[str, ...] = ("agreement_dice", "RV_agreement", "Myo_agreement",
                                        "LV_agreement", "entropy", "removed_share")

#: Signals of the flipped passes (NaN when quality control runs without them).
AGREEMENT_SIGNALS: tuple[str, ...] = PREDICTION_SIGNALS[:4]


def model_rules(limits: Mapping[str, Any] | None, where: str = "config.json") -> tuple[Rule, ...]:
    """:data:`RULES` with one model's own limits for the :data:`PREDICTION_SIGNALS`.

    How sure a network is and how much its outlines move under a flip differ
    from one network to the next, so each model's weights folder may carry the
    limits calibrated on its own training predictions (``qc_limits`` in
    ``config.json``, written by ``python -m bench.qc --calibrate --store``):
    ``{"entropy:high": {"typical": t, "check": c, "fail": f}, ...}`` keyed by
    :attr:`Rule.key`. Image and anatomy limits come from the expert labels and
    stay shared. Without limits (None or empty) the rules are :data:`RULES`,
    calibrated on the bundled U-Net.

    Raises:
        WeightsError: limits that are not numbers, or not ordered typical ->
            check -> fail in the rule's direction.
    """
    if not limits:
        return RULES
    if not isinstance(limits, Mapping):
        raise WeightsError(f"{where}: qc_limits must be an object")
    rules = []
    for rule in RULES:
        given = limits.get(rule.key) if rule.signal in PREDICTION_SIGNALS else None
        if given is not None:
            rule = replace(rule, **_checked_limits(given, rule, where))
        rules.append(rule)
    return tuple(rules)


def _checked_limits(given: Any, rule: Rule, where: str) -> dict[str, float | None]:
    """``typical``, ``check`` and ``fail`` of one ``qc_limits`` entry, checked."""
    bad = WeightsError(f"{where}: qc_limits {rule.key} must hold typical, check and fail "
                       f"numbers ordered {'upwards' if rule.high else 'downwards'}")
    if not isinstance(given, Mapping):
        raise bad
    values = [given.get(k) for k in ("typical", "check", "fail")]
    if values[2] is None and rule.fail is None:
        values = values[:2]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in values):
        raise bad
    ordered = values if rule.high else [-v for v in values]
    if any(a > b for a, b in zip(ordered, ordered[1:])):
        raise bad
    return {"typical": float(values[0]), "check": float(values[1]),
            "fail": float(values[2]) if len(values) == 3 else None}


@dataclass(frozen=True)
class Issue:
    """One problem found: its signal, severity (``check``/``fail``), a sentence
    and how far the signal is past its limit (:meth:`Rule.badness`)."""

    signal: str
    severity: str
    message: str
    badness: float = 1.0


@dataclass
class QCResult:
    """What :func:`assess` found.

    Attributes:
        status: ``ok``, ``check`` or ``fail``.
        reason: plain-language explanation (``"no problem found"`` when ok).
        issues: every problem, worst first.
        signals: the raw signal values (floats; NaN when not applicable), per
            frame under ``frames`` for a cine scan.
        score: the largest :meth:`Rule.badness` (0 typical, >= 1 flagged):
            a continuous risk for ranking results.
    """

    status: str
    reason: str
    issues: list[Issue] = field(default_factory=list)
    signals: dict = field(default_factory=dict)
    score: float = 0.0

    @property
    def flagged(self) -> bool:
        """True unless the status is ``ok``."""
        return self.status != "ok"

    @property
    def message(self) -> str:
        """One sentence for a banner: "Check this result: <reason>." and the like."""
        lead = {"ok": "Quality control found no problem", "check": "Check this result",
                "fail": "Do not use this result"}[self.status]
        return f"{lead}." if self.status == "ok" else f"{lead}: {self.reason}."

    def to_dict(self) -> dict:
        """JSON-ready form: status, reason, score, issues and signals."""
        return {"status": self.status, "reason": self.reason, "score": self.score,
                "issues": [issue.__dict__ for issue in self.issues],
                "signals": self.signals}


# ---------------------------------------------------------------- image signals


def robust_scale(volume: np.ndarray) -> tuple[np.ndarray, float]:
    """``volume`` clipped to its 0.5-99.5 percentiles and scaled to [0, 1]
    (non-finite voxels as 0), and the width of that percentile range
    (intensity units; 0 for a (nearly) constant image)."""
    volume = np.where(np.isfinite(volume), volume, 0.0).astype(np.float32)
    lo, hi = np.percentile(volume, (0.5, 99.5))
    width = float(hi - lo)
    if width <= 1e-6 * max(1.0, abs(float(hi))):
        return np.zeros_like(volume), 0.0
    return np.clip((volume - lo) / width, 0.0, 1.0), width


def noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of the noise of a 2D image (its units), by
    Immerkaer's method (J. Immerkaer, CVIU 1996): the mean absolute
    response to a Laplacian-difference kernel that cancels smooth content."""
    if min(image.shape) < 3:
        return float("nan")
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = ndimage.convolve(image.astype(np.float32), kernel, mode="reflect")[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2) * np.abs(response).mean() / 6.0)


def image_signals(volume: np.ndarray) -> dict[str, float]:
    """Signals of one frame ``(x, y, z)`` that need no segmentation.

    Returns:
        ``intensity_range`` (0.5-99.5 percentile width, input units),
        ``dark_fraction`` (share of voxels in the lowest 10 % of that range),
        ``median_level`` (median voxel, 0..1 of the range), ``noise`` (median
        slice noise SD, 0..1 of the range), ``identical_slices`` (share of
        neighbouring slice pairs that are equal), ``slice_correlation``
        (median Pearson correlation of neighbouring slices; NaN for one slice).
    """
    scaled, width = robust_scale(np.asarray(volume))
    out = {"intensity_range": width}
    if width == 0.0:
        return out | {k: float("nan") for k in ("dark_fraction", "median_level", "noise",
                                                 "identical_slices", "slice_correlation")}
    out["dark_fraction"] = float((scaled < 0.1).mean())
    out["median_level"] = float(np.median(scaled))
    out["noise"] = float(np.nanmedian([noise_sigma(scaled[..., k])
                                       for k in range(scaled.shape[2])]))
    pairs = [(scaled[..., k], scaled[..., k + 1]) for k in range(scaled.shape[2] - 1)]
    if pairs:
        out["identical_slices"] = float(np.mean([np.abs(a - b).max() < 1e-4 for a, b in pairs]))
        out["slice_correlation"] = float(np.median([_correlation(a, b) for a, b in pairs]))
    else:
        out["identical_slices"] = out["slice_correlation"] = float("nan")
    return out


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else 1.0


# ---------------------------------------------------------------- anatomy signals


def _touches(region: np.ndarray, other: np.ndarray, pixels: int = 2) -> bool:
    return bool((ndimage.binary_dilation(region, _CROSS, iterations=pixels) & other).any())


def open_share(lv: np.ndarray, myo: np.ndarray) -> float:
    """Share of the pixels just outside a 2D LV cavity that are not myocardium
    (0: a closed ring; NaN when the cavity has fewer than :data:`MIN_LV_PIXELS`)."""
    if lv.sum() < MIN_LV_PIXELS:
        return float("nan")
    border = ndimage.binary_dilation(lv, _CROSS) & ~lv
    return float((border & ~myo).sum() / max(1, border.sum()))


def wall_thickness(myo: np.ndarray, spacing_xy: Sequence[float]) -> float:
    """Mean thickness (mm) of a 2D myocardium: twice the distance to its
    edge along its medial axis (skeleton); NaN when empty."""
    from skimage.morphology import skeletonize

    if not myo.any():
        return float("nan")
    distance = ndimage.distance_transform_edt(np.pad(myo, 1), sampling=spacing_xy)[1:-1, 1:-1]
    ridge = skeletonize(myo)
    return float(2.0 * distance[ridge].mean()) if ridge.any() else float("nan")


def components(binary: np.ndarray) -> int:
    """Number of 3D connected pieces (26-connectivity) of a binary mask."""
    return int(ndimage.label(binary, structure=_CUBE)[1])


#: Share of the LV border that may be non-myocardium before a slice counts as open.
OPEN_SLICE_SHARE = 0.25


def anatomy_signals(mask: np.ndarray, scaled: np.ndarray | None,
                    spacing: Sequence[float]) -> dict[str, float]:
    """Signals of one label map ``(x, y, z)`` (ACDC labels) with voxel size
    ``spacing`` (mm); ``scaled`` is the frame from :func:`robust_scale` (or None).

    Returns (NaN when not applicable): ``RV_ml``, ``Myo_ml``, ``LV_ml``
    (volumes in mL) and the same as ``*_covered`` when the stack covers at
    least :data:`MIN_COVERAGE_MM` and the structure is present;
    ``{RV,Myo,LV}_components`` (3D pieces);
    ``lv_myo_contrast`` (mean scaled intensity of the LV cavity minus the
    myocardium's); ``open_slices`` (slices whose LV border is more than
    :data:`OPEN_SLICE_SHARE` non-myocardium) and ``max_open_share``;
    ``lv_gaps`` (slices without LV between LV slices); ``lv_area_jump``
    (largest change of LV area between neighbouring slices, share of the
    largest area); ``rv_lv_distance_mm`` (median in-plane distance of the RV
    and LV centres); ``rv_detached_slices`` (slices with RV and LV where the
    RV does not touch the myocardium); ``wall_thickness_mm`` (median over
    slices).
    """
    mask = np.asarray(mask)
    sx, sy, sz = (float(s) for s in spacing[:3])
    lv, myo, rv = (mask == LABEL_OF["LV"]), (mask == LABEL_OF["Myo"]), (mask == LABEL_OF["RV"])
    out: dict[str, float] = {}
    volumes = structure_volumes(mask, (sx, sy, sz))
    covered = mask.shape[2] * sz >= MIN_COVERAGE_MM
    for s in STRUCTURES:
        out[f"{s}_ml"] = volumes[s]
        # a missing structure is reported as such (frame_issues), not as a small volume
        out[f"{s}_ml_covered"] = volumes[s] if covered and volumes[s] > 0 else float("nan")
    for s, region in (("RV", rv), ("Myo", myo), ("LV", lv)):
        out[f"{s}_components"] = float(components(region))
    nan = float("nan")
    out["lv_myo_contrast"] = (float(scaled[lv].mean() - scaled[myo].mean())
                              if scaled is not None and lv.any() and myo.any() else nan)

    shares, areas, distances, thickness = [], [], [], []
    detached = 0
    for k in range(mask.shape[2]):
        lv_k, myo_k, rv_k = lv[..., k], myo[..., k], rv[..., k]
        areas.append(float(lv_k.sum()) * sx * sy)
        if lv_k.any():
            shares.append(open_share(lv_k, myo_k))
        if myo_k.any():
            thickness.append(wall_thickness(myo_k, (sx, sy)))
        if rv_k.any() and lv_k.any():
            c_rv = np.array(ndimage.center_of_mass(rv_k)) * (sx, sy)
            c_lv = np.array(ndimage.center_of_mass(lv_k)) * (sx, sy)
            distances.append(float(np.hypot(*(c_rv - c_lv))))
            detached += not _touches(rv_k, myo_k)
    shares = [s for s in shares if not math.isnan(s)]
    out["open_slices"] = float(sum(s > OPEN_SLICE_SHARE for s in shares)) if shares else nan
    out["max_open_share"] = float(max(shares)) if shares else nan
    present = np.flatnonzero(np.array(areas) > 0)
    if present.size:
        span = np.array(areas[present[0]:present[-1] + 1])
        out["lv_gaps"] = float((span == 0).sum())
        out["lv_area_jump"] = (float(np.abs(np.diff(span)).max() / span.max())
                               if span.size > 1 else nan)
    else:
        out["lv_gaps"] = out["lv_area_jump"] = nan
    out["rv_lv_distance_mm"] = float(np.median(distances)) if distances else nan
    out["rv_detached_slices"] = float(detached) if distances else nan
    thickness = [t for t in thickness if not math.isnan(t)]
    out["wall_thickness_mm"] = float(np.median(thickness)) if thickness else nan
    return out


# ---------------------------------------------------------------- agreement signals


def _flip_dice(mask: np.ndarray, others: Sequence[np.ndarray]) -> list[dict[str, float]]:
    """Per other map, the Dice of each structure present in it or in ``mask``."""
    return [{s: dice(mask, other, s) for s in STRUCTURES
             if (mask == LABEL_OF[s]).any() or (other == LABEL_OF[s]).any()}
            for other in others]


def agreement(mask: np.ndarray, others: Sequence[np.ndarray],
              scores: list[dict[str, float]] | None = None) -> float:
    """Mean Dice (over structures present in either map, then over ``others``)
    between ``mask`` and each label map of ``others``; NaN without others.
    ``scores``: their :func:`_flip_dice`, when already computed."""
    scores = _flip_dice(mask, others) if scores is None else scores
    means = [float(np.mean(list(per.values()))) if per else 1.0 for per in scores]
    return float(np.mean(means)) if means else float("nan")


def structure_agreement(mask: np.ndarray, others: Sequence[np.ndarray],
                        scores: list[dict[str, float]] | None = None) -> dict[str, float]:
    """``{"RV_agreement": ..., "Myo_agreement": ..., "LV_agreement": ...}``: Dice of
    each structure between ``mask`` and each of ``others``, averaged over ``others``
    (NaN without others, or where the structure is in none of the maps).

    One structure can change under a flip while the others hold (a missed RV at
    end-systole), which the mean of :func:`agreement` dilutes.
    """
    scores = _flip_dice(mask, others) if scores is None else scores
    out = {}
    for s in STRUCTURES:
        values = [per[s] for per in scores if s in per]
        out[f"{s}_agreement"] = float(np.mean(values)) if values else float("nan")
    return out


def probability_signals(mask: np.ndarray, probabilities: np.ndarray | None,
                        extra: Sequence[np.ndarray] = ()) -> dict[str, float]:
    """Signals of the class probabilities ``(C, x, y, z)`` behind ``mask``.

    Returns: ``entropy`` (mean entropy of the probabilities over the voxels
    labelled heart by the mask or by their argmax, 0..1 of ``log C``),
    ``removed_share`` (heart voxels of the argmax that the mask dropped, share
    of the mask's heart), ``agreement_dice`` (:func:`agreement` of the mask
    with the argmax of each ``extra`` map) and the same per structure
    (:func:`structure_agreement`); NaN when not applicable.
    """
    nan = float("nan")
    others = [np.asarray(e).argmax(0) for e in extra]
    scores = _flip_dice(mask, others)
    out = {"entropy": nan, "removed_share": nan,
           "agreement_dice": agreement(mask, others, scores),
           **structure_agreement(mask, others, scores)}
    if probabilities is None:
        return out
    probs = np.asarray(probabilities)
    raw = probs.argmax(0)
    heart = (mask > 0) | (raw > 0)
    if heart.any():
        p = np.clip(probs[:, heart].astype(np.float32), 1e-6, 1.0)
        out["entropy"] = float((-(p * np.log(p)).sum(0)).mean() / math.log(probs.shape[0]))
    if (mask > 0).any():
        out["removed_share"] = float(((raw > 0) & (mask == 0)).sum() / (mask > 0).sum())
    return out


def flipped_probabilities(segmenter, volume: np.ndarray, spacing: Sequence[float],
                          flips: Sequence[tuple[int, ...]] = QC_FLIPS) -> list[np.ndarray]:
    """Class probabilities ``(C, x, y, z)`` of ``segmenter`` on flipped copies
    of one frame ``(x, y, z)``, flipped back onto the frame (one network pass each)."""
    maps = []
    for axes in flips:
        probs = segmenter.probability_array(np.ascontiguousarray(np.flip(volume, axes)),
                                            spacing)
        maps.append(np.flip(probs, tuple(a + 1 for a in axes)))
    return maps


# ---------------------------------------------------------------- decision


def frame_signals(volume: np.ndarray, mask: np.ndarray, spacing: Sequence[float],
                  probabilities: np.ndarray | None = None,
                  extra: Sequence[np.ndarray] = ()) -> dict[str, float]:
    """Every signal of one frame: :func:`image_signals`, :func:`anatomy_signals`
    and :func:`probability_signals`."""
    signals = image_signals(volume)
    scaled = robust_scale(np.asarray(volume))[0] if signals["intensity_range"] > 0 else None
    signals.update(anatomy_signals(mask, scaled, spacing))
    signals.update(probability_signals(mask, probabilities, extra))
    return signals


def frame_issues(signals: dict[str, float], rules: Sequence[Rule] = RULES) -> list[Issue]:
    """The problems in one frame's signals under ``rules``, worst first."""
    issues: list[Issue] = []
    if signals.get("intensity_range", 1.0) == 0.0:
        return [Issue("intensity_range", "fail",
                      "the image is constant (no contrast): there is nothing to segment",
                      FATAL)]
    if signals.get("identical_slices", 0.0) > 0.5:
        issues.append(Issue("identical_slices", "fail",
                            "the slices are copies of one picture, not a short-axis stack",
                            FATAL))
    if not signals.get("LV_ml", 0.0) > 0 or not signals.get("Myo_ml", 0.0) > 0:
        missing = [s for s in ("LV", "Myo") if not signals.get(f"{s}_ml", 0.0) > 0]
        what = " and ".join({"LV": "LV cavity", "Myo": "myocardium"}[s] for s in missing)
        issues.append(Issue("heart_found", "fail", f"no heart found: no {what} was segmented",
                            FATAL))
    elif not signals.get("RV_ml", 0.0) > 0:
        issues.append(Issue("heart_found", "check", "no RV was segmented", 1.0))
    issues += rule_issues(signals, rules)
    return sorted(issues, key=lambda i: (i.severity != "fail", -i.badness))


def _applicable(signals: dict, rule: Rule) -> float | None:
    value = signals.get(rule.signal)
    return float(value) if value is not None and math.isfinite(value) else None


def rule_issues(signals: dict, rules: Sequence[Rule] = RULES) -> list[Issue]:
    """The ``rules`` that ``signals`` break (signals absent or NaN are skipped)."""
    issues = []
    for rule in rules:
        value = _applicable(signals, rule)
        if value is not None and rule.severity(value) != "ok":
            issues.append(Issue(rule.signal, rule.severity(value),
                                rule.message.format(value=value), rule.badness(value)))
    return issues


def frame_score(signals: dict, rules: Sequence[Rule] = RULES) -> float:
    """Largest :meth:`Rule.badness` over the signals and the fixed checks of
    :func:`frame_issues` (:data:`FATAL` for a fatal problem); 0 is typical."""
    scores = [i.badness for i in frame_issues(signals, rules)]
    scores += [rule.badness(v) for rule in rules
               if (v := _applicable(signals, rule)) is not None]
    return float(max(scores, default=0.0))


def decide(issues: Sequence[Issue], signals: dict, score: float,
           max_reasons: int = 3) -> QCResult:
    """The :class:`QCResult` of ``issues``: the worst severity, and the first
    ``max_reasons`` distinct messages joined as the reason."""
    issues = sorted(issues, key=lambda i: (i.severity != "fail", -i.badness))
    status = "fail" if any(i.severity == "fail" for i in issues) else \
        "check" if issues else "ok"
    messages: list[str] = []
    for issue in issues:
        if issue.message not in messages:
            messages.append(issue.message)
    reason = "; ".join(messages[:max_reasons]) if messages else OK_REASON
    return QCResult(status, reason, list(issues), signals, score)


def assess(scan: Scan, mask: np.ndarray, probabilities: np.ndarray | None = None,
           extra_probabilities: Sequence[np.ndarray] = (), ed: int | None = None,
           es: int | None = None, rules: Sequence[Rule] = RULES) -> QCResult:
    """Quality control of one segmentation.

    Args:
        scan: the input (3D, or 4D cine), spacing in mm.
        mask: predicted labels ``(x, y, z)`` (``(x, y, z, t)`` for a cine).
        probabilities: class probabilities ``(C, x, y, z[, t])`` of the model
            behind ``mask`` (None: the probability signals are skipped).
        extra_probabilities: more maps of the same shape (test-time flips,
            other models) to measure agreement with.
        ed, es: end-diastolic and end-systolic frames of a cine (default: the
            largest and smallest LV volume); used for the ejection fraction.
        rules: the limits (:func:`model_rules` of the model behind ``mask``).

    Returns:
        The :class:`QCResult`. For a cine scan every frame is checked (a
        message names its frame), ``signals["frames"]`` lists each frame's
        signals and ``signals["LV_EF_pct"]`` is the ejection fraction.
    """
    mask = np.asarray(mask)
    if mask.shape != scan.array.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the scan {scan.array.shape}")
    if not scan.is_cine:
        return _assess_frames(scan, mask, lambda t: probabilities,
                              lambda t: list(extra_probabilities), ed, es, rules)
    return _assess_frames(scan, mask,
                          lambda t: None if probabilities is None else probabilities[..., t],
                          lambda t: [e[..., t] for e in extra_probabilities], ed, es, rules)


def check_segmentation(scan: Scan, segmentation, segmenter=None,
                       flips: Sequence[tuple[int, ...]] = QC_FLIPS, ed: int | None = None,
                       es: int | None = None, rules: Sequence[Rule] | None = None) -> QCResult:
    """:func:`assess` a :class:`~lvseg_core.inference.Segmentation` of ``scan``.

    With a ``segmenter`` (the one that made it), each frame is segmented again
    flipped (``flips``, one network pass each, frame by frame so that memory
    stays that of one frame) for the agreement signal. ``rules``: default the
    segmenter's own (``qc_rules``), else :data:`RULES`.
    """
    if rules is None:
        rules = getattr(segmenter, "qc_rules", RULES)
    mask = np.asarray(segmentation.mask)
    probabilities = segmentation.probabilities
    frames = scan.frames()

    def extra(t: int) -> list[np.ndarray]:
        if segmenter is None or not flips:
            return []
        return flipped_probabilities(segmenter, frames[t].array, scan.spacing, flips)

    def probs(t: int) -> np.ndarray | None:
        if probabilities is None:
            return None
        return probabilities[..., t] if scan.is_cine else probabilities

    return _assess_frames(scan, mask, probs, extra, ed, es, rules)


def _assess_frames(scan: Scan, mask: np.ndarray, probabilities_at, extra_at,
                   ed: int | None, es: int | None, rules: Sequence[Rule]) -> QCResult:
    """:func:`assess` with per-frame getters of the probability maps."""
    if not scan.is_cine:
        signals = frame_signals(scan.array, mask, scan.spacing, probabilities_at(0),
                                extra_at(0))
        return decide(frame_issues(signals, rules), signals, frame_score(signals, rules))
    frames = []
    for t in range(scan.n_frames):
        signals = frame_signals(scan.array[..., t], mask[..., t], scan.spacing,
                                probabilities_at(t), extra_at(t))
        frames.append((f"frame {t}", decide(frame_issues(signals, rules), signals,
                                            frame_score(signals, rules))))
    lv = [r.signals["LV_ml"] for _, r in frames]
    ed = int(np.argmax(lv)) if ed is None else ed
    es = int(np.argmin(lv)) if es is None else es
    ef = ejection_fraction(lv[ed], lv[es]) if ed != es else float("nan")
    result = combine(frames, {"LV_EF_pct": ef, "ED_frame": ed, "ES_frame": es}, rules)
    result.signals["frames"] = [r.signals for _, r in frames]
    return result


def _names(names: list[str]) -> str:
    """``["frame 0", "frame 1"]`` -> ``"frames 0, 1"``; ``["ED"]`` -> ``"ED"``."""
    if len(names) == 1:
        return names[0]
    heads = {n.rsplit(" ", 1)[0] for n in names}
    if len(heads) == 1 and all(" " in n for n in names):
        tails = [n.rsplit(" ", 1)[1] for n in names]
        shown = ", ".join(tails) if len(tails) <= 4 else f"{tails[0]}-{tails[-1]} ({len(tails)})"
        return f"{heads.pop()}s {shown}"
    return ", ".join(names)


def combine(parts: Sequence[tuple[str, QCResult]], signals: dict | None = None,
            rules: Sequence[Rule] = RULES) -> QCResult:
    """One :class:`QCResult` for several named results (frames of a cine, the ED
    and ES frames of a patient) and the :data:`RULES` on ``signals`` (e.g.
    ``{"LV_EF_pct": ...}``). The same problem in several parts is one message
    naming them all ("frames 0, 3: ...")."""
    signals = dict(signals or {})
    grouped: dict[tuple[str, str, str], list] = {}
    for name, result in parts:
        for issue in result.issues:
            entry = grouped.setdefault((issue.signal, issue.severity, issue.message), [[], 0.0])
            entry[0].append(name)
            entry[1] = max(entry[1], issue.badness)
    issues = [Issue(signal, severity, f"{_names(names)}: {message}", badness)
              for (signal, severity, message), (names, badness) in grouped.items()]
    issues += rule_issues(signals, rules)
    scores = [r.score for _, r in parts]
    scores += [rule.badness(v) for rule in rules if (v := _applicable(signals, rule)) is not None]
    return decide(issues, signals, float(max(scores, default=0.0)))
