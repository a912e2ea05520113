"""TrainConfig and ``python -m train``: one set of fields, options and defaults."""

from __future__ import annotations

from dataclasses import fields

import pytest

from lvseg_core.records import NOT_OPTIONS, TrainConfig
from train.cli import _config, build_parser


def test_every_field_is_an_option_with_the_config_default():
    parser = build_parser()
    args = parser.parse_args(["fit", "--model", "unet", "--data", "d", "--cache-dir", "c"])
    config = _config(args)
    defaults = TrainConfig(data="d", cache_dir="c")
    assert config == defaults
    names = {f.name for f in fields(TrainConfig)} - NOT_OPTIONS - {"augment"}
    assert names <= set(vars(args)), names - set(vars(args))


@pytest.mark.parametrize("command", ["fit", "lr-find"])
def test_cli_args_rebuild_the_config(tmp_path, command):
    config = TrainConfig(model="vnet", data=str(tmp_path), epochs=3, lr=2e-3, crop=(128, 96),
                         augment=False, max_time="00:01:00:00", threads=2,
                         limit_train_batches=0.25, limit_val_batches=1.0,
                         arch_args={"base_channels": 4}, val_patients=["patient001"],
                         precision="bf16-mixed", init_weights="bundled", cache_dir="c",
                         patience=3, val_every=2, overfit_batches=2, deep_supervision=True)
    extra = ["--out", str(tmp_path)] if command == "lr-find" else []
    rebuilt = _config(build_parser().parse_args([command, *config.cli_args(command), *extra]))
    if command == "fit":
        assert rebuilt == config
    else:   # lr-find takes no early-stopping or overfit options
        assert rebuilt == TrainConfig(**{**vars(config), "patience": 10, "val_every": 1,
                                         "overfit_batches": 0.0})
    # 1.0 stays the whole epoch (a float), not one batch.
    assert rebuilt.limit_val_batches == 1.0 and isinstance(rebuilt.limit_val_batches, float)
