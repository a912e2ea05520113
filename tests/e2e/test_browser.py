"""Real-browser tests: ``streamlit run app.py`` on localhost, driven by Playwright.

Debian's chromium is used (``apt-get install chromium``; Playwright's own
browser download is not needed): the tests skip with a reason when chromium
or the ``playwright`` package is missing. The app is started in a fixture
with a temporary sample folder (one real ACDC patient when the data is
present, else synthetic hearts), a temporary runs folder, and U-Net weights:
the bundled ones (or ``$LVSEG_WEIGHTS_DIR``) when present, else random-init
weights of the same size (the network's timing is the same). Screenshots go
to ``test-output/`` (git-ignored).

The upload-to-result time of a 10-slice scan with the U-Net is measured from
handing the file to the browser's upload control until the results are on
screen, and printed (run pytest with ``-s`` to see it); it is also written
to ``test-output/upload_timing.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import pytest

from lvseg_app.sidebar import PRECISIONS
from tests.conftest import ROOT, acdc_frame, acdc_path, link_patients, make_heart

OUT = ROOT / "test-output"
CHROMIUM = os.environ.get("LVSEG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGES = ("Segment", "Compare", "Train", "Data", "Models")
STARTUP_SECONDS = 120
RESULT_MS = 180_000

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the playwright package is not installed "
                                      "(pip install playwright)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ten_slice_scan(folder: Path) -> Path:
    """A 10-slice short-axis NIfTI: a real ACDC frame when present, else synthetic."""
    patient = acdc_path() / "patient002"
    real = acdc_frame(patient, "ED") if (patient / "Info.cfg").is_file() else patient
    path = folder / "upload_10_slices.nii.gz"
    if real.is_file() and nib.load(str(real)).shape[2] == 10:
        shutil.copyfile(real, path)
    else:
        scan, _ = make_heart(shape=(232, 256, 10), spacing=(1.5625, 1.5625, 10.0))
        nib.save(nib.Nifti1Image(scan.array, scan.affine), str(path))
    return path


def sample_folder(folder: Path) -> Path:
    """An ACDC-layout folder: links to one real patient's files, else synthetic patients."""
    real = acdc_path() / "patient002"
    folder.mkdir(parents=True)
    if (real / "Info.cfg").is_file():
        link_patients(real.parent.resolve(), folder, ["patient002"])
    else:
        from tests.app.test_app import make_sample_folder

        shutil.rmtree(folder)
        make_sample_folder(folder)
    return folder


@contextlib.contextmanager
def streamlit_server(env: dict, log_name: str = "streamlit.log", procs: list | None = None):
    """``streamlit run app.py`` on a free localhost port; yields its URL (and
    appends the server process to ``procs`` when given)."""
    port = free_port()
    log = open(OUT / log_name, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if procs is not None:
        procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + STARTUP_SECONDS
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited ({proc.returncode}); see {OUT / log_name}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"streamlit did not answer within {STARTUP_SECONDS} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server_env(tmp_path_factory):
    """Environment of the app: temporary samples, runs and (if needed) weights."""
    tmp = tmp_path_factory.mktemp("browser")
    OUT.mkdir(exist_ok=True)
    env = dict(os.environ, LVSEG_SAMPLES=str(sample_folder(tmp / "samples")),
               LVSEG_RUNS_DIR=str(tmp / "runs"), PYTHONUNBUFFERED="1")
    bundled = os.environ.get("LVSEG_WEIGHTS_DIR") or str(ROOT / "weights")
    if not (Path(bundled) / "unet" / "model.safetensors").is_file():
        import torch

        from lvseg_core.models import create_model

        torch.manual_seed(0)
        create_model("unet").save_pretrained(tmp / "weights" / "unet")
        env["LVSEG_WEIGHTS_DIR"] = str(tmp / "weights")
    return env, tmp


@pytest.fixture(scope="module")
def server(server_env):
    """The app server shared by the tests of this module."""
    env, tmp = server_env
    with streamlit_server(env) as url:
        yield {"url": url, "tmp": tmp}


@pytest.fixture(scope="module")
def browser(server):
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@contextlib.contextmanager
def app_page(browser, url: str, height: int = 1800):
    """A new browser context on the app at ``url``, once its Segment page is drawn."""
    context = browser.new_context(viewport={"width": 1440, "height": height})
    page = context.new_page()
    page.set_default_timeout(RESULT_MS)
    page.goto(url)
    page.get_by_role("heading", name="Segment").first.wait_for()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser, server):
    with app_page(browser, server["url"]) as page:
        yield page


def no_exception_box(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, \
        page.locator('[data-testid="stException"]').first.inner_text()


def page_state(page) -> str:
    """What the page shows besides the results (alerts, status lines, the script
    state) and the end of the server's log: the evidence of a failed wait."""
    shown = page.locator('[data-testid="stAlert"], [data-testid="stException"], '
                         '[data-testid="stExpander"] summary, [data-testid="stStatusWidget"]')
    texts = [t.strip().replace("\n", " ")[:200] for t in shown.all_inner_texts()]
    state = page.locator('[data-testid="stApp"]').first.get_attribute("data-test-script-state")
    log = OUT / "streamlit.log"
    tail = log.read_text(errors="replace").splitlines()[-15:] if log.is_file() else []
    return (f"script state {state}; page shows {texts}; load average {os.getloadavg()}; "
            "server log ends:\n" + "\n".join(tail))


def wait_idle(page, timeout_ms: int = RESULT_MS) -> None:
    """Wait until no script run is requested or running: the app's script state
    (set to "rerunRequested" as soon as a widget changes, so a run that has not
    started yet is waited for too) and no "running" indicator."""
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            const state = app && app.getAttribute('data-test-script-state');
            return !['running', 'rerunRequested', 'stopRequested'].includes(state)
                && !document.querySelector('[data-testid="stStatusWidget"]');
        }""", timeout=timeout_ms)


def test_segment_sample_scan(page):
    page.get_by_role("button", name="Segment", exact=True).click()
    page.get_by_text("Accuracy against the ground truth").wait_for()
    page.get_by_text("Clinical indices").wait_for()
    wait_idle(page)
    # The overlay is a Plotly image (plotly.js loads lazily: wait for it), the
    # metrics a table with Dice per structure.
    page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot image').first.wait_for()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .js-plotly-plot')"
        ".length >= 4")
    page.get_by_text("Dice LV").first.wait_for()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stDataFrame\"]').length >= 2")
    page.wait_for_timeout(1500)                  # let Plotly finish drawing
    page.screenshot(path=str(OUT / "segment.png"), full_page=True)
    no_exception_box(page)
    # The 3D surface (off by default) renders on request.
    page.get_by_text("Show the 3D surface of this frame").click()
    page.locator('[data-testid="stPlotlyChart"] .gl-container canvas').first.wait_for()
    wait_idle(page)
    no_exception_box(page)


def wait_charts_drawn(page, settle_ms: int = 1000) -> None:
    """Wait until every Plotly chart on the page has been drawn (the 3D surface
    takes seconds in a headless browser that renders WebGL on the CPU)."""
    try:
        page.wait_for_function(
            """() => {
                const charts = document.querySelectorAll('[data-testid="stPlotlyChart"]');
                return charts.length > 0 && [...charts].every(c => c.querySelector('.main-svg'));
            }""", timeout=30_000)
    except sync_api.TimeoutError:
        pass                 # only a pause between timed uploads: never a failure
    page.wait_for_timeout(settle_ms)


def _upload_and_wait(page, path: Path) -> float:
    """Seconds from handing ``path`` to the upload control to the results on screen."""
    upload = page.locator('[data-testid="stFileUploader"] input[type="file"]').first
    upload.wait_for(state="attached")
    start = time.perf_counter()
    upload.set_input_files(str(path))
    try:
        # The upload control has taken the file (its chip is titled with the name) ...
        page.locator(f'[data-testid="stFileChipName"][title="{path.name}"]').first.wait_for()
        # ... and the results of that file are on screen.
        page.get_by_role("heading", name=path.name.removesuffix(".nii.gz"),
                         exact=True).wait_for()
        page.get_by_text("Clinical indices").wait_for()
    except sync_api.TimeoutError:
        page.screenshot(path=str(OUT / f"timeout_{path.stem}.png"), full_page=True)
        raise AssertionError(f"no result for {path.name} after "
                             f"{time.perf_counter() - start:.0f} s; {page_state(page)}") from None
    seconds = time.perf_counter() - start
    wait_idle(page)
    return seconds


def _clear_upload(page) -> None:
    """Remove the uploaded scan (its results go with it) and wait for the page."""
    page.locator('[data-testid="stFileChipDeleteBtn"] button').first.click()
    page.get_by_text("Drop a scan to segment it").wait_for()
    wait_idle(page)


def test_upload_to_result_time(page, server):
    """A 10-slice scan with the U-Net, timed from the moment the file is given
    to the upload control until the results are on screen: the first upload
    of the session (the model is loaded on first use), then a new upload with
    the model cached (what a visitor sees from then on), in the automatic
    precision (bf16 on CPUs that compute it natively) and in exact fp32."""
    scan = ten_slice_scan(server["tmp"])
    again, fp32_copy = (scan.with_name(f"upload_10_slices_{n}.nii.gz") for n in ("again", "fp32"))
    for copy in (again, fp32_copy):
        shutil.copyfile(scan, copy)

    def inference() -> str:
        return page.locator('[data-testid="stMetric"]', has_text="Inference time") \
            .locator('[data-testid="stMetricValue"]').inner_text()

    page.get_by_text("Upload", exact=True).click()
    first = _upload_and_wait(page, scan)
    wait_charts_drawn(page)
    _clear_upload(page)
    seconds = _upload_and_wait(page, again)
    auto_inference = inference()
    caption = page.get_by_text(re.compile(r"· precision \w+")).first.inner_text()
    auto_precision = re.search(r"· precision (\w+)", caption).group(1)
    wait_charts_drawn(page)
    page.screenshot(path=str(OUT / "upload.png"), full_page=True)
    no_exception_box(page)
    # The same in exact float32 (sidebar: Precision).
    _clear_upload(page)
    page.get_by_role("combobox", name="Precision").click()
    page.get_by_role("option", name=PRECISIONS["fp32"]).click()
    wait_idle(page)
    fp32 = _upload_and_wait(page, fp32_copy)
    page.get_by_text("precision fp32").first.wait_for()
    fp32_inference = inference()
    no_exception_box(page)
    report = {"upload_to_result_s": round(seconds, 2), "first_upload_s": round(first, 2),
              "precision": auto_precision, "server_inference": auto_inference,
              "fp32_upload_to_result_s": round(fp32, 2),
              "fp32_server_inference": fp32_inference, "scan": scan.name,
              "shape": list(nib.load(str(scan)).shape), "model": "unet",
              "cpus": os.cpu_count(), "load_average": list(os.getloadavg())}
    (OUT / "upload_timing.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nupload-to-result, 10-slice scan, U-Net: {seconds:.2f} s {auto_precision} "
          f"(inference {auto_inference}), {fp32:.2f} s fp32 (inference {fp32_inference}); "
          f"first upload "
          f"with model loading {first:.2f} s; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    assert seconds < RESULT_MS / 1000 and fp32 < RESULT_MS / 1000


def test_bad_upload_shows_error_not_traceback(page, server):
    bad = server["tmp"] / "corrupt.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    page.get_by_text("Upload", exact=True).click()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').first \
        .set_input_files(str(bad))
    error = page.locator('[data-testid="stAlertContentError"]').first
    error.wait_for()
    assert "corrupt.nii.gz" in error.inner_text()
    no_exception_box(page)


def open_page(page, name: str) -> None:
    """Click ``name`` in the sidebar navigation and wait until it is drawn, without error."""
    page.locator('[data-testid="stSidebarNav"]').get_by_text(name, exact=True).click()
    page.get_by_role("heading", name=name).first.wait_for()
    wait_idle(page)
    page.wait_for_timeout(500)
    no_exception_box(page)


def test_every_page_opens_without_exception(page):
    for name in PAGES:
        open_page(page, name)
        page.screenshot(path=str(OUT / f"page_{name.lower()}.png"), full_page=True)


def test_sidebar_choice_survives_page_changes(page):
    page.locator('[data-testid="stSidebar"]').get_by_text("Hugging Face Hub").click()
    page.get_by_label("Hub repo id").wait_for()
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Models", exact=True).click()
    page.get_by_role("heading", name="Models").first.wait_for()
    wait_idle(page)
    assert page.get_by_label("Hub repo id").count() == 1
    no_exception_box(page)


def test_first_visit_on_a_deep_link_gets_the_whole_app(browser, server_env):
    """A fresh server whose first visitor opens /train directly: the page runs
    inside app.py (navigation of the five pages, shared sidebar)."""
    env, _ = server_env
    with streamlit_server(env, "streamlit-deep-link.log") as url:
        context = browser.new_context(viewport={"width": 1440, "height": 1200})
        page = context.new_page()
        page.set_default_timeout(RESULT_MS)
        try:
            page.goto(f"{url}/train")
            page.get_by_role("heading", name="Train").first.wait_for()
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.locator('[data-testid="stSelectbox"]', has_text="Architecture") \
                .first.wait_for()
            wait_idle(page)
            links = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
            # Each link reads "<icon name>\n\n<title>".
            assert [t.strip().splitlines()[-1] for t in links] == list(PAGES)
            assert sidebar.locator('[data-testid="stSelectbox"]',
                                   has_text="Architecture").count() == 1
            no_exception_box(page)
        finally:
            context.close()
