"""Torch-free reading and checking of a weights folder's ``config.json``: the
ONNX path reads configs without importing torch, smp or MONAI."""

from __future__ import annotations

import ast
import inspect
import json
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, Callable

from ..errors import WeightsError
from ..labels import LABELS
from ..registry import ARCHITECTURES, check_architecture, spatial_dims


def builder(architecture: str) -> Callable[..., Any]:
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
    for key in ("metrics", "training", "qc_limits"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise WeightsError(f"{where}: config.json {key} must be an object")
    try:
        PreprocessPlan.from_dict(config.get("preprocess"))
    except WeightsError as err:
        raise WeightsError(f"{where}: config.json {err}") from None
