"""Tests of lvseg_core.models: the architecture registry and the saved weights layout."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lvseg_core.errors import LVSegError, WeightsError
from lvseg_core.labels import LABELS, NUM_CLASSES
from lvseg_core.models import (
    ARCHITECTURES,
    DISPLAY_NAMES,
    LVSegModel,
    check_architecture,
    create_model,
    read_config,
)
from lvseg_core.preprocess import PreprocessPlan


#: Small custom widths per architecture.
CUSTOM = {
    "unet": {"decoder_channels": (32, 16, 8, 8)},
    "attention_unet": {"channels": (8, 16, 32, 64)},
    "vnet": {"base_channels": 4, "convs_per_level": (1, 1)},
}

#: Input shapes (batch included) with odd-ish but valid spatial sizes.
INPUTS = {
    "unet": (2, 1, 64, 48),
    "attention_unet": (2, 1, 48, 64),
    "vnet": (1, 1, 16, 32, 24),
}


def fixed_input(architecture: str) -> torch.Tensor:
    return torch.randn(INPUTS[architecture], generator=torch.Generator().manual_seed(7))


def test_registry_is_consistent():
    assert set(ARCHITECTURES) == {"unet", "attention_unet", "vnet"}
    assert set(DISPLAY_NAMES) == set(ARCHITECTURES)
    assert set(CUSTOM) == set(ARCHITECTURES)
    for name in ARCHITECTURES:
        assert check_architecture(name) == name
    with pytest.raises(WeightsError, match="unknown architecture"):
        check_architecture("resnet")


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
@pytest.mark.parametrize("custom", [False, True], ids=["default", "custom"])
def test_builds_and_output_shape(architecture, custom):
    args = CUSTOM[architecture] if custom else {}
    model = create_model(architecture, **args).eval()
    assert model.architecture == architecture
    assert model.labels == list(LABELS.values())
    assert model.spatial_dims == len(INPUTS[architecture]) - 2
    x = fixed_input(architecture)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (x.shape[0], NUM_CLASSES, *x.shape[2:])
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    # the widths really changed the network
    if custom:
        assert model.num_parameters != create_model(architecture).num_parameters


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_default_size_under_budget(architecture):
    model = create_model(architecture)
    n = model.num_parameters
    assert 100_000 < n < 2_500_000, n
    assert n * 4 < 10 * 1024 * 1024  # fp32 weights under 10 MB


def test_custom_widths_change_parameter_count():
    small = create_model("vnet", base_channels=4, convs_per_level=(1, 1))
    default = create_model("vnet")
    assert small.num_parameters < default.num_parameters / 4
    deeper = create_model("attention_unet", channels=(8, 16, 32, 64, 128))
    assert deeper.num_parameters < create_model("attention_unet").num_parameters


def test_default_plan_matches_dimensions():
    plan2d = PreprocessPlan.from_dict(create_model("unet").preprocess)
    plan3d = PreprocessPlan.from_dict(create_model("vnet").preprocess)
    assert plan2d.z_divisor == 1
    assert plan3d.z_divisor == 2 and plan3d.divisor == 8
    iso = PreprocessPlan.from_dict(create_model("vnet", z_strides=(2, 2, 2)).preprocess)
    assert iso.z_divisor == 8


@pytest.mark.parametrize("z_strides, depth", [((1, 1, 2), 6), ((2, 2, 2), 8), ((1, 2, 2), 4)])
def test_vnet_z_strides_keep_shape(z_strides, depth):
    torch.manual_seed(0)
    net = create_model("vnet", base_channels=4, z_strides=z_strides).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, depth, 16, 24))
    assert out.shape == (1, 4, depth, 16, 24)
    strides = [stage.down_conv.stride for stage in net.net.down]
    assert [s[0] for s in strides] == list(z_strides) and all(s[1:] == (2, 2) for s in strides)


def test_vnet_bad_z_strides():
    with pytest.raises(ValueError, match="z_strides"):
        create_model("vnet", z_strides=(1, 3, 2))
    with pytest.raises(ValueError, match="z_strides"):
        create_model("vnet", z_strides=(1, 2))


def test_vnet_z_kernels_by_resolution_level():
    torch.manual_seed(0)
    net = create_model("vnet", base_channels=4, z_kernels=(1, 1, 3, 5)).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 6, 16, 24))
    assert out.shape == (1, 4, 6, 16, 24)
    v = net.net
    z_of = lambda stage: {m.kernel_size[0] for m in stage.modules()  # noqa: E731
                          if isinstance(m, torch.nn.Conv3d) and m.kernel_size[1:] == (5, 5)}
    # Level 0: input and output stages and the last up stage; up stage k is at level 2 - k.
    assert z_of(v.input) == z_of(v.output) == z_of(v.up[2]) == {1}
    assert [z_of(s) for s in v.down] == [{1}, {3}, {5}]
    assert [z_of(s) for s in v.up] == [{3}, {1}, {1}]
    # The default keeps Milletari's 5x5x5 kernels, so older weights load unchanged.
    assert {z_of(s).pop() for s in create_model("vnet", base_channels=4).net.down} == {5}


def test_vnet_bad_z_kernels():
    with pytest.raises(ValueError, match="z_kernels"):
        create_model("vnet", z_kernels=(1, 1, 3))
    with pytest.raises(ValueError, match="z_kernels"):
        create_model("vnet", z_kernels=(1, 2, 3, 3))


def test_widened_vnet_answers_as_the_narrow_one():
    from lvseg_core.models.vnet import widen_channels

    torch.manual_seed(0)
    narrow = create_model("vnet", base_channels=4, z_kernels=(1, 1, 3, 3))
    for m in narrow.modules():  # trained-looking norms, so that copying them matters
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            m.weight.data.normal_()
            m.bias.data.normal_()
    narrow.net.output.conv2.weight.data.normal_()
    x = torch.randn(2, 1, 4, 32, 32)
    for factor in (2, 3):
        wide = create_model("vnet", base_channels=4 * factor, z_kernels=(1, 1, 3, 3))
        wide.load_state_dict(widen_channels(narrow.state_dict(), wide))
        for train in (False, True):  # running statistics and batch statistics
            narrow.train(train)
            wide.train(train)
            with torch.no_grad():
                assert torch.allclose(wide(x), narrow(x), atol=1e-4)
        # The copies of a channel start with different weights (symmetry broken).
        w = wide.state_dict()["net.down.0.ops.0.conv_block.conv.weight"]
        assert not torch.allclose(w[0], w[1])
    with pytest.raises(ValueError, match="multiple"):
        widen_channels(narrow.state_dict(), create_model("vnet", base_channels=6))


def test_adapted_z_kernels_answer_as_before_on_alike_slices():
    from lvseg_core.models.vnet import adapt_z_kernels

    torch.manual_seed(0)
    old = create_model("vnet", base_channels=4)
    new = create_model("vnet", base_channels=4, z_kernels=(1, 3, 3, 3))
    state = adapt_z_kernels(old.state_dict(), new)
    new.load_state_dict(state)  # strict: every entry has the new shape
    convs = [(k, v) for k, v in old.state_dict().items() if v.ndim == 5 and v.shape[2] == 5]
    assert convs and all(state[k].shape[2] in (1, 3) for k, _ in convs)
    # A slice repeated along z: the cut kernel answers as the 5-tap one away from the ends
    # (and not as its centre tap alone).
    for key, weight in convs[:4]:
        x = torch.randn(1, weight.shape[1], 1, 12, 12).repeat(1, 1, 9, 1, 1)
        kz = state[key].shape[2]
        before = torch.nn.functional.conv3d(x, weight, padding=(2, 2, 2))
        after = torch.nn.functional.conv3d(x, state[key], padding=(kz // 2, 2, 2))
        assert torch.allclose(before[:, :, 2:-2], after[:, :, 2:-2], atol=1e-5)
        assert not torch.allclose(before[:, :, 4], torch.nn.functional.conv3d(
            x, weight[:, :, 2:3], padding=(0, 2, 2))[:, :, 4], atol=1e-5)
    # Other entries (norms, biases, resampling convolutions) are kept as they are.
    kept = [k for k in state if k not in dict(convs)]
    assert all(torch.equal(state[k], old.state_dict()[k]) for k in kept)


# --------------------------------------------------------------------------- #
# save_pretrained / from_pretrained
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_save_and_reload_identical(architecture, tmp_path):
    torch.manual_seed(0)
    model = create_model(architecture, **CUSTOM[architecture]).eval()
    model.metrics = {"dice_LV": 0.9}
    folder = tmp_path / "weights"
    model.save_pretrained(folder)

    assert (folder / "config.json").is_file()
    assert (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == architecture
    assert config["labels"] == ["background", "RV", "Myo", "LV"]
    assert config["arch_args"] == json.loads(json.dumps(CUSTOM[architecture]))
    assert PreprocessPlan.from_dict(config["preprocess"]) == PreprocessPlan.from_dict(model.preprocess)
    assert config["metrics"] == {"dice_LV": 0.9}
    assert read_config(folder)["architecture"] == architecture

    stored = load_file(str(folder / "model.safetensors"))
    assert set(stored) == set(model.state_dict())

    loaded = LVSegModel.from_pretrained(folder)
    assert isinstance(loaded, LVSegModel)
    assert not loaded.training  # eval mode
    assert loaded.architecture == architecture
    assert loaded.metrics == {"dice_LV": 0.9}
    x = fixed_input(architecture)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # a freshly initialised model gives different outputs (the weights were really loaded)
    torch.manual_seed(1)
    other = create_model(architecture, **CUSTOM[architecture]).eval()
    with torch.no_grad():
        assert not torch.equal(other(x), loaded(x))


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_save_with_half_kernels(architecture, tmp_path):
    # Kernels are stored in float16 and 1-D tensors in float32; the file is
    # about half as large and the reloaded float32 model answers as before.
    from safetensors import safe_open

    torch.manual_seed(0)
    model = create_model(architecture, **CUSTOM[architecture]).eval()
    model.save_pretrained(tmp_path / "full")
    model.save_pretrained(tmp_path / "half", half=True)
    full, half = (tmp_path / n / "model.safetensors" for n in ("full", "half"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    with safe_open(str(half), "pt") as f:
        assert f.metadata()["kernels"] == "float16"
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}
        shapes = {k: f.get_tensor(k).ndim for k in f.keys()}
    state = model.state_dict()
    for name, value in state.items():
        expected = (torch.float16 if value.is_floating_point() and value.ndim >= 2
                    else value.dtype)
        assert dtypes[name] == expected, name
    assert any(d == torch.float16 for d in dtypes.values())
    assert any(d == torch.float32 and shapes[k] == 1 for k, d in dtypes.items())
    loaded = LVSegModel.from_pretrained(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = fixed_input(architecture)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert not torch.equal(a, b)                 # really rounded...
    assert torch.allclose(a, b, atol=1e-2 * float(a.abs().max()))   # ...and barely
    # a kernel beyond float16's range is refused, not stored as infinity
    with torch.no_grad():
        next(p for p in model.parameters() if p.ndim >= 2).view(-1)[0] = 1e6
    with pytest.raises(WeightsError, match="float16's range"):
        model.save_pretrained(tmp_path / "over", half=True)


def test_reload_from_string_path(tmp_path):
    model = create_model("unet", **CUSTOM["unet"]).eval()
    model.save_pretrained(tmp_path)
    loaded = LVSegModel.from_pretrained(str(tmp_path))
    x = fixed_input("unet")
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


# --------------------------------------------------------------------------- #
# errors
# --------------------------------------------------------------------------- #

def assert_one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message, message
    assert isinstance(err.value, LVSegError)
    return message


def test_read_config_missing(tmp_path):
    with pytest.raises(WeightsError) as err:
        read_config(tmp_path)
    assert "config.json" in assert_one_line(err)


def test_read_config_invalid_json(tmp_path):
    (tmp_path / "config.json").write_text('{"architecture": "unet",\n  oops\n')
    with pytest.raises(WeightsError) as err:
        read_config(tmp_path)
    assert "invalid JSON" in assert_one_line(err)


def test_read_config_binary_garbage(tmp_path):
    (tmp_path / "config.json").write_bytes(b"\xff\xfe\x00\x81garbage\n\x00")
    with pytest.raises(WeightsError) as err:
        read_config(tmp_path)
    assert_one_line(err)


@pytest.mark.parametrize("content", ['[1, 2]', '{"arch": "unet"}', '"unet"', 'null'])
def test_read_config_without_architecture(tmp_path, content):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(WeightsError) as err:
        read_config(tmp_path)
    assert "architecture" in assert_one_line(err)


def test_read_config_unknown_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "transunet"}))
    with pytest.raises(WeightsError) as err:
        read_config(tmp_path)
    message = assert_one_line(err)
    assert "transunet" in message and "unet" in message


def test_weights_not_matching_config(tmp_path):
    model = create_model("unet", **CUSTOM["unet"])
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["arch_args"] = {"decoder_channels": [64, 32, 16, 8]}  # other widths
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError) as err:
        LVSegModel.from_pretrained(tmp_path)
    assert "do not match" in assert_one_line(err)


def test_weights_of_other_architecture(tmp_path):
    create_model("vnet", **CUSTOM["vnet"]).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(architecture="attention_unet", arch_args={})
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError) as err:
        LVSegModel.from_pretrained(tmp_path)
    assert_one_line(err)


def test_state_dict_missing_tensor(tmp_path):
    model = create_model("attention_unet", **CUSTOM["attention_unet"])
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop(sorted(state)[0])
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError) as err:
        LVSegModel.from_pretrained(tmp_path)
    assert_one_line(err)


def test_corrupt_safetensors(tmp_path):
    create_model("unet", **CUSTOM["unet"]).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError) as err:
        LVSegModel.from_pretrained(tmp_path)
    assert "model.safetensors" in assert_one_line(err)


def test_truncated_safetensors(tmp_path):
    create_model("unet", **CUSTOM["unet"]).save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as err:
        LVSegModel.from_pretrained(tmp_path)
    assert_one_line(err)


def test_missing_safetensors(tmp_path):
    create_model("unet", **CUSTOM["unet"]).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(WeightsError) as err:
        LVSegModel.from_pretrained(tmp_path)
    assert "model.safetensors" in assert_one_line(err)
