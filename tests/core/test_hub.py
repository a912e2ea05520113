"""Tests of lvseg_core.hub through the real huggingface_hub code (no mocks, no network).

A temporary Hugging Face cache is written in its documented layout
(``models--owner--name/{refs/<ref>, blobs/<sha256>, snapshots/<commit>/...}``)
and read back with ``local_files_only=True`` or ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lvseg_core import hub
from lvseg_core.errors import LVSegError, WeightsError
from lvseg_core.hub import fetch_from_hub, load_model, parse_repo, resolve_weights
from lvseg_core.models import LVSegModel, create_model

ROOT = Path(__file__).resolve().parents[2]

REPO = "lvseg-test/tiny-unet"
VNET_REPO = "lvseg-test/tiny-vnet"
COMMIT_MAIN = "a" * 8 + "0123456789abcdef0123456789abcdef"
COMMIT_V1 = "b" * 8 + "fedcba9876543210fedcba9876543210"
COMMIT_VNET = "c" * 40

UNET_ARGS = {"decoder_channels": (32, 16, 8, 8)}
VNET_ARGS = {"base_channels": 4, "convs_per_level": (1, 1)}



def tiny(architecture: str, seed: int) -> LVSegModel:
    torch.manual_seed(seed)
    args = UNET_ARGS if architecture == "unet" else VNET_ARGS
    return create_model(architecture, **args).eval()


def fixed_input(architecture: str = "unet") -> torch.Tensor:
    shape = (2, 1, 32, 32) if architecture != "vnet" else (1, 1, 8, 16, 16)
    return torch.randn(shape, generator=torch.Generator().manual_seed(3))


def predict(model: LVSegModel, architecture: str = "unet") -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(fixed_input(architecture))


def add_snapshot(cache: Path, repo_id: str, commit: str, model: LVSegModel,
                 refs: tuple[str, ...] = (), blobs: bool = True) -> Path:
    """Write ``model`` as one commit of ``repo_id`` in the HF cache layout."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    staging = repo / f"staging-{commit}"
    model.save_pretrained(staging)
    snapshot.mkdir(parents=True)
    for file in sorted(staging.iterdir()):
        if blobs:
            data = file.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
        else:
            shutil.copy2(file, snapshot / file.name)
    shutil.rmtree(staging)
    for ref in refs:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no trailing newline, as huggingface_hub writes
    return snapshot


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    """A cache with REPO (main and v1 differ) and VNET_REPO; returns (cache, models)."""
    cache = tmp_path_factory.mktemp("hf_cache")
    models = {"main": tiny("unet", 0), "v1": tiny("unet", 1), "vnet": tiny("vnet", 2)}
    add_snapshot(cache, REPO, COMMIT_MAIN, models["main"], refs=("main",), blobs=True)
    add_snapshot(cache, REPO, COMMIT_V1, models["v1"], refs=("v1",), blobs=False)
    add_snapshot(cache, VNET_REPO, COMMIT_VNET, models["vnet"], refs=("main",), blobs=False)
    return cache, models


@pytest.fixture(autouse=True)
def offline_env(monkeypatch, hf_cache):
    # Only affects code that reads the variables now; huggingface_hub's
    # constants were read at import, hence cache_dir= and the subprocess below.
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache[0]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def assert_one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert isinstance(err.value, LVSegError)
    assert message and "\n" not in message, message
    return message


# --------------------------------------------------------------------------- #
# fetch_from_hub / from_pretrained with an explicit cache_dir
# --------------------------------------------------------------------------- #

def test_fetch_main_from_cache(hf_cache):
    cache, models = hf_cache
    folder = fetch_from_hub(REPO, cache_dir=cache, local_files_only=True)
    assert folder.name == COMMIT_MAIN
    assert folder.parent.name == "snapshots"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    loaded = LVSegModel.from_pretrained(folder)
    assert torch.equal(predict(loaded), predict(models["main"]))


@pytest.mark.parametrize("revision,expected", [
    ("v1", "v1"), (COMMIT_V1, "v1"), ("main", "main"), (COMMIT_MAIN, "main"),
])
def test_fetch_revision_from_cache(hf_cache, revision, expected):
    cache, models = hf_cache
    folder = fetch_from_hub(REPO, revision, cache_dir=cache, local_files_only=True)
    loaded = LVSegModel.from_pretrained(folder)
    assert torch.equal(predict(loaded), predict(models[expected]))
    other = "main" if expected == "v1" else "v1"
    assert not torch.equal(predict(loaded), predict(models[other]))


def test_from_pretrained_repo_id(hf_cache):
    cache, models = hf_cache
    loaded = LVSegModel.from_pretrained(REPO, cache_dir=cache, local_files_only=True)
    assert isinstance(loaded, LVSegModel)
    assert loaded.architecture == "unet"
    assert loaded.arch_args == {"decoder_channels": [32, 16, 8, 8]}
    assert torch.equal(predict(loaded), predict(models["main"]))
    v1 = LVSegModel.from_pretrained(REPO, revision="v1", cache_dir=cache, local_files_only=True)
    assert torch.equal(predict(v1), predict(models["v1"]))


def test_fetch_unknown_repo_offline(hf_cache):
    cache, _ = hf_cache
    with pytest.raises(WeightsError) as err:
        fetch_from_hub("lvseg-test/does-not-exist", cache_dir=cache, local_files_only=True)
    message = assert_one_line(err)
    assert "cannot be reached" in message and "lvseg-test/does-not-exist" in message


def test_fetch_unknown_revision_offline(hf_cache):
    cache, _ = hf_cache
    with pytest.raises(WeightsError) as err:
        fetch_from_hub(REPO, "v9", cache_dir=cache, local_files_only=True)
    message = assert_one_line(err)
    assert "cannot be reached" in message and "v9" in message


def test_fetch_snapshot_without_weights(tmp_path):
    repo = tmp_path / "models--lvseg-test--empty"
    (repo / "snapshots" / COMMIT_MAIN).mkdir(parents=True)
    (repo / "snapshots" / COMMIT_MAIN / "README.md").write_text("# nothing here\n")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT_MAIN)
    with pytest.raises(WeightsError) as err:
        fetch_from_hub("lvseg-test/empty", cache_dir=tmp_path, local_files_only=True)
    assert "config.json" in assert_one_line(err)


# --------------------------------------------------------------------------- #
# resolve_weights / load_model with HF_HUB_OFFLINE=1 in a fresh interpreter
# --------------------------------------------------------------------------- #

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from lvseg_core import hub
    from lvseg_core.errors import WeightsError
    from huggingface_hub import constants
    torch.set_num_threads(1)
    out = {"cache": constants.HF_HUB_CACHE, "offline": constants.HF_HUB_OFFLINE,
           "bundled": hub.available_bundled()}

    def resolve(arch, source, **kw):
        try:
            w = hub.resolve_weights(arch, source, **kw)
            return {"kind": w.kind, "folder": str(w.folder), "notice": w.notice,
                    "architecture": w.architecture, "description": w.description}
        except WeightsError as err:
            return {"error": str(err)}

    for source in sys.argv[2:]:
        out[source] = resolve("unet", source)
    out["vnet_as_unet"] = resolve("unet", "lvseg-test/tiny-vnet")
    out["vnet"] = resolve("vnet", "lvseg-test/tiny-vnet")
    out["unknown_no_fallback"] = resolve("unet", "lvseg-test/unknown", fallback=False)
    out["unknown_fallback"] = resolve("unet", "lvseg-test/unknown", fallback=True)
    model, weights = hub.load_model("unet", "lvseg-test/tiny-unet@v1")
    again, _ = hub.load_model("unet", "lvseg-test/tiny-unet@v1")
    out["cached"] = model is again
    x = torch.randn((2, 1, 32, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.save(model(x), sys.argv[1])
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def offline_run(hf_cache, tmp_path_factory):
    """Run resolve_weights/load_model in a subprocess with fresh HF constants."""
    cache, _ = hf_cache
    out_file = tmp_path_factory.mktemp("run") / "pred.pt"
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1",
               HF_HOME=str(cache.parent / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    sources = [REPO, f"{REPO}@v1", f"{REPO}@{COMMIT_V1}", f"hf://{REPO}@main"]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out_file), *sources],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["prediction"] = torch.load(out_file)
    return result


def test_offline_subprocess_sees_the_cache(offline_run, hf_cache):
    assert Path(offline_run["cache"]) == hf_cache[0]
    assert offline_run["offline"] is True


@pytest.mark.parametrize("source,expected", [
    (REPO, "main"), (f"{REPO}@v1", "v1"), (f"{REPO}@{COMMIT_V1}", "v1"), (f"hf://{REPO}@main", "main"),
])
def test_resolve_hub_offline(offline_run, hf_cache, source, expected):
    result = offline_run[source]
    assert "error" not in result, result
    assert result["kind"] == "hub" and result["notice"] == ""
    assert result["architecture"] == "unet"
    assert result["description"] == f"hub:{source}"
    folder = Path(result["folder"])
    assert folder.is_relative_to(hf_cache[0])
    loaded = LVSegModel.from_pretrained(folder)
    assert torch.equal(predict(loaded), predict(hf_cache[1][expected]))


def test_load_model_offline_predictions(offline_run, hf_cache):
    assert offline_run["cached"] is True
    assert torch.equal(offline_run["prediction"], predict(hf_cache[1]["v1"]))


def test_resolve_hub_wrong_architecture(offline_run):
    assert "error" in offline_run["vnet_as_unet"]
    assert "vnet" in offline_run["vnet_as_unet"]["error"]
    assert offline_run["vnet"].get("kind") == "hub"


def test_resolve_unknown_repo_offline(offline_run):
    error = offline_run["unknown_no_fallback"]["error"]
    assert "cannot be reached" in error and "\n" not in error
    result = offline_run["unknown_fallback"]
    if "unet" in offline_run["bundled"]:
        assert "error" not in result, result
        assert result["kind"] == "bundled"
        assert "cannot be reached" in result["notice"] and "bundled" in result["notice"]
        assert Path(result["folder"]) == hub.bundled_folder("unet")
    else:
        assert "bundled" in result["error"] and "\n" not in result["error"]


# --------------------------------------------------------------------------- #
# local sources
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def local_unet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local") / "unet-weights"
    model = tiny("unet", 5)
    model.save_pretrained(folder)
    return folder, model


def test_resolve_local_folder(local_unet):
    folder, model = local_unet
    weights = resolve_weights("unet", folder)
    assert weights.kind == "local" and weights.folder == folder and weights.notice == ""
    weights = resolve_weights("unet", str(folder))
    assert weights.folder == folder
    loaded, info = load_model("unet", folder)
    assert info.kind == "local"
    assert torch.equal(predict(loaded), predict(model))


def test_resolve_training_run_folder(tmp_path):
    run = tmp_path / "runs" / "unet-2024"
    model = tiny("unet", 6)
    model.save_pretrained(run / "model")
    (run / "checkpoints").mkdir()
    (run / "history.json").write_text("[]")
    weights = resolve_weights("unet", run)
    assert weights.kind == "local"
    assert weights.folder == run / "model"
    loaded, _ = load_model("unet", run)
    assert torch.equal(predict(loaded), predict(model))


def test_folder_without_config(tmp_path, local_unet):
    with pytest.raises(WeightsError) as err:
        resolve_weights("unet", tmp_path)
    assert str(tmp_path) in assert_one_line(err)
    only_weights = tmp_path / "only"
    only_weights.mkdir()
    shutil.copy(local_unet[0] / "model.safetensors", only_weights)
    with pytest.raises(WeightsError):
        resolve_weights("unet", only_weights)
    only_config = tmp_path / "config-only"
    only_config.mkdir()
    shutil.copy(local_unet[0] / "config.json", only_config)
    with pytest.raises(WeightsError):
        resolve_weights("unet", only_config)


def test_folder_with_broken_config(tmp_path, local_unet):
    shutil.copy(local_unet[0] / "model.safetensors", tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WeightsError) as err:
        resolve_weights("unet", tmp_path)
    assert_one_line(err)


def test_vnet_weights_requested_as_unet(tmp_path):
    tiny("vnet", 0).save_pretrained(tmp_path)
    with pytest.raises(WeightsError) as err:
        resolve_weights("unet", tmp_path)
    message = assert_one_line(err)
    assert "vnet" in message and "unet" in message
    with pytest.raises(WeightsError):
        load_model("unet", tmp_path)
    assert resolve_weights("vnet", tmp_path).architecture == "vnet"


def test_unknown_architecture_requested(local_unet):
    with pytest.raises(WeightsError) as err:
        resolve_weights("segformer", local_unet[0])
    assert "segformer" in assert_one_line(err)


@pytest.mark.parametrize("source", ["a b", "../x", "owner/na me", "owner//name", "x" * 200 + "/y",
                                    "just-a-name", "owner/name/extra"])
def test_invalid_repo_ids(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so that no relative folder of that name exists
    with pytest.raises(WeightsError) as err:
        resolve_weights("unet", source)
    assert_one_line(err)
    with pytest.raises(WeightsError):
        parse_repo(source)


def test_parse_repo():
    assert parse_repo("owner/name") == ("owner/name", None)
    assert parse_repo("owner/name@v1") == ("owner/name", "v1")
    assert parse_repo("hf://owner/name@" + COMMIT_MAIN) == ("owner/name", COMMIT_MAIN)
    assert parse_repo("owner/name@") == ("owner/name", None)


def test_bundled_weights_source():
    present = hub.available_bundled()
    assert all(name in ("unet", "attention_unet", "vnet") for name in present)
    for architecture in ("unet", "attention_unet", "vnet"):
        if architecture in present:
            weights = resolve_weights(architecture, None)
            assert weights.kind == "bundled" and weights.folder == hub.bundled_folder(architecture)
            assert resolve_weights(architecture, "bundled").folder == weights.folder
        else:
            with pytest.raises(WeightsError) as err:
                resolve_weights(architecture, None)
            assert "bundled" in assert_one_line(err)


# --------------------------------------------------------------------------- #
# load_model cache
# --------------------------------------------------------------------------- #

def test_load_model_returns_cached_object(local_unet):
    folder, model = local_unet
    first, w1 = load_model("unet", folder)
    second, w2 = load_model("unet", str(folder))
    assert first is second
    assert w1.folder == w2.folder
    assert not first.training


def test_load_model_reloads_retrained_weights(tmp_path):
    folder = tmp_path / "w"
    tiny("unet", 7).save_pretrained(folder)
    first, _ = load_model("unet", folder)
    retrained = tiny("unet", 8)
    retrained.save_pretrained(folder)
    stamp = (folder / "model.safetensors").stat().st_mtime
    os.utime(folder / "model.safetensors", (stamp + 10, stamp + 10))
    second, _ = load_model("unet", folder)
    assert second is not first
    assert torch.equal(predict(second), predict(retrained))


def test_cached_model_is_reloaded_when_its_config_changes(tmp_path):
    """A config given new QC limits is read again though the weights file is unchanged."""
    folder = tmp_path / "tiny"
    create_model("unet", encoder_depth=3, decoder_channels=[8, 8, 8]).save_pretrained(folder)
    first, _ = load_model("unet", str(folder))
    assert first.qc_limits is None and load_model("unet", str(folder))[0] is first  # cached
    config = json.loads((folder / "config.json").read_text())
    config["qc_limits"] = {"entropy:high": {"typical": 0.1, "check": 0.2, "fail": 0.3}}
    (folder / "config.json").write_text(json.dumps(config))
    later = os.stat(folder / "config.json").st_mtime_ns + 10**9
    os.utime(folder / "config.json", ns=(later, later))
    again, _ = load_model("unet", str(folder))
    assert again is not first and again.qc_limits["entropy:high"]["check"] == 0.2
    assert again.config()["qc_limits"] == config["qc_limits"]
