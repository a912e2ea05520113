"""Training jobs seen from the app: start, watch, stop, list (the Train page).

A run is a folder ``runs/<name>/`` written by ``python -m train``; its record
files (``config.json``, ``metrics.jsonl``, ``lr_find.json``) are read with
:mod:`lvseg_core.records`.

Runs started here are **background processes** in their own process group
(never threads of the caller): the command's output goes to
``runs/<name>/train.log`` and ``runs/<name>/process.json`` records the PID,
the command and the kind of run. Only such runs can be stopped from here;
runs started from a terminal are listed and watched (their process is found
by its command line) but never signalled.

Nothing here imports torch or Lightning, so the app's pages stay light.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lvseg_core import settings
from lvseg_core.errors import LVSegError
from lvseg_core.labels import STRUCTURES
from lvseg_core.records import (
    CONFIG_FILE,
    LR_FIND_FILE,
    TrainConfig,
    best_epoch,
    epoch_events,
    is_number,
    read_events,
    read_json,
    since_last_start,
    training_seconds,
)

#: Files written here beside the training's own files.
PROCESS_FILE = "process.json"
LOG_FILE = "train.log"

#: Kinds of runs started from here.
KINDS = ("fit", "overfit", "lr-find")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_TQDM_EPOCH = re.compile(r"Epoch (\d+):\s+(\d+)%")
_SKIP_DIRS = {"cache"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ---------------------------------------------------------------- options


def check_run_name(name: str) -> str:
    """``name`` if it is a safe run folder name (letters, digits, ``_.-``), else raise."""
    if not _NAME.match(name or ""):
        raise LVSegError(f"run name {name!r}: use letters, digits, '_', '.' or '-' "
                         "(at most 80 characters, not starting with a symbol)")
    return name


def new_run_name(prefix: str) -> str:
    """``<prefix>-<YYYYmmdd-HHMMSS>``."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------- launching


def _python_train(*args: str) -> list[str]:
    return [sys.executable, "-m", "train", *args]


def launch(command: list[str], run_dir: str | Path, kind: str) -> RunInfo:
    """Start ``command`` as a background process for the run folder ``run_dir``.

    The process gets its own session (process group), runs from the
    repository root with unbuffered output, writes stdout and stderr to
    ``run_dir/train.log``, and its PID goes to ``run_dir/process.json``.

    Raises:
        LVSegError: ``run_dir`` already holds a run, or the process cannot start.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise LVSegError(f"{run_dir.name}: a run of that name exists; choose another name")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        log = open(run_dir / LOG_FILE, "ab")
    except OSError as err:
        raise LVSegError(f"{run_dir}: cannot create the run folder "
                         f"({err.strerror or err})") from None
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        with log:
            proc = subprocess.Popen(command, cwd=settings.REPO, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env)
    except OSError as err:
        raise LVSegError(f"cannot start {command[0]} ({err.strerror or err})") from None
    _CHILDREN[proc.pid] = proc
    record = {"pid": proc.pid, "pgid": proc.pid, "kind": kind, "started": time.time(),
              "command": command, "command_line": shlex.join(command)}
    (run_dir / PROCESS_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return run_info(run_dir)


#: Processes started by this Python process (kept so that they are reaped).
_CHILDREN: dict[int, subprocess.Popen] = {}


def start_fit(config: TrainConfig, name: str | None = None,
              runs_dir: str | Path | None = None) -> RunInfo:
    """Start ``python -m train fit`` with ``config`` in the background as run ``name``."""
    name = check_run_name(name or new_run_name(config.model))
    run_dir = Path(runs_dir or settings.runs_dir()) / name
    _check_data(config.data)
    config.check_precision()
    return launch(_python_train("fit", *config.cli_args("fit"), "--run-dir", str(run_dir)),
                  run_dir, "fit")


def start_overfit(config: TrainConfig, batches: int = 2, name: str | None = None,
                  runs_dir: str | Path | None = None) -> RunInfo:
    """Start the overfit check: ``fit`` on ``batches`` batches without augmentation.

    A healthy pipeline drives the training loss towards 0 within a few dozen
    epochs; the run is not exported as weights.
    """
    name = check_run_name(name or new_run_name(f"overfit-{config.model}"))
    run_dir = Path(runs_dir or settings.runs_dir()) / name
    _check_data(config.data)
    config.check_precision()
    command = _python_train("fit", *replace(config, overfit_batches=int(batches)).cli_args("fit"),
                            "--run-dir", str(run_dir))
    return launch(command, run_dir, "overfit")


def start_lr_find(config: TrainConfig, num_training: int = 100, name: str | None = None,
                  runs_dir: str | Path | None = None) -> RunInfo:
    """Start the learning-rate range test (``python -m train lr-find``) in the background."""
    name = check_run_name(name or new_run_name(f"lr-find-{config.model}"))
    run_dir = Path(runs_dir or settings.runs_dir()) / name
    _check_data(config.data)
    config.check_precision()
    command = _python_train("lr-find", *config.cli_args("lr-find"), "--out", str(run_dir),
                            "--num-training", str(int(num_training)))
    return launch(command, run_dir, "lr-find")


def _check_data(data: str | Path) -> None:
    path = Path(data).expanduser()
    if not path.is_absolute():
        path = settings.REPO / path
    if not path.is_dir():
        raise LVSegError(f"{data}: data folder not found")


# ---------------------------------------------------------------- processes


def _proc_state(pid: int) -> str | None:
    """Process state letter from ``/proc/<pid>/stat`` (None when unknown)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()[0] if ")" in text else None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pid_alive(pid: int, expect: str | None = "train") -> bool:
    """True when process ``pid`` exists and is not a zombie.

    With ``expect``, the process's command line must also contain that word
    (so that a recycled PID is not mistaken for the run).
    """
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)     # reap a finished child of ours
    except (ChildProcessError, OSError):
        pass
    state = _proc_state(pid)
    if state is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if state in ("Z", "X"):
        return False
    if expect:
        cmd = _cmdline(pid)
        if cmd is not None and not any(expect in part for part in cmd):
            return False
    return True


def find_external_pid(run_dir: str | Path) -> int | None:
    """PID of a ``python -m train`` process writing to ``run_dir`` that was
    started outside this module (matched on ``--run-dir`` / ``--out``)."""
    target = Path(run_dir).resolve()
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return None
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        cmd = _cmdline(int(entry.name))
        if not cmd or "-m" not in cmd or "train" not in cmd:
            continue
        for flag in ("--run-dir", "--out"):
            if flag in cmd:
                i = cmd.index(flag)
                if i + 1 < len(cmd):
                    value = Path(cmd[i + 1])
                    if not value.is_absolute():
                        cwd = _proc_cwd(int(entry.name))
                        value = (cwd / value) if cwd else value
                    try:
                        if value.resolve() == target:
                            return int(entry.name)
                    except OSError:
                        continue
    return None


def _proc_cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def read_process(run_dir: str | Path) -> dict | None:
    """``process.json`` of a run started here, or None."""
    path = Path(run_dir) / PROCESS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def is_running(run_dir: str | Path) -> bool:
    """True while the run's training process is alive (started here or elsewhere)."""
    record = read_process(run_dir)
    if record is not None:
        return pid_alive(record["pid"])
    return find_external_pid(run_dir) is not None


def stop_run(run_dir: str | Path, timeout: float = 10.0) -> bool:
    """Stop a run started here: SIGTERM to its process group, SIGKILL after ``timeout`` s.

    Returns True when the process is gone. Runs started elsewhere (no
    ``process.json``) are refused: they belong to whoever started them.

    Raises:
        LVSegError: the run was not started from the app.
    """
    run_dir = Path(run_dir)
    record = read_process(run_dir)
    if record is None:
        raise LVSegError(f"{run_dir.name} was not started from the app; stop it where it "
                         "was started")
    pid, pgid = record["pid"], int(record.get("pgid", record["pid"]))
    record["stop_requested"] = time.time()
    (run_dir / PROCESS_FILE).write_text(json.dumps(record, indent=1) + "\n")
    if not pid_alive(pid):
        return True
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            raise LVSegError(f"{run_dir.name}: not allowed to stop process {pid}") from None
        deadline = time.time() + wait
        while time.time() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.1)
    return not pid_alive(pid)


# ---------------------------------------------------------------- reading runs


def parse_max_time(text: str | None) -> float | None:
    """Seconds of a Lightning ``"DD:HH:MM:SS"`` limit (None when absent or malformed)."""
    if not text:
        return None
    parts = str(text).split(":")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        return None
    d, h, m, s = (int(p) for p in parts)
    return float(((d * 24 + h) * 60 + m) * 60 + s)


def log_path(run_dir: str | Path) -> Path | None:
    """The run's log: ``train.log`` inside it, else ``<runs>/<name>.log`` beside it."""
    run_dir = Path(run_dir)
    for path in (run_dir / LOG_FILE, run_dir.parent / f"{run_dir.name}.log"):
        if path.is_file():
            return path
    return None


def log_tail(run_dir: str | Path, max_bytes: int = 16_384) -> str:
    """The end of the run's log, progress-bar redraws (``\\r``) collapsed."""
    path = log_path(run_dir)
    if path is None:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read().decode(errors="replace")
    except OSError:
        return ""
    data = _ANSI.sub("", data)
    lines = [line.split("\r")[-1] for line in data.split("\n")]
    return "\n".join(lines[-40:]).strip()


def _log_epoch_fraction(run_dir: Path) -> tuple[int, float] | None:
    """``(epoch, fraction done)`` of the last progress bar in the log."""
    path = log_path(run_dir)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    matches = _TQDM_EPOCH.findall(text)
    if not matches:
        return None
    epoch, percent = matches[-1]
    return int(epoch), min(int(percent), 100) / 100.0


def last_error(run_dir: str | Path) -> str:
    """The failure reason of a run: its ``error`` event, else the last
    ``error:`` line of its log, else ""."""
    for event in reversed(read_events(run_dir)):
        if event.get("event") == "error":
            return str(event.get("message") or "training failed")
    tail = log_tail(run_dir)
    for line in reversed(tail.splitlines()):
        stripped = line.strip()
        if stripped.startswith("error:"):
            return stripped[len("error:"):].strip()
        if re.match(r"^[A-Za-z_.]*(Error|Exception): ", stripped):
            return stripped
    return ""


@dataclass
class RunInfo:
    """What is known about one run folder.

    Attributes:
        name, path: folder name and path.
        kind: ``fit``, ``overfit``, ``lr-find`` or ``search``.
        model: architecture name from the config ("" when unknown).
        status: ``running``, ``finished``, ``stopped``, ``failed`` or ``pending``
            (started here, no output yet).
        pid: training process, when running.
        started_here: started by :func:`launch` (so it can be stopped here).
        epochs_done, max_epochs: epochs finished / planned.
        fraction: 0..1 progress (epochs plus the current epoch's progress bar).
        elapsed, eta_seconds: seconds since the training started, seconds
            left (None when unknown; early stopping can end a run sooner).
        best: the best epoch record (see :func:`best_epoch`), or None.
        has_model: an exported ``model/`` folder exists (usable as weights).
        error: failure reason, when failed.
        config: ``config.json`` of the run ({} when absent).
    """

    name: str
    path: Path
    kind: str = "fit"
    model: str = ""
    status: str = "pending"
    pid: int | None = None
    started_here: bool = False
    epochs_done: int = 0
    max_epochs: int | None = None
    fraction: float = 0.0
    elapsed: float | None = None
    eta_seconds: float | None = None
    best: dict | None = None
    has_model: bool = False
    error: str = ""
    config: dict = field(default_factory=dict)
    started: float | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def best_dice(self) -> float | None:
        return self.best.get("val_dice") if self.best else None

    def summary(self) -> dict[str, Any]:
        """One row for a table of runs."""
        best = self.best or {}
        row: dict[str, Any] = {
            "run": self.name, "kind": self.kind, "model": self.model, "status": self.status,
            "epochs": f"{self.epochs_done}/{self.max_epochs}" if self.max_epochs
            else str(self.epochs_done),
            "best epoch": best.get("epoch"), "best val Dice": best.get("val_dice"),
        }
        for s in STRUCTURES:
            row[f"Dice {s}"] = best.get(f"val_dice_{s}")
        row["val loss"] = best.get("val_loss")
        row["train loss"] = best.get("train_loss")
        row["minutes"] = round(self.elapsed / 60, 1) if self.elapsed else None
        row["weights"] = "model/" if self.has_model else ""
        return row


def run_info(run_dir: str | Path, now: float | None = None) -> RunInfo:
    """Everything :class:`RunInfo` holds about ``run_dir``, read from its files."""
    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    config = read_json(run_dir / CONFIG_FILE)
    record = read_process(run_dir)
    events = read_events(run_dir)
    info = RunInfo(name=run_dir.name, path=run_dir, config=config,
                   started_here=record is not None)
    if record is not None:
        info.kind = str(record.get("kind", "fit"))
        info.started = record.get("started")
    elif (run_dir / LR_FIND_FILE).is_file():
        info.kind = "lr-find"
    elif (run_dir / "results.md").is_file():
        info.kind = "search"
    elif config.get("overfit_batches"):
        info.kind = "overfit"
    info.model = str(config.get("model") or read_json(run_dir / LR_FIND_FILE).get("model")
                     or _model_from_command(record) or "")

    if record is not None:
        alive = pid_alive(record["pid"])
        info.pid = record["pid"] if alive else None
    else:
        info.pid = find_external_pid(run_dir)
        alive = info.pid is not None

    epochs = epoch_events(events)
    current = since_last_start(events)
    start = current[0] if current and current[0].get("event") == "start" else None
    end = next((e for e in reversed(events) if e.get("event") in ("end", "error")), None)
    info.epochs_done = len(epochs)
    info.max_epochs = (epochs[-1].get("max_epochs") if epochs else None) or \
        (start.get("max_epochs") if start else None) or config.get("epochs")
    info.best = best_epoch(events)
    info.has_model = (run_dir / "model" / "model.safetensors").is_file()
    if epochs:
        info.elapsed = training_seconds(events)
    if alive and start and is_number(start.get("time")):
        # Earlier parts of a resumed run, then the running part so far.
        earlier = training_seconds(events[:len(events) - len(current)])
        info.elapsed = earlier + max(0.0, now - float(start["time"]))

    # Progress: finished epochs plus the share of the current one (progress bar).
    if info.max_epochs:
        done = float(info.epochs_done)
        if alive:
            current = _log_epoch_fraction(run_dir)
            if current is not None and current[0] == info.epochs_done:
                done += current[1]
        info.fraction = min(1.0, done / float(info.max_epochs))

    if alive:
        info.status = "running"
        if info.fraction > 0 and info.elapsed:
            eta = info.elapsed * (1.0 - info.fraction) / info.fraction
            limit = parse_max_time(config.get("max_time"))
            if limit is not None:
                eta = min(eta, max(0.0, limit - info.elapsed))
            info.eta_seconds = eta
    elif info.kind == "lr-find":
        info.status = "finished" if (run_dir / LR_FIND_FILE).is_file() else "failed"
        info.fraction = 1.0 if info.status == "finished" else 0.0
    elif end is not None and end.get("event") == "end":
        info.status = "stopped" if end.get("interrupted") else "finished"
        info.fraction = 1.0 if info.status == "finished" else info.fraction
    elif record is not None and record.get("stop_requested"):
        info.status = "stopped"
    elif end is not None and end.get("event") == "error" or record is not None:
        info.status = "failed"
    elif epochs or events:
        info.status = "stopped"        # started elsewhere, ended without an end event
    else:
        info.status = "pending"
    if info.status == "failed":
        info.error = last_error(run_dir) or "the training process ended without a result"
    return info


def _model_from_command(record: dict | None) -> str | None:
    if not record:
        return None
    cmd = record.get("command") or []
    if "--model" in cmd:
        i = cmd.index("--model")
        if i + 1 < len(cmd):
            return cmd[i + 1]
    return None


def is_run_folder(path: Path) -> bool:
    """True for a folder that holds a run (or one being started)."""
    if not path.is_dir() or path.name.startswith(".") or path.name in _SKIP_DIRS:
        return False
    return any((path / name).exists() for name in
               ("config.json", "metrics.jsonl", PROCESS_FILE, "lr_find.json"))


def list_runs(runs_dir: str | Path | None = None) -> list[RunInfo]:
    """All runs under ``runs_dir`` (default :func:`lvseg_core.settings.runs_dir`), newest first."""
    root = Path(runs_dir or settings.runs_dir())
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if is_run_folder(p)]
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    now = time.time()
    return [run_info(p, now) for p in folders]


def weights_runs(architecture: str | None = None,
                 runs_dir: str | Path | None = None) -> list[RunInfo]:
    """Finished runs with an exported ``model/`` (optionally of one architecture)."""
    return [r for r in list_runs(runs_dir)
            if r.has_model and not r.running and (architecture is None or r.model == architecture)]


def format_seconds(seconds: float | None) -> str:
    """``"1 h 05 min"``, ``"4 min 10 s"``, ``"12 s"`` or ``"?"``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"
