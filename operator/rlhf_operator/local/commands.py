"""``rlhf local run`` and ``rlhf local status``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO

from ..api import ManifestError
from ..manifests import load_jobs
from .plan import key, label, order
from .runner import Outcome, finished, run_job, write_state
from .summary import table, write_report


def run(
    files: list[Path], workdir: Path, claims: dict[str, Path], out: IO[str] | None = None
) -> int:
    """Validate, order and run the jobs; finished ones are skipped, interrupted ones resume."""
    out = out or sys.stdout
    try:
        jobs = order(load_jobs(files))
    except ManifestError as error:
        for problem in error.errors:
            where = f"{error.source}: " if error.source else ""
            print(f"error: {where}{problem}", file=sys.stderr)
        return 2
    workdir.mkdir(parents=True, exist_ok=True)
    write_state(workdir, files, jobs)
    _notice_ignored_resources(jobs, out)
    outcomes: list[Outcome] = []
    for job in jobs:
        try:
            outcome = run_job(job, workdir, claims, out)
        except ManifestError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        outcomes.append(outcome)
        if outcome.status in ("failed", "interrupted"):
            break
    print("\n" + table(outcomes), file=out)
    report = write_report(workdir, outcomes)
    print(f"\nreport: {report.resolve()}", file=out)
    last = outcomes[-1] if outcomes else None
    if last and last.status == "interrupted":
        print("interrupted: run the same command again to resume from the checkpoint", file=out)
        return 130
    if last and last.status == "failed":
        print(
            f"failed: {label(key(last.job))}, exit code {last.exit_code};"
            f" see {last.folder / 'trainer.log'}",
            file=out,
        )
        return 1
    return 0


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
    """What a run folder holds: which stages finished, which can resume, which have not run."""
    out = out or sys.stdout
    try:
        state = json.loads((workdir / "pipeline.json").read_text())
    except (OSError, ValueError):
        print(f"error: {workdir} holds no local run (no pipeline.json)", file=sys.stderr)
        return 2
    rows = [("job", "state", "detail")]
    for entry in state["jobs"]:
        folder = workdir / entry["folder"]
        if finished(folder):
            summary = json.loads((folder / "metrics.json").read_text())
            rows.append(
                (f"{entry['kind']}/{entry['name']}", "finished", summary.get("keyMetric", ""))
            )
            continue
        checkpoints = (
            sorted(
                (
                    int(p.name.split("-")[1])
                    for p in (folder / "checkpoints").glob("checkpoint-*")
                    if p.name.split("-")[1].isdigit()
                ),
            )
            if (folder / "checkpoints").is_dir()
            else []
        )
        if checkpoints:
            rows.append(
                (f"{entry['kind']}/{entry['name']}", "resumable", f"from step {checkpoints[-1]}")
            )
        elif folder.exists():
            rows.append(
                (f"{entry['kind']}/{entry['name']}", "started", "no checkpoint yet: restarts")
            )
        else:
            rows.append((f"{entry['kind']}/{entry['name']}", "not started", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )
    print(f"\nresume with: rlhf local run {' '.join(state['files'])} --workdir {workdir}", file=out)
    return 0
