"""An invertible preprocessing plan: normalise, resample in-plane, pad or crop.

A model sees every scan the way it saw its training data: intensities
normalised per volume (robust to raw scanner units and to [0, 1] copies alike),
in-plane voxels resampled to the training spacing, and the slice grid padded
(or cropped) to a size the network accepts. :func:`restore` maps the network's
class probabilities back onto the exact input grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import WeightsError
from .policy import check_grid, check_spacing

if TYPE_CHECKING:
    import torch


def _pair(value: Any, key: str, kind: type) -> tuple | None:
    """``value`` as a pair of positive ``kind`` (finite), or WeightsError."""
    if value is None:
        return None
    try:
        pair = tuple(kind(v) for v in value)
        valid = (len(pair) == 2 and all(np.isfinite(v) and v > 0 for v in pair)
                 and all(kind(v) == v for v in value))
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        raise WeightsError(f"preprocess plan: {key} must be two positive numbers or null, "
                           f"got {value!r}")
    return pair


@dataclass(frozen=True)
class PreprocessPlan:
    """How a model expects its input.

    Attributes:
        spacing_mm: target in-plane voxel size (mm) along x and y; ``None``
            keeps the input spacing.
        divisor: x and y are padded to a multiple of this (network strides).
        size: fixed in-plane size ``(x, y)`` to pad or centre-crop to;
            ``None`` pads only up to the next multiple of ``divisor``.
        z_divisor: z is padded to a multiple of this (1 for 2D models).
        clip_percentiles: intensity percentiles clipped before z-scoring.
        min_depth: slices a 3D network needs to see at least (the depth of its
            training patches); a thinner stack is padded to it by repeating its
            first and last slices, half before and half after.
    """

    spacing_mm: tuple[float, float] | None = (1.5625, 1.5625)
    divisor: int = 32
    size: tuple[int, int] | None = None
    z_divisor: int = 1
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    min_depth: int = 1

    def __post_init__(self) -> None:
        """Refuse a plan no scan can go through (it comes from a config.json)."""
        _pair(self.spacing_mm, "spacing_mm", float)
        _pair(self.size, "size", int)
        for key in ("divisor", "z_divisor", "min_depth"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
                raise WeightsError(f"preprocess plan: {key} must be an integer from 1 to "
                                   f"1024, got {value!r}")
        clip = self.clip_percentiles
        try:
            lo, hi = (float(v) for v in clip)
            valid = 0 <= lo < hi <= 100
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise WeightsError(f"preprocess plan: clip_percentiles must be two numbers "
                               f"0 <= low < high <= 100, got {clip!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored in the weights' config.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "PreprocessPlan":
        """Inverse of :meth:`to_dict`; unknown keys are ignored.

        Raises:
            WeightsError: a value no scan can go through (e.g. ``divisor: 0``).
        """
        if data is not None and not isinstance(data, dict):
            raise WeightsError(f"preprocess plan must be a JSON object, got {data!r}")
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        for key in ("spacing_mm", "size", "clip_percentiles"):
            if isinstance(known.get(key), list):
                known[key] = tuple(known[key])
        return cls(**known)


@dataclass
class Prepared:
    """A volume ready for a network, with what is needed to undo the plan.

    Attributes:
        array: normalised slices, float32 ``(z, 1, X, Y)`` (padded); :attr:`image`
            is the same memory as a torch tensor.
        in_shape: the input grid ``(x, y, z)``.
        resampled: in-plane size ``(x', y')`` after resampling.
        offsets: per axis ``(x, y)``: ``(pad_before, crop_before)`` used to place
            the resampled grid in the network grid.
        z_pad: slices appended at the end along z.
        z_before: slices put before the first one along z (thin stacks only).
    """

    array: np.ndarray
    in_shape: tuple[int, int, int]
    resampled: tuple[int, int]
    offsets: list[tuple[int, int]] = field(default_factory=list)
    z_pad: int = 0
    z_before: int = 0

    @property
    def image(self) -> "torch.Tensor":
        """:attr:`array` as a torch tensor (no copy)."""
        import torch

        return torch.from_numpy(self.array)


def _is_torch(value: Any) -> bool:
    """True for a torch tensor (told without importing torch)."""
    return type(value).__module__.startswith("torch")


def _to_numpy(slices) -> tuple[np.ndarray, bool]:
    """``slices`` as a numpy array, and whether it was a torch tensor (CPU)."""
    if _is_torch(slices):
        return slices.detach().cpu().numpy(), True
    return np.asarray(slices), False


def _like(array: np.ndarray, torch_out: bool):
    """``array``, as a torch tensor when the input was one."""
    if not torch_out:
        return array
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def resize_weights(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """Linear interpolation from ``n_in`` to ``n_out`` samples as a float32 matrix
    ``(n_out, n_in)``: half-pixel centres (``align_corners=False``), a triangle
    filter widened by the shrink factor when ``antialias`` (what
    ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` computes),
    each row normalised over the samples inside the input."""
    scale = n_in / n_out
    support = scale if antialias and scale > 1 else 1.0
    centres = (np.arange(n_out) + 0.5) * scale
    taps = np.arange(n_in) + 0.5
    weights = np.clip(1.0 - np.abs(taps[None, :] - centres[:, None]) / support, 0.0, None)
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def percentile_scale(volume: np.ndarray, clip_percentiles=(0.5, 99.5)
                     ) -> tuple[np.ndarray, float, float]:
    """Clip to percentiles and scale to [0, 1]; also return mean and std of the result.

    Training augments intensities in this [0, 1] space and then z-scores with
    the returned statistics, which is what :func:`normalise_intensity` does.
    Non-finite voxels count as 0.
    """
    volume = np.asarray(volume, dtype=np.float32)
    finite = np.isfinite(volume)
    if not finite.all():
        volume = np.where(finite, volume, 0.0).astype(np.float32)
    lo, hi = np.percentile(volume, clip_percentiles)
    if hi - lo < 1e-8 * max(1.0, abs(float(hi))):
        return np.zeros_like(volume), 0.0, 0.0
    scaled = ((np.clip(volume, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    return scaled, float(scaled.mean()), float(scaled.std())


def normalise_intensity(volume: np.ndarray, clip_percentiles=(0.5, 99.5)) -> np.ndarray:
    """Clip to percentiles and z-score; float32, same shape.

    Invariant to any positive affine change of intensities, so raw scanner
    units and min-max normalised copies give the same result. A constant
    volume maps to zeros.
    """
    scaled, mean, std = percentile_scale(volume, clip_percentiles)
    if std < 1e-8:
        return np.zeros_like(scaled)
    return ((scaled - mean) / std).astype(np.float32)


def resampled_size(shape_xy: tuple[int, int], spacing_xy, target_xy) -> tuple[int, int]:
    """In-plane size after resampling from ``spacing_xy`` to ``target_xy`` (mm)."""
    if target_xy is None:
        return int(shape_xy[0]), int(shape_xy[1])
    return tuple(
        max(1, int(round(n * s / t))) for n, s, t in zip(shape_xy, spacing_xy, target_xy)
    )


def resize_slices(slices, size: tuple[int, int], mode: str = "bilinear"):
    """Resize ``(N, C, X, Y)`` to ``(N, C, *size)``; identity when sizes match.

    A numpy array or a torch tensor (returned as one). ``mode="nearest"`` is for
    label maps (nearest-exact: the input sample under each output centre);
    bilinear uses anti-aliasing when shrinking (:func:`resize_weights`), as a
    separable product of two small matrices.
    """
    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    array, was_torch = _to_numpy(slices)
    (nx, ny), (ox, oy) = array.shape[-2:], size
    if mode == "nearest":
        ix = np.minimum(((np.arange(ox) + 0.5) * nx / ox).astype(np.int64), nx - 1)
        iy = np.minimum(((np.arange(oy) + 0.5) * ny / oy).astype(np.int64), ny - 1)
        return _like(array[..., ix[:, None], iy[None, :]], was_torch)
    shrink = ox < nx or oy < ny
    dtype = array.dtype if array.dtype in (np.float32, np.float64) else np.float32
    lead = array.shape[:-2]
    # Two plain matrix products (one BLAS call each; a broadcast matmul loops slowly):
    # along y on (N*C*X, Y), then along x on (X, N*C*Y').
    out = np.ascontiguousarray(array, dtype=dtype).reshape(-1, ny) @ \
        resize_weights(ny, oy, shrink).T.astype(dtype)
    out = out.reshape(-1, nx, oy).transpose(1, 0, 2).reshape(nx, -1)
    out = (resize_weights(nx, ox, shrink).astype(dtype) @ out).reshape(ox, -1, oy)
    return _like(np.ascontiguousarray(out.transpose(1, 0, 2)).reshape(*lead, ox, oy),
                 was_torch)


def _place(n: int, target: int) -> tuple[int, int]:
    """(pad_before, crop_before) that centre a length-n axis in ``target``."""
    if n <= target:
        return (target - n) // 2, 0
    return 0, (n - target) // 2


def _target(n: int, plan: PreprocessPlan, axis: int) -> int:
    if plan.size is not None:
        return int(plan.size[axis])
    return int(np.ceil(n / plan.divisor) * plan.divisor)


def fit_to_grid(slices, offsets: list[tuple[int, int]], target: tuple[int, int],
                fill: float):
    """Pad/crop ``(N, C, X, Y)`` into ``(N, C, *target)`` using ``offsets`` (a numpy
    array or a torch tensor, returned as one)."""
    array, was_torch = _to_numpy(slices)
    out = np.full((*array.shape[:2], *target), fill, dtype=array.dtype)
    (px, cx), (py, cy) = offsets
    nx = min(array.shape[-2] - cx, target[0] - px)
    ny = min(array.shape[-1] - cy, target[1] - py)
    out[..., px:px + nx, py:py + ny] = array[..., cx:cx + nx, cy:cy + ny]
    return _like(out, was_torch)


#: A voxel axis is taken as the through-plane (slice) axis when its spacing is
#: at least this many times that of both other axes.
SLICE_AXIS_RATIO = 1.5


def slice_axis(spacing: tuple[float, ...]) -> int:
    """The through-plane axis of a short-axis stack with voxel size ``spacing`` (mm).

    Scanners and converters do not all store the slice axis last: a stack
    written as ``(x, z, y)`` has its coarse axis first or second. The axis
    whose spacing is clearly the largest (:data:`SLICE_AXIS_RATIO`) is the
    slice axis; otherwise (near-isotropic data) axis 2 is kept.
    """
    sp = [float(s) for s in spacing[:3]]
    if len(sp) < 3:
        return 2
    ax = int(np.argmax(sp))
    others = [s for i, s in enumerate(sp) if i != ax]
    return ax if all(sp[ax] >= SLICE_AXIS_RATIO * s for s in others) else 2


def thin_stack_index(z: int, min_depth: int, z_divisor: int = 1) -> tuple[np.ndarray, int]:
    """Slice indices that pad a ``z``-slice stack to ``min_depth`` (rounded up to
    ``z_divisor``) by repeating its first and last slices, and how many come
    before the first: ``(index, z_before)``."""
    depth = int(np.ceil(max(min_depth, z) / z_divisor) * z_divisor)
    z_before = (depth - z) // 2
    return np.clip(np.arange(depth) - z_before, 0, z - 1), z_before


def prepare(volume: np.ndarray, spacing: tuple[float, ...], plan: PreprocessPlan) -> Prepared:
    """Apply ``plan`` to one frame.

    Args:
        volume: image ``(x, y, z)``, any intensity units.
        spacing: voxel size ``(sx, sy[, sz])`` in mm.
        plan: the model's preprocessing plan.

    Returns:
        :class:`Prepared` whose ``image`` is ``(z_before + z + z_pad, 1, X, Y)``.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"prepare expects an (x, y, z) volume, got shape {volume.shape}")
    spacing = check_spacing(spacing)
    size = resampled_size(volume.shape[:2], spacing[:2], plan.spacing_mm)
    target = (_target(size[0], plan, 0), _target(size[1], plan, 1))
    for grid in (size, target):
        check_grid(grid, volume.shape[2])
    norm = normalise_intensity(volume, plan.clip_percentiles)
    slices = np.ascontiguousarray(norm.transpose(2, 0, 1))[:, None]
    slices = resize_slices(slices, size)
    offsets = [_place(size[0], target[0]), _place(size[1], target[1])]
    fill = float(norm.min()) if norm.size else 0.0
    slices = fit_to_grid(slices, offsets, target, fill)
    z = volume.shape[2]
    z_before = 0
    if z < plan.min_depth:
        # A stack thinner than the training patches: repeat its end slices, so the
        # network sees anatomy (not background) through its whole depth.
        index, z_before = thin_stack_index(z, plan.min_depth, plan.z_divisor)
        slices, z_pad = slices[index], len(index) - z - z_before
    else:
        z_pad = int(np.ceil(z / plan.z_divisor) * plan.z_divisor) - z
        if z_pad:
            slices = np.concatenate([slices, np.full((z_pad, *slices.shape[1:]), fill,
                                                     dtype=slices.dtype)])
    return Prepared(np.ascontiguousarray(slices, dtype=np.float32),
                    tuple(int(s) for s in volume.shape), size, offsets, z_pad, z_before)


def restore(probs, prepared: Prepared):
    """Map class probabilities from the network grid back to the input grid.

    Args:
        probs: ``(z_before + z + z_pad, C, X, Y)`` probabilities (channel 0
            background), a numpy array or a torch tensor (returned as one).
        prepared: the record returned by :func:`prepare`.

    Returns:
        ``(C, x, y, z)`` float32 probabilities on the input grid; voxels that
        were cropped away are background with probability 1.
    """
    array, was_torch = _to_numpy(probs)
    z = prepared.in_shape[2]
    array = array[prepared.z_before:prepared.z_before + z].astype(np.float32)
    (px, cx), (py, cy) = prepared.offsets
    size = prepared.resampled
    # Undo pad/crop: the inverse placement swaps padding and cropping.
    back = fit_to_grid(array, [(cx, px), (cy, py)], size, 0.0)
    if cx or cy:
        covered = fit_to_grid(np.ones_like(array[:, :1]), [(cx, px), (cy, py)], size, 0.0)
        back[:, :1] += 1.0 - covered
    back = resize_slices(back, prepared.in_shape[:2])
    return _like(np.ascontiguousarray(back.transpose(1, 2, 3, 0)), was_torch)
