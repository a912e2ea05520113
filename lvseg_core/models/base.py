"""The model class every architecture shares, saved in the Hugging Face layout.

``LVSegModel`` wraps one network of the registry and carries what is needed to
use it on a new scan: the label map, the preprocessing plan and the training
metrics. ``save_pretrained`` writes ``config.json`` + ``model.safetensors``;
``from_pretrained`` reads them back from a folder or a Hub repo id
(``huggingface_hub.PyTorchModelHubMixin``).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from safetensors import SafetensorError
from safetensors.torch import load_model as load_safetensors
from safetensors.torch import save_file
from torch import nn

from ..errors import WeightsError, first_line
from ..labels import LABELS
from ..registry import spatial_dims
from .card import model_card
from .config import (builder, builder_signature, check_config,  # noqa: F401
                     default_plan, read_config)


class LVSegModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="lvseg",
    tags=["medical-imaging", "cardiac-mri", "segmentation", "acdc"],
    license="cc-by-nc-sa-4.0",
):
    """One segmentation network with its label map and preprocessing plan.

    Args:
        architecture: a key of :data:`lvseg_core.registry.ARCHITECTURES`.
        arch_args: keyword arguments of that architecture's builder (widths).
        labels: class names in label order (background first).
        preprocess: a :class:`~lvseg_core.preprocess.PreprocessPlan` as a dict.
        metrics: validation metrics recorded when the weights were trained.
        training: facts about training (data, epochs, seconds, ...).
        qc_limits: this model's quality-control limits for the prediction
            signals (:func:`lvseg_core.qc.model_rules`; None: the default).

    ``forward`` maps ``(B, 1, H, W)`` (2D) or ``(B, 1, D, H, W)`` (V-Net) to
    logits with ``len(labels)`` channels.
    """

    def __init__(
        self,
        architecture: str = "unet",
        arch_args: dict | None = None,
        labels: list[str] | None = None,
        preprocess: dict | None = None,
        metrics: dict | None = None,
        training: dict | None = None,
        qc_limits: dict | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims(architecture)
        self.architecture = architecture
        self.labels = list(labels or LABELS.values())
        self.arch_args = dict(arch_args or {})
        self.preprocess = dict(preprocess or default_plan(architecture, self.arch_args))
        self.metrics = dict(metrics or {})
        self.training_info = dict(training or {})
        self.qc_limits = dict(qc_limits) if qc_limits else None
        build = builder(architecture)
        self.net = build(in_channels=1, out_channels=len(self.labels), **self.arch_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def decoder_stages(self) -> list[nn.Module]:
        """The decoder stages below full resolution, coarsest first: their outputs
        ``(B, channels, ...)`` are the features deep supervision scores."""
        return import_module(builder(self.architecture).__module__).decoder_stages(self.net)

    @property
    def memory_format(self) -> torch.memory_format:
        """Channels-last layout for this model's rank: ~1.3-1.6x faster convolutions
        on CPUs (oneDNN) and the layout tensor cores want; values are unchanged."""
        return torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable config that rebuilds this model."""
        return {
            "architecture": self.architecture,
            "arch_args": self.arch_args,
            "labels": self.labels,
            "preprocess": self.preprocess,
            "metrics": self.metrics,
            "training": self.training_info,
        } | ({"qc_limits": self.qc_limits} if self.qc_limits else {})

    def save_pretrained(self, save_directory, *, half: bool = False, **kwargs):  # noqa: D102
        """Write ``config.json``, ``model.safetensors`` and this model's card ``README.md``
        (:func:`~lvseg_core.models.card.model_card`; the model writes its own card, as
        segmentation-models-pytorch does, so a push needs no trainer).

        ``half``: store the kernels in float16 (about half the file; see
        :func:`stored_state`); loading casts them back to float32.
        """
        kwargs.setdefault("config", self.config())
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "README.md").write_text(model_card(self.config(), self.num_parameters))
        self._half_kernels = half
        try:
            return super().save_pretrained(save_directory, **kwargs)
        finally:
            self._half_kernels = False

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's hook: ``model.safetensors`` of :func:`stored_state`."""
        half = getattr(self, "_half_kernels", False)
        save_file(stored_state(self, half), str(Path(save_directory) / "model.safetensors"),
                  metadata={"format": "pt", "kernels": "float16" if half else "float32"})

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs,
    ) -> "LVSegModel":
        # The mixin's own loader prints to stdout; this one only reads files.
        if Path(model_id).is_dir():
            weights = Path(model_id) / "model.safetensors"
        else:
            weights = Path(hf_hub_download(
                repo_id=model_id, filename="model.safetensors", revision=revision,
                cache_dir=cache_dir, force_download=force_download,
                local_files_only=local_files_only, token=token,
            ))
        if not weights.is_file():
            raise WeightsError(f"{model_id}: model.safetensors is missing")
        _check_buildable(model_id, weights, model_kwargs)
        model = cls(**model_kwargs)
        try:
            load_safetensors(model, str(weights), strict=strict, device=str(map_location))
        except SafetensorError as err:
            first = first_line(err)
            raise WeightsError(f"{model_id}: model.safetensors cannot be read ({first})") from None
        except (RuntimeError, OSError, ValueError) as err:
            first = first_line(err)
            raise WeightsError(f"{model_id}: weights do not match the config ({first})") from None
        return model.eval()


def stored_state(model: nn.Module, half: bool = False) -> dict[str, torch.Tensor]:
    """The state dict as written to ``model.safetensors``; with ``half`` the
    floating-point tensors of two or more dimensions (convolution kernels) in
    float16, while 1-D tensors (biases, norm weights, running statistics) stay
    float32, where rounding would shift every activation.

    Raises:
        WeightsError: a kernel holds values beyond float16's range.
    """
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if not half:
        return state
    limit = torch.finfo(torch.float16).max
    for name, value in state.items():
        if value.is_floating_point() and value.ndim >= 2:
            if value.abs().max() > limit:
                raise WeightsError(f"{name} holds values beyond float16's range; "
                                   "store the weights in float32")
            state[name] = value.half()
    return state


def _check_buildable(model_id: str, weights: Path, kwargs: dict) -> None:
    """Build the network of ``kwargs`` on the meta device (no memory) and refuse
    a config whose network cannot be built or has more parameters than
    ``weights`` can hold (a lying config.json would otherwise allocate them)."""
    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in LVSegModel(**kwargs).parameters())
    except (TypeError, ValueError, RuntimeError, AttributeError, KeyError) as err:
        first = first_line(err)
        raise WeightsError(f"{model_id}: config.json arch_args do not build a network "
                           f"({first})") from None
    size = weights.stat().st_size
    if count * 2 > size:  # at least 2 bytes per stored parameter (fp16/bf16)
        raise WeightsError(f"{model_id}: config.json describes {count / 1e6:.1f} M parameters "
                           f"but model.safetensors holds {size / 1e6:.1f} MB")


def create_model(architecture: str, **arch_args: Any) -> LVSegModel:
    """A new, randomly initialised model, e.g. ``create_model("unet")``."""
    return LVSegModel(architecture=architecture, arch_args=arch_args)
