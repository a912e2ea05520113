"""Command line: ``python -m train {fit,initial-loss,lr-find,search,export}``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from lvseg_core import settings
from lvseg_core.errors import LVSegError
from lvseg_core.records import CHECKPOINTS, TrainConfig
from lvseg_core.registry import ARCHITECTURES

#: The defaults of every option.
DEFAULTS = TrainConfig()


def _devices(text: str) -> str | int:
    return int(text) if text.isdigit() else text


def _limit(text: str) -> float | int:
    value = float(text)
    return int(value) if value >= 1 and value == int(value) and "." not in text else value


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, choices=list(ARCHITECTURES),
                   help="architecture to train")
    p.add_argument("--data", default=str(settings.data_dir()),
                   help="ACDC-layout folder (default: $LVSEG_DATA or %(default)s)")
    p.add_argument("--arch-args", default="{}", type=json.loads,
                   help='architecture widths as JSON, e.g. \'{"decoder_channels": [64,32,16,8]}\'')
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--crop", type=int, nargs=2, default=DEFAULTS.crop, metavar=("X", "Y"),
                   help="training patch size in voxels")
    p.add_argument("--depth", type=int, default=DEFAULTS.depth,
                   help="slices per V-Net training patch")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr)
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    p.add_argument("--max-time", default=None, help='wall-time limit "DD:HH:MM:SS"')
    p.add_argument("--schedule", choices=["onecycle", "cosine", "constant"],
                   default=DEFAULTS.schedule)
    p.add_argument("--no-augment", action="store_true", help="turn augmentation off")
    p.add_argument("--augmentation", default="{}", type=json.loads,
                   help="augmentation ranges and probabilities to change, as JSON, e.g. "
                        "'{\"thin_stack_prob\": 0.3}' (train.transforms.AugmentOptions; "
                        "the rest keep their defaults)")
    p.add_argument("--init-weights", default=None, metavar="SOURCE",
                   help="start from existing weights (bundled, a folder or a Hub repo id): "
                        "fine-tuning; their widths and preprocessing are kept, except that "
                        "--arch-args may change a V-Net's z_kernels and multiply its "
                        "base_channels")
    p.add_argument("--grad-clip", type=float, default=DEFAULTS.grad_clip,
                   help="clip the gradient norm to this (0: off)")
    p.add_argument("--deep-supervision", action="store_true",
                   help="also score every decoder stage below full resolution "
                        "(nnU-Net's deep supervision; exported weights are unchanged)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--val-patients", nargs="*", default=None,
                   help="validation patients (default: the standard split)")
    p.add_argument("--val-fraction", type=float, default=DEFAULTS.val_fraction,
                   help="share of the patients validated on when the standard validation "
                        "patients are absent (default: %(default)s)")
    p.add_argument("--limit-train-batches", type=_limit, default=1.0)
    p.add_argument("--limit-val-batches", type=_limit, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cache-dir", default=str(settings.runs_dir() / "cache"),
                   help="cache of preprocessed volumes (default: %(default)s)")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    p.add_argument("--devices", type=_devices, default="auto")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--strategy", default="auto", help="e.g. ddp, ddp_spawn, fsdp")
    p.add_argument("--precision", default=None, help="default: 16-mixed on GPU, 32-true on CPU")


def _config(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed options (option dests are its field names)."""
    from .transforms import AugmentOptions

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    given.update(crop=tuple(args.crop), augment=not args.no_augment,
                 augmentation=AugmentOptions.check_overrides(args.augmentation),
                 val_every=max(1, getattr(args, "val_every", 1)),
                 overfit_batches=getattr(args, "overfit_batches", 0.0) or 0.0,
                 run_dir=getattr(args, "run_dir", "") or "")
    return TrainConfig(**given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train a model (early stopping, best checkpoint, export)")
    _data_options(p)
    p.add_argument("--run-dir", default="", help="run folder (default: runs/<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--patience", type=int, default=DEFAULTS.patience,
                   help="early-stopping patience (epochs)")
    p.add_argument("--val-every", type=int, default=1, metavar="N",
                   help="validate every N epochs (V-Net epochs are short: one patch per volume)")
    p.add_argument("--overfit-batches", type=_limit, default=0.0,
                   help="train on N batches only, no augmentation (sanity check)")

    p = sub.add_parser("initial-loss", help="loss of a fresh model on unseen batches")
    _data_options(p)

    p = sub.add_parser("lr-find", help="learning-rate range test (PNG + suggestion)")
    _data_options(p)
    p.add_argument("--out", required=True, help="folder for lr_find.png / lr_find.json")
    p.add_argument("--num-training", type=int, default=100, help="steps of the range test")

    p = sub.add_parser("search", help="short trainings over learning rates x weight decays")
    _data_options(p)
    p.add_argument("--out", required=True, help="folder for the trials and results.md")
    p.add_argument("--lrs", type=float, nargs="+", required=True)
    p.add_argument("--weight-decays", type=float, nargs="+", default=[1e-4])

    p = sub.add_parser("export", help="export a run's best model to a weights folder")
    p.add_argument("run", help="run folder")
    p.add_argument("--out", required=True, help="weights folder, e.g. weights/unet")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--evaluation", metavar="JSON", default=None,
                   help="a 'python -m lvseg_core evaluate' report to store with the weights")
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                   help="also upload to this Hub repo (token from HF_TOKEN)")
    p.add_argument("--checkpoint", choices=CHECKPOINTS, default="best",
                   help="best validation Dice (default) or the last epoch")
    p.add_argument("--half", action="store_true",
                   help="store the convolution kernels in float16 (half the file; biases and "
                        "norms stay float32, loading casts back to float32)")

    p = sub.add_parser("archive", help="keep the record of runs (config, metrics, LR test, "
                                       "search) in a versioned folder for the report")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", default="docs/runs", help="records folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing records")
    return parser


def run(args: argparse.Namespace) -> int:
    from . import runner
    from .datamodule import SegmentationDataModule
    from lvseg_core.hub import push_to_hub

    from .export import export_run

    if args.command == "fit":
        path = runner.fit(_config(args), resume=args.resume)
        print(f"run folder: {path}")
    elif args.command == "initial-loss":
        cfg = _config(args)
        data = SegmentationDataModule(cfg)
        result = runner.initial_loss(runner.make_task(cfg, data.plan), data.val_dataloader())
        print(json.dumps(result, indent=1))
    elif args.command == "lr-find":
        result = runner.lr_find(_config(args), args.out, args.num_training)
        print(f"suggested learning rate: {result['suggestion']:.3g} "
              f"(curve: {Path(args.out) / 'lr_find.png'})")
    elif args.command == "search":
        rows = runner.search(_config(args), args.lrs, args.weight_decays, args.out)
        print((Path(args.out) / "results.md").read_text())
        print(f"best: lr {rows[0]['lr']:g}, weight decay {rows[0]['weight_decay']:g}")
    elif args.command == "archive":
        from lvseg_core.records import keep_record

        for run_dir in args.runs:
            print(f"kept {keep_record(run_dir, args.out, args.overwrite)}")
    elif args.command == "export":
        out = export_run(args.run, args.out, overwrite=args.overwrite,
                         evaluation=args.evaluation, checkpoint=args.checkpoint,
                         half=args.half)
        print(f"exported to {out}")
        if args.push_to_hub:
            print(f"pushed: {push_to_hub(out, args.push_to_hub)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=UserWarning)
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except LVSegError as err:
        print(f"error: {err}", file=sys.stderr)
    except (FileNotFoundError, PermissionError) as err:
        print(f"error: {err.filename or ''}: {err.strerror}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
    return 1
