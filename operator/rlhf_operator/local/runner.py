"""Running an ordered set of jobs as local trainer processes, with a live view.

The output folder of each job stands in for its PersistentVolumeClaim; the trainer
config is rendered by the same function the operator uses for its ConfigMaps.
"""

from __future__ import annotations

import json
import os
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

from ..api import FieldError, ManifestError, TrainingJob, kind_info
from ..api.trainer_config import FINAL_MODEL_DIR, InputSlot
from ..inputs import inputs, trainer_config
from .plan import key, label

EXIT_INTERRUPTED = 143
STATE_FILE = "pipeline.json"


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


def folder_name(job: TrainingJob) -> str:
    """The same name the operator gives the job's batch Job."""
    return f"{job.metadata.name}-{kind_info(job).stage}"


def finished(folder: Path) -> bool:
    return (folder / FINAL_MODEL_DIR / "COMPLETE").exists() and _summary(folder).get(
        "phase"
    ) == "Succeeded"


def _summary(folder: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((folder / "metrics.json").read_text()))
    except (OSError, ValueError):
        return {}


def input_paths(job: TrainingJob, workdir: Path, claims: dict[str, Path]) -> dict[InputSlot, str]:
    """Local folders for each stored input: earlier jobs' outputs, or --claim folders."""
    paths: dict[InputSlot, str] = {}
    for needed in inputs(job):
        if needed.upstream is not None:
            upstream_folder = workdir / f"{needed.upstream.name}-{_stage(needed.upstream.kind)}"
            paths[needed.slot] = str(upstream_folder / needed.path)
        elif needed.claim is not None:
            if needed.claim not in claims:
                raise ManifestError(
                    [
                        FieldError(
                            f"spec.{needed.slot}.pvc.claimName",
                            f"claim {needed.claim!r} has no local folder; pass"
                            f" --claim {needed.claim}=DIR",
                        )
                    ],
                    label(key(job)),
                )
            paths[needed.slot] = str((claims[needed.claim] / needed.path).resolve())
    return paths


def _stage(kind: str) -> str:
    return kind_info(kind).stage


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_state(workdir: Path, files: list[Path], jobs: list[TrainingJob]) -> None:
    state = {
        "files": [str(path) for path in files],
        "jobs": [
            {"kind": job.kind, "name": job.metadata.name, "folder": folder_name(job)}  # type: ignore[attr-defined]
            for job in jobs
        ],
    }
    (workdir / STATE_FILE).write_text(json.dumps(state, indent=2))


def run_job(
    job: TrainingJob,
    workdir: Path,
    claims: dict[str, Path],
    out: IO[str],
    python: str = sys.executable,
) -> Outcome:
    """Run one job's trainer to the end (or to an interruption) and report how it went."""
    folder = workdir / folder_name(job)
    if finished(folder):
        return Outcome(job, folder, "skipped", 0.0, _summary(folder))
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = trainer_config(
        job,
        input_paths=input_paths(job, workdir, claims),
        output=str(folder.resolve()),
        metrics_port=port,
        metrics_host="127.0.0.1",
        termination_message_path=None,
        cache=str((workdir / ".cache").resolve()),
    )
    config_path = folder / "config.json"
    config_path.write_text(json.dumps(config.to_manifest(), indent=2))
    stage = kind_info(job).stage
    name = label(key(job))
    print(
        f"{name}: training; metrics at http://127.0.0.1:{port}/metrics,"
        f" log {folder / 'trainer.log'}",
        file=out,
        flush=True,
    )
    started = time.monotonic()
    with open(folder / "trainer.log", "a") as log:
        # Its own session: Ctrl-C reaches us, and we ask the trainer for exactly one clean stop.
        process = subprocess.Popen(
            [python, "-m", "rlhf_trainer", stage, "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        view = ProgressView(name, out)
        with CtrlC() as presses:
            forwarded = 0
            while True:
                try:
                    code = process.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    view.update(_read_progress(port))
                if presses.count > forwarded:
                    forwarded = presses.count
                    if forwarded == 1:
                        print(
                            f"\n{name}: stopping after a checkpoint (Ctrl-C again to abort)",
                            file=out,
                            flush=True,
                        )
                        process.send_signal(signal.SIGTERM)
                    else:
                        process.kill()
            interrupted = presses.count > 0
        view.finish()
    seconds = time.monotonic() - started
    summary = _summary(folder)
    if code == 0:
        return Outcome(job, folder, "succeeded", seconds, summary)
    status = "interrupted" if code == EXIT_INTERRUPTED or interrupted else "failed"
    summary = summary or {"error": _last_error(folder / "trainer.log")}
    return Outcome(job, folder, status, seconds, summary, code)


class CtrlC:
    """Counts Ctrl-C presses (SIGINT) while a trainer runs, instead of raising.

    A KeyboardInterrupt can land anywhere, including inside a finalizer, where Python
    drops it ("Exception ignored"): a press was once lost that way and training ran on.
    A counter read by the wait loop cannot be lost.
    """

    def __init__(self) -> None:
        self.count = 0
        self._previous: Any = None

    def _pressed(self, signum: int, frame: Any) -> None:
        self.count += 1

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():  # where signals land
            self._previous = signal.signal(signal.SIGINT, self._pressed)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _read_progress(port: int) -> dict[str, Any] | None:
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
    """One line per stage: a bar, step / total, ETA and the latest loss or reward.

    Redrawn in place on a terminal; printed at each tenth of the way otherwise (CI logs).
    """

    WIDTH = 24

    def __init__(self, name: str, out: IO[str]) -> None:
        self.name = name
        self.out = out
        self.tty = out.isatty()
        self.last_tenth = -1
        self.drawn = False

    def update(self, document: dict[str, Any] | None) -> None:
        if not document:
            return
        progress = document.get("progress") or {}
        step, total = progress.get("step", 0), progress.get("totalSteps")
        if not total:
            return
        fraction = min(1.0, step / total)
        filled = int(self.WIDTH * fraction)
        eta = progress.get("estimatedRemainingSeconds")
        figure = _headline(document.get("metrics") or {})
        line = (
            f"{self.name:28.28} {'#' * filled}{'.' * (self.WIDTH - filled)} {fraction:4.0%}"
            f" {step}/{total}"
            + (f"  ETA {eta}s" if eta is not None else "")
            + (f"  {figure}" if figure else "")
        )
        if self.tty:
            self.out.write("\r" + line.ljust(110))
            self.out.flush()
            self.drawn = True
        elif int(fraction * 10) > self.last_tenth:
            self.last_tenth = int(fraction * 10)
            print(line, file=self.out, flush=True)

    def finish(self) -> None:
        if self.drawn:
            self.out.write("\n")
            self.out.flush()


def _headline(metrics: dict[str, Any]) -> str:
    for name in ("objective/scores", "loss", "eval_loss"):
        if isinstance(metrics.get(name), (int, float)):
            short = "reward" if name == "objective/scores" else name
            return f"{short}={metrics[name]:.3f}"
    return ""
