"""``rlhf local run`` and ``rlhf local status``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO

from ..api import FieldError, ManifestError, TrainingJob
from ..manifests import load_jobs
from .lock import WorkdirBusy, WorkdirLock
from .lock import holder as lock_holder
from .plan import key, label, order
from .preflight import check_inputs, finished, plan_stages, read_summary, stale_message
from .runner import (
    STATE_FILE,
    Outcome,
    StopSignals,
    read_outcome,
    read_progress,
    run_job,
    say,
    write_state,
)
from .summary import table, write_report


def run(
    files: list[Path],
    workdir: Path,
    claims: dict[str, Path],
    out: IO[str] | None = None,
    restart: bool = False,
    start_from: list[str] | None = None,
) -> int:
    """Validate, check and order the jobs, then run them; finished ones are skipped,
    interrupted ones resume, and stages whose spec or inputs changed are refused (or, with
    ``restart`` / ``start_from``, retrained)."""
    out = out or sys.stdout
    with StopSignals() as stop:
        try:
            jobs = order(load_jobs(files))
        except ManifestError as error:
            for line in error.lines():
                print(f"error: {line}", file=sys.stderr)
            return 2
        problems = check_inputs(jobs, claims)
        forced, unknown = _jobs_named(jobs, start_from or [])
        problems.extend(("--from", FieldError("", message)) for message in unknown)
        if problems:
            for where, problem in problems:
                print(f"error: {where}: {problem}", file=sys.stderr)
            return 2
        try:
            with WorkdirLock(workdir) as lock:
                return _run_locked(jobs, files, workdir, claims, out, stop, lock, restart, forced)
        except WorkdirBusy as busy:
            print(f"error: {busy}", file=sys.stderr)
            return 1


def _run_locked(
    jobs: list[TrainingJob],
    files: list[Path],
    workdir: Path,
    claims: dict[str, Path],
    out: IO[str],
    stop: StopSignals,
    lock: WorkdirLock,
    restart: bool,
    forced: set[tuple[str, str]],
) -> int:
    plans = plan_stages(jobs, workdir, claims, restart=restart, start_from=forced)
    if any(plan.action == "stale" for plan in plans):
        for line in stale_message(plans, _command(files, workdir, claims)):
            print(f"error: {line}", file=sys.stderr)
        return 2
    write_state(workdir, files, jobs, claims)
    _notice_ignored_resources(jobs, out)
    outcomes: list[Outcome] = []
    for plan in plans:
        if stop.count:
            break
        lock.running(plan.name if plan.action != "skip" else None)
        outcome = run_job(plan, workdir, claims, out, stop)
        outcomes.append(outcome)
        if outcome.status in ("failed", "interrupted"):
            break
    lock.running(None)
    if outcomes:
        say(out, "\n" + table(outcomes))
        report = write_report(workdir, outcomes)
        say(out, f"\nreport: {report.resolve()}")
    last = outcomes[-1] if outcomes else None
    if stop.count or (last and last.status == "interrupted"):
        say(out, interrupted_message(last))
        return stop.exit_code if stop.count else 130
    if last and last.status == "failed":
        say(
            out,
            f"failed: {label(key(last.job))}, exit code {last.exit_code};"
            f" see {last.folder / 'trainer.log'}",
        )
        return 1
    return 0


def interrupted_message(last: Outcome | None) -> str:
    """What a stopped run leaves to do: resume from a checkpoint, or nothing to resume."""
    if last is None:
        return "interrupted before any stage started: nothing was trained"
    name = label(key(last.job))
    if last.status != "interrupted":
        return f"interrupted after {name}: the same command carries on with the next stage"
    steps = _checkpoint_steps(last.folder)
    if steps:
        return f"interrupted: run the same command again to resume {name} from step {steps[-1]}"
    return (
        f"interrupted before the first checkpoint of {name}: nothing will be resumed;"
        " the same command starts it again"
    )


def _jobs_named(
    jobs: list[TrainingJob], names: list[str]
) -> tuple[set[tuple[str, str]], list[str]]:
    """``--from`` values (``Kind/name`` or a name) as job keys, and those matching nothing."""
    found: set[tuple[str, str]] = set()
    unknown = []
    for name in names:
        matches = [
            key(job)
            for job in jobs
            if name in (label(key(job)), job.metadata.name)  # type: ignore[attr-defined]
        ]
        if not matches:
            known = ", ".join(label(key(job)) for job in jobs)
            unknown.append(f"{name}: no such job in the files (jobs: {known})")
        found.update(matches)
    return found, unknown


def _command(files: list[Path], workdir: Path, claims: dict[str, Path]) -> str:
    """The command that runs (or resumes) these jobs, with absolute paths."""
    parts = ["rlhf local run", *(str(p) if str(p) == "-" else str(p.resolve()) for p in files)]
    parts += ["--workdir", str(workdir.resolve())]
    parts += [f"--claim {name}={folder.resolve()}" for name, folder in sorted(claims.items())]
    return " ".join(parts)


def _notice_ignored_resources(jobs: list, out: IO[str]) -> None:  # type: ignore[type-arg]
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:
        gpus = 0
    wanted = [
        job
        for job in jobs
        if job.spec.resources.nodes > 1 or job.spec.resources.gpus_per_node > max(gpus, 0)
    ]
    if wanted:
        where = f"{gpus} local GPU(s)" if gpus else "the CPU"
        print(
            "notice: local mode ignores nodes, GPU counts, CPU and memory in resources;"
            f" training on {where}",
            file=out,
        )


def status(workdir: Path, out: IO[str] | None = None) -> int:
    """What a run folder holds: which stages finished, run now, failed, can resume or have
    not run; and the command that carries on, when something is left to do."""
    out = out or sys.stdout
    try:
        state = json.loads((workdir / STATE_FILE).read_text())
    except (OSError, ValueError):
        print(f"error: {workdir} holds no local run (no {STATE_FILE})", file=sys.stderr)
        return 2
    running = lock_holder(workdir)
    rows = [("job", "state", "detail")]
    left_to_do = False
    for entry in state["jobs"]:
        name = f"{entry['kind']}/{entry['name']}"
        folder = workdir / entry["folder"]
        state_name, detail = _stage_state(name, folder, running)
        left_to_do = left_to_do or state_name not in ("finished", "running")
        rows.append((name, state_name, detail))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )
    if running is not None:
        holder = f"process {running.get('pid', '?')} ({running.get('command', '')})"
        print(f"\nrunning now: {holder}", file=out)
    elif left_to_do:
        files = [Path(name) for name in state["files"]]
        claims = {name: Path(folder) for name, folder in (state.get("claims") or {}).items()}
        print(f"\nto carry on: {_command(files, workdir, claims)}", file=out)
    return 0


def _stage_state(name: str, folder: Path, running: dict | None) -> tuple[str, str]:  # type: ignore[type-arg]
    if finished(folder):
        return "finished", str(read_summary(folder).get("keyMetric", ""))
    if running is not None and running.get("job") == name:
        progress = (read_progress(_metrics_port(folder)) or {}).get("progress") or {}
        step, total = progress.get("step"), progress.get("totalSteps")
        if step is not None and total:
            return "running", f"step {step}/{total} ({100 * step / total:.0f}%)"
        return "running", "starting"
    outcome = read_outcome(folder)
    if outcome.get("status") == "failed":
        return "failed", f"exit code {outcome.get('exitCode')}: {outcome.get('message', '')}"
    steps = _checkpoint_steps(folder)
    if steps:
        return "resumable", f"from step {steps[-1]}"
    if folder.exists():
        return "started", "no checkpoint yet: restarts"
    return "not started", ""


def _checkpoint_steps(folder: Path) -> list[int]:
    """Steps of the complete checkpoints (both trainers write trainer_state.json last, or
    rename the folder into place): a save cut short by a kill is not resumed from."""
    found = (
        (folder / "checkpoints").glob("checkpoint-*") if (folder / "checkpoints").is_dir() else []
    )
    return sorted(
        int(p.name.split("-")[1])
        for p in found
        if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").exists()
    )


def _metrics_port(folder: Path) -> int:
    try:
        config = json.loads((folder / "config.json").read_text())
        return int(config["telemetry"]["metricsPort"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
