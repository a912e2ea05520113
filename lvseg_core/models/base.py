"""The model class every architecture shares, saved in the Hugging Face layout.

``LVSegModel`` wraps one network of the registry and carries what is needed to
use it on a new scan: the label map, the preprocessing plan and the training
metrics. ``save_pretrained`` writes ``config.json`` + ``model.safetensors``;
``from_pretrained`` reads them back from a folder or a Hub repo id
(``huggingface_hub.PyTorchModelHubMixin``).
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, Callable

import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from safetensors import SafetensorError
from safetensors.torch import load_model as load_safetensors
from torch import nn

from ..errors import WeightsError, first_line
from ..labels import LABELS
from ..registry import ARCHITECTURES, check_architecture, spatial_dims
from .card import model_card


def builder(architecture: str) -> Callable[..., nn.Module]:
    """The function that builds the network of ``architecture`` (named in
    :mod:`lvseg_core.registry`)."""
    module, name = ARCHITECTURES[check_architecture(architecture)].builder.split(":")
    return getattr(import_module(f"{__package__}.{module}"), name)


def builder_signature(architecture: str) -> inspect.Signature:
    """The signature of ``architecture``'s builder, read from its source file while
    its module is not imported: checking a config must not import smp or MONAI
    (seconds at start-up). Defaults that are not literals: the module is imported."""
    module, name = ARCHITECTURES[check_architecture(architecture)].builder.split(":")
    if f"{__package__}.{module}" not in sys.modules:
        found = _source_signature(Path(__file__).with_name(f"{module}.py"), name)
        if found is not None:
            return found
    return inspect.signature(builder(architecture))


def _source_signature(path: Path, function: str) -> inspect.Signature | None:
    """Signature of the top-level ``function`` in the Python file ``path``, from its
    syntax tree; None when it has ``*args`` or keyword-only parameters or a
    default that is not a literal."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            args = node.args
            if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
                return None
            defaults = [inspect.Parameter.empty] * (len(args.args) - len(args.defaults))
            try:
                defaults += [ast.literal_eval(d) for d in args.defaults]
            except ValueError:
                return None
            return inspect.Signature([
                inspect.Parameter(a.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
                for a, d in zip(args.args, defaults)])
    return None


def default_plan(architecture: str, arch_args: dict | None = None) -> dict[str, Any]:
    """The preprocessing plan used when training ``architecture`` (with ``arch_args``)
    from scratch."""
    from ..preprocess import PreprocessPlan

    if spatial_dims(architecture) == 3:
        from .vnet import vnet_divisors

        divisor, z_divisor = vnet_divisors(**(arch_args or {}))
        return PreprocessPlan(divisor=divisor, z_divisor=z_divisor).to_dict()
    return PreprocessPlan().to_dict()


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
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims(architecture)
        self.architecture = architecture
        self.labels = list(labels or LABELS.values())
        self.arch_args = dict(arch_args or {})
        self.preprocess = dict(preprocess or default_plan(architecture, self.arch_args))
        self.metrics = dict(metrics or {})
        self.training_info = dict(training or {})
        build = builder(architecture)
        self.net = build(in_channels=1, out_channels=len(self.labels), **self.arch_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

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
        }

    def save_pretrained(self, save_directory, **kwargs):  # noqa: D102 - mixin API
        """Write ``config.json``, ``model.safetensors`` and this model's card ``README.md``
        (:func:`~lvseg_core.models.card.model_card`; the model writes its own card, as
        segmentation-models-pytorch does, so a push needs no trainer)."""
        kwargs.setdefault("config", self.config())
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "README.md").write_text(model_card(self.config(), self.num_parameters))
        return super().save_pretrained(save_directory, **kwargs)

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


def read_config(folder: str | Path) -> dict[str, Any]:
    """Read and check ``config.json`` of a weights folder."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{folder}: no config.json (not a weights folder)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(config, dict) or "architecture" not in config:
        raise WeightsError(f"{path}: no 'architecture' entry")
    check_config(config, path.parent.name or str(path))
    return config


def check_config(config: dict[str, Any], where: str) -> None:
    """Raise :class:`WeightsError` (one line) unless ``config`` can build a model:
    a known architecture, ``arch_args`` its builder accepts, one label per
    class, a usable preprocessing plan."""
    from ..preprocess import PreprocessPlan

    architecture = check_architecture(config.get("architecture"))
    arch_args = config.get("arch_args") or {}
    if not isinstance(arch_args, dict):
        raise WeightsError(f"{where}: config.json arch_args must be an object, got {arch_args!r}")
    params = builder_signature(architecture).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = set(params) - {"in_channels", "out_channels"}
        unknown = sorted(set(arch_args) - allowed)
        if unknown:
            raise WeightsError(f"{where}: config.json arch_args {', '.join(unknown)} unknown to "
                               f"{architecture}; it takes {', '.join(sorted(allowed))}")
    labels = config.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(LABELS)
                               or not all(isinstance(v, str) for v in labels)):
        raise WeightsError(f"{where}: config.json labels must list {len(LABELS)} class names "
                           f"({', '.join(LABELS.values())}), got {labels!r}")
    for key in ("metrics", "training"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise WeightsError(f"{where}: config.json {key} must be an object")
    try:
        PreprocessPlan.from_dict(config.get("preprocess"))
    except WeightsError as err:
        raise WeightsError(f"{where}: config.json {err}") from None


def create_model(architecture: str, **arch_args: Any) -> LVSegModel:
    """A new, randomly initialised model, e.g. ``create_model("unet")``."""
    return LVSegModel(architecture=architecture, arch_args=arch_args)
