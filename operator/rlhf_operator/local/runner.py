"""Running an ordered set of jobs as local trainer processes, with a live view.

The output folder of each job stands in for its PersistentVolumeClaim; the trainer
config is rendered by the same function the operator uses for its ConfigMaps.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..api import TrainingJob, kind_info
from ..api.trainer_config import InputSlot
from ..inputs import inputs, trainer_config
from . import fingerprint
from .plan import key, label
from .preflight import StagePlan, folder_name, read_summary, record_start

EXIT_INTERRUPTED = 143
STATE_FILE = "pipeline.json"
OUTCOME_FILE = "outcome.json"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Outcome:
    """How one job ended."""

    job: TrainingJob
    folder: Path
    status: str
    """succeeded, skipped (finished earlier), failed or interrupted."""
    seconds: float
    summary: dict[str, Any]
    exit_code: int = 0


def input_paths(job: TrainingJob, workdir: Path, claims: dict[str, Path]) -> dict[InputSlot, str]:
    """Local folders for each stored input: earlier jobs' outputs, or --claim folders.

    ``preflight.check_inputs`` has made sure every claim is mapped before anything ran.
    """
    paths: dict[InputSlot, str] = {}
    for needed in inputs(job):
        if needed.upstream is not None:
            upstream_folder = workdir / f"{needed.upstream.name}-{_stage(needed.upstream.kind)}"
            paths[needed.slot] = str((upstream_folder / needed.path).resolve())
        elif needed.claim is not None:
            paths[needed.slot] = str((claims[needed.claim] / needed.path).resolve())
    return paths


def _stage(kind: str) -> str:
    return kind_info(kind).stage


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_state(
    workdir: Path, files: list[Path], jobs: list[TrainingJob], claims: dict[str, Path]
) -> None:
    """What ``rlhf local status`` needs: the files and claims (absolute) and the jobs."""
    state = {
        "files": [str(path.resolve()) if str(path) != "-" else "-" for path in files],
        "claims": {name: str(folder.resolve()) for name, folder in sorted(claims.items())},
        "jobs": [
            {"kind": job.kind, "name": job.metadata.name, "folder": folder_name(job)}  # type: ignore[attr-defined]
            for job in jobs
        ],
    }
    (workdir / STATE_FILE).write_text(json.dumps(state, indent=2))


def write_outcome(folder: Path, status: str, exit_code: int, message: str) -> None:
    """How a stage that did not succeed ended, for ``rlhf local status``."""
    record = {"status": status, "exitCode": exit_code, "message": message, "time": time.time()}
    (folder / OUTCOME_FILE).write_text(json.dumps(record))


def read_outcome(folder: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((folder / OUTCOME_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def run_job(
    plan: StagePlan,
    workdir: Path,
    claims: dict[str, Path],
    out: IO[str],
    stop: StopSignals,
    python: str = sys.executable,
) -> Outcome:
    """Run one job's trainer to the end (or to an interruption) and report how it went."""
    job, folder = plan.job, plan.folder
    if plan.action == "skip":
        return Outcome(job, folder, "skipped", 0.0, read_summary(folder))
    if plan.action == "restart" and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OUTCOME_FILE).unlink(missing_ok=True)
    fingerprint.write(folder, record_start(plan))
    port = free_port()
    config = trainer_config(
        job,
        input_paths=input_paths(job, workdir, claims),
        output=str(folder.resolve()),
        metrics_port=port,
        metrics_host="127.0.0.1",
        termination_message_path=None,
        # No cache folder of our own: Hub models and datasets go to the user's Hugging Face
        # cache (HF_HOME, HF_HUB_CACHE, HF_DATASETS_CACHE), shared by every workdir.
        cache=None,
    )
    config_path = folder / "config.json"
    config_path.write_text(json.dumps(config.to_manifest(), indent=2))
    stage = kind_info(job).stage
    name = label(key(job))
    print(
        f"{name}: {'resuming' if plan.action == 'resume' else 'training'};"
        f" metrics at http://127.0.0.1:{port}/metrics, log {folder / 'trainer.log'}",
        file=out,
        flush=True,
    )
    if stop.count:  # a press while this stage was being set up: do not start it at all
        return Outcome(job, folder, "interrupted", 0.0, {})
    started = time.monotonic()
    with open(folder / "trainer.log", "a") as log:
        # Its own session, so a terminal's Ctrl-C or hang-up reaches only us and we ask the
        # trainer for exactly one clean stop; and it dies with us if we are killed.
        process = subprocess.Popen(
            [python, "-m", "rlhf_trainer", stage, "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent,
        )
        view = ProgressView(name, out, resuming=plan.action == "resume")
        # Every press counts, also one that came after the check above: none is lost.
        forwarded = 0
        while True:
            try:
                code = process.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                view.update(read_progress(port))
            if stop.count > forwarded:
                if forwarded == 0 and stop.count == 1:
                    say(
                        out,
                        f"\n{name}: {stop.name}: stopping after a checkpoint"
                        " (press Ctrl-C again to abort)",
                    )
                    process.send_signal(signal.SIGTERM)
                else:  # a second press, or two at once: stop now
                    say(out, f"\n{name}: {stop.name} again: aborting without a checkpoint")
                    _kill_group(process)
                forwarded = stop.count
        view.finish(succeeded=code == 0)
    seconds = time.monotonic() - started
    summary = read_summary(folder)
    if code == 0:
        return Outcome(job, folder, "succeeded", seconds, summary)
    status = "interrupted" if code == EXIT_INTERRUPTED or stop.count else "failed"
    message = _last_error(folder / "trainer.log")
    write_outcome(folder, status, code, message)
    summary = summary or {"error": message}
    return Outcome(job, folder, status, seconds, summary, code)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the trainer and whatever it started (torchrun's workers): its own session."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


PR_SET_PDEATHSIG = 1


def say(out: IO[str], text: str) -> None:
    """Print, unless the terminal is gone (after a hang-up, writes fail)."""
    try:
        print(text, file=out, flush=True)
    except OSError:
        pass


class StopSignals:
    """Counts stop requests - Ctrl-C (SIGINT), SIGTERM (``timeout``, ``kill``) and SIGHUP
    (the terminal closed) - for the whole run, instead of raising.

    The first asks the running trainer for a clean stop after a checkpoint; the second kills
    it. A KeyboardInterrupt can land anywhere, including inside a finalizer, where Python
    drops it: a press was once lost that way and training ran on. A counter read by the
    wait loop cannot be lost, and it also covers presses during start-up.
    """

    def __init__(self) -> None:
        self.count = 0
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "stop"

    @property
    def exit_code(self) -> int:
        """130 after Ctrl-C, as shells expect; 128 + the signal otherwise."""
        return 128 + (self.signal or signal.SIGINT)

    def _received(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.signal = self.signal or signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # where signals land
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._received)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


def read_progress(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=0.5) as reply:
            return dict(json.loads(reply.read()))
    except (OSError, ValueError):
        return None


def _last_error(log: Path) -> str:
    try:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("rlhf-trainer: error:")]
    return (errors or lines or ["no output"])[-1]


class ProgressView:
    """One line per stage: a bar, step / total, ETA (h:mm:ss) and the latest loss or reward,
    at most ``COLUMNS`` wide so it fits an 80-column terminal.

    Redrawn in place on a terminal; printed at each tenth of the way otherwise (CI logs).
    A resumed stage says so at its first progress; a stage that succeeds ends at 100 %.
    """

    WIDTH = 20
    MIN_WIDTH = 10
    COLUMNS = 79

    def __init__(self, name: str, out: IO[str], resuming: bool = False) -> None:
        self.name = name
        self.out = out
        self.tty = out.isatty()
        self.last_tenth = -1
        self.drawn = False
        self.resuming = resuming
        self.total: int | None = None
        self.figure = ""

    def update(self, document: dict[str, Any] | None) -> None:
        if not document:
            return
        progress = document.get("progress") or {}
        step, total = progress.get("step", 0), progress.get("totalSteps")
        if not total:
            return
        if self.resuming:
            self.resuming = False
            self._print(f"{self.name}: resuming from step {step}")
        self.total = total
        self.figure = _headline(document.get("metrics") or {}) or self.figure
        self._draw(step, total, progress.get("estimatedRemainingSeconds"))

    def _draw(self, step: int, total: int, eta: float | None) -> None:
        fraction = min(1.0, step / total)
        line = self._line(self.WIDTH, fraction, step, total, eta)
        if self.figure:
            # Room for the loss or reward: a shorter bar, down to MIN_WIDTH; else left out.
            excess = len(line) + 2 + len(self.figure) - self.COLUMNS
            width = self.WIDTH - max(0, excess)
            if width >= self.MIN_WIDTH:
                line = self._line(width, fraction, step, total, eta) + f"  {self.figure}"
        line = line[: self.COLUMNS]
        if self.tty:
            self.out.write("\r" + line.ljust(self.COLUMNS))
            self.out.flush()
            self.drawn = True
        elif int(fraction * 10) > self.last_tenth:
            self.last_tenth = int(fraction * 10)
            self._print(line)

    def _line(self, width: int, fraction: float, step: int, total: int, eta: float | None) -> str:
        filled = int(width * fraction)
        return format_progress(self.name, filled, width, fraction, step, total, eta)

    def _print(self, text: str) -> None:
        if self.drawn:
            self.out.write("\n")
            self.drawn = False
        say(self.out, text)

    def finish(self, succeeded: bool = False) -> None:
        """End the line; at 100 % when the stage succeeded."""
        try:
            if succeeded and self.total:
                self._draw(self.total, self.total, 0)
            if self.drawn:
                self.out.write("\n")
                self.out.flush()
        except OSError:  # the terminal is gone (hang-up)
            pass


def format_progress(
    name: str, filled: int, width: int, fraction: float, step: int, total: int, eta: float | None
) -> str:
    """``SFTJob/demo  ########............  40% 120/300  ETA 0:01:05``"""
    bar = "#" * filled + "." * (width - filled)
    # Rounded down, as the bar is: 99.99 % is not done, and only the end shows 100 %.
    percent = math.floor(100 * fraction + 1e-9)
    text = f"{name[:24]:24} {bar} {percent:3d}% {step}/{total}"
    if eta is not None:
        text += f"  ETA {format_duration(eta)}"
    return text


def format_duration(seconds: float) -> str:
    """h:mm:ss"""
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _headline(metrics: dict[str, Any]) -> str:
    for name in ("objective/scores", "loss", "eval_loss"):
        if isinstance(metrics.get(name), (int, float)):
            short = "reward" if name == "objective/scores" else name
            return f"{short}={metrics[name]:.3f}"
    return ""
