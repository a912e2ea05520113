"""A visitor of the public app in a real browser (issue 13).

``streamlit run app.py`` with ``LVSEG_PUBLIC=1`` as the Dockerfile sets it,
the owner's ``HF_TOKEN`` set (and the owner even opted in to token use), and
``HF_ENDPOINT`` on a fake Hub on 127.0.0.1 that logs every request's headers.
Debian's chromium, driven by Playwright. The visitor types a private repo id,
looks for folder boxes and start buttons on every page, uploads the hostile
files of the issue (a gzip bomb, a 0.8 MB scan with 20 mm pixels); the
server's peak memory is read from ``/proc/<pid>/status`` (VmHWM).
"""

from __future__ import annotations

import urllib.request

import pytest

from bench.hostile import OWNER_TOKEN, fake_hub, gzip_bomb, nifti
from tests.e2e.test_browser import (CHROMIUM, CHROMIUM_ARGS, OUT, PAGES, app_page,
                                    no_exception_box, open_page, sample_folder,
                                    server_env,  # noqa: F401 (a fixture)
                                    streamlit_server, sync_api, wait_idle)

PEAK_LIMIT_GB = 3.0


@pytest.fixture(scope="module")
def public_server(tmp_path_factory, server_env):
    """The public app and the fake Hub it talks to: ``(url, hub log, server process)``."""
    base, _ = server_env
    tmp = tmp_path_factory.mktemp("public")
    with fake_hub() as (hub_url, seen):
        env = dict(base, LVSEG_PUBLIC="1", HF_TOKEN=OWNER_TOKEN, LVSEG_HUB_USE_TOKEN="1",
                   LVSEG_ALLOW_TRAINING="1", LVSEG_ALLOW_PUSH="1", HF_ENDPOINT=hub_url,
                   HF_HOME=str(tmp / "hf"), LVSEG_SAMPLES=str(sample_folder(tmp / "samples")))
        env.pop("HF_HUB_OFFLINE", None)
        procs: list = []
        with streamlit_server(env, "streamlit-public.log", procs) as url:
            yield {"url": url, "hub": seen, "proc": procs[0], "tmp": tmp}


@pytest.fixture(scope="module")
def visitor(public_server):
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        with app_page(chromium, public_server["url"], 1600) as page:
            yield page
        chromium.close()


def peak_gb(proc) -> float:
    """Peak resident memory of the server process (VmHWM), GB."""
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    raise AssertionError("no VmHWM")


def alive(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as reply:
        return reply.read().strip() == b"ok"


def text_inputs(page) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('input[type=text], textarea')]"
                         ".map(e => e.getAttribute('aria-label') || '')")


def test_no_folder_box_and_nothing_to_start_on_any_page(visitor):
    for name in PAGES:
        open_page(visitor, name)
        errors = visitor.locator('[data-testid="stAlertContentError"]')
        assert errors.count() == 0, (name, errors.first.inner_text())
        assert not [label for label in text_inputs(visitor) if "folder" in label.lower()], name
        for button in ("Start training", "LR range test", "Overfit check", "Push to Hub",
                       "Stop"):
            assert visitor.get_by_role("button", name=button).count() == 0, (name, button)
    visitor.screenshot(path=str(OUT / "public_models.png"), full_page=True)
    open_page(visitor, "Segment")


def test_private_repo_gets_no_owner_token(visitor, public_server):
    sidebar = visitor.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Hugging Face Hub").click()
    box = visitor.get_by_label("Hub repo id")
    box.fill("victim-org/private-weights")
    box.press("Enter")
    wait_idle(visitor)
    visitor.get_by_role("button", name="Segment", exact=True).click()
    error = visitor.locator('[data-testid="stAlertContentError"]', has_text="victim-org")
    error.first.wait_for()
    no_exception_box(visitor)
    seen = public_server["hub"]
    assert seen, "the fake Hub was never asked"
    assert not [r for r in seen if "authorization" in r], seen
    sidebar.get_by_text("Bundled").click()
    wait_idle(visitor)


def test_hostile_uploads_keep_the_server_small_and_alive(visitor, public_server):
    tmp = public_server["tmp"]
    bomb = gzip_bomb(tmp / "bomb.nii.gz")
    coarse = nifti(tmp / "coarse.nii.gz", (20.0, 20.0, 10.0), (256, 256, 3))
    assert coarse.stat().st_size < 1 << 20
    visitor.get_by_text("Upload", exact=True).click()
    upload = visitor.locator('[data-testid="stFileUploader"] input[type="file"]').first
    for path, needle in ((bomb, "too large"), (coarse, "LVSEG_MAX_GRID_VOXELS")):
        upload.set_input_files(str(path))
        error = visitor.locator('[data-testid="stAlertContentError"]', has_text=needle).first
        error.wait_for()
        text = error.inner_text()
        assert "/tmp" not in text and str(tmp) not in text, text
        no_exception_box(visitor)
        wait_idle(visitor)
        assert alive(public_server["url"])
    peak = peak_gb(public_server["proc"])
    print(f"\npublic server peak memory after the hostile uploads: {peak:.2f} GB")
    assert peak < PEAK_LIMIT_GB, f"server peaked at {peak:.2f} GB"
