"""Before anything runs: every input exists, and what each stage will do with its folder.

A stage is skipped only when its results were made by the same determining spec from the
same inputs (see ``fingerprint``); it resumes only a checkpoint made by the same spec. A
stage whose spec or inputs changed since its folder was written is *stale*: local mode
refuses to run until the user says what to do (``--restart`` retrains the stale stages,
``--from JOB`` retrains a job and everything after it), so results are never silently
reused or overwritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..api import FieldError, TrainingJob, kind_info
from ..api.trainer_config import FINAL_MODEL_DIR
from ..inputs import inputs, upstreams
from . import fingerprint
from .plan import key, label

Action = Literal["skip", "resume", "run", "restart", "stale"]
PRODUCES_NEW_RESULTS = ("resume", "run", "restart")


@dataclass
class StagePlan:
    """What one job will do, and why."""

    job: TrainingJob
    folder: Path
    fingerprint: dict[str, Any]
    action: Action
    reasons: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return label(key(self.job))


def folder_name(job: TrainingJob) -> str:
    """The same name the operator gives the job's batch Job."""
    return f"{job.metadata.name}-{kind_info(job).stage}"  # type: ignore[attr-defined]


def finished(folder: Path) -> bool:
    return (folder / FINAL_MODEL_DIR / "COMPLETE").exists() and read_summary(folder).get(
        "phase"
    ) == "Succeeded"


def read_summary(folder: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((folder / "metrics.json").read_text()))
    except (OSError, ValueError):
        return {}


def has_state(folder: Path) -> bool:
    """Anything a stage left behind: a config, a checkpoint, a model."""
    return any(
        (folder / name).exists()
        for name in (fingerprint.FINGERPRINT_FILE, "config.json", "checkpoints", FINAL_MODEL_DIR)
    )


def check_inputs(jobs: list[TrainingJob], claims: dict[str, Path]) -> list[tuple[str, FieldError]]:
    """Every problem with the jobs' stored inputs, before anything runs.

    A ``pvc`` source needs a ``--claim`` for its claim, the claim's folder must exist, and
    the path inside it must exist (a model folder must hold config.json); every
    ``--claim`` must be used by some job.
    """
    problems: list[tuple[str, FieldError]] = []
    used: set[str] = set()
    for job in jobs:
        for needed in inputs(job):
            if needed.claim is None:
                continue
            used.add(needed.claim)
            where = f"spec.{needed.slot}.pvc"
            if needed.claim not in claims:
                problems.append(
                    (
                        label(key(job)),
                        FieldError(
                            f"{where}.claimName",
                            f"claim {needed.claim!r} has no local folder; pass"
                            f" --claim {needed.claim}=DIR",
                        ),
                    )
                )
                continue
            root = claims[needed.claim]
            if not root.is_dir():
                continue  # reported once below, for the --claim itself
            target = root / needed.path
            if not target.exists():
                problems.append(
                    (
                        label(key(job)),
                        FieldError(
                            f"{where}.path",
                            f"{target} does not exist (claim {needed.claim} is {root})",
                        ),
                    )
                )
            elif needed.slot != "dataset" and not (target / "config.json").is_file():
                problems.append(
                    (
                        label(key(job)),
                        FieldError(
                            f"{where}.path",
                            f"{target} holds no model (config.json is missing)",
                        ),
                    )
                )
    for name, root in sorted(claims.items()):
        if not root.is_dir():
            problems.append(("--claim", FieldError("", f"{name}={root}: no such folder")))
        elif name not in used:
            problems.append(
                ("--claim", FieldError("", f"{name}={root}: no job reads claim {name!r}"))
            )
    return problems


def plan_stages(
    jobs: list[TrainingJob],
    workdir: Path,
    claims: dict[str, Path],
    restart: bool = False,
    start_from: set[tuple[str, str]] | None = None,
) -> list[StagePlan]:
    """Each job's action, in the given (dependency) order."""
    planned: dict[tuple[str, str], StagePlan] = {}
    forced: set[tuple[str, str]] = set(start_from or ())
    for job in jobs:
        upstream_keys = [(up.kind, up.name) for up in upstreams(job)]
        if any(upstream in forced for upstream in upstream_keys):
            forced.add(key(job))
        folder = workdir / folder_name(job)
        claim_identities = {
            needed.claim: fingerprint.folder_identity(claims[needed.claim] / needed.path)
            for needed in inputs(job)
            if needed.claim is not None and needed.claim in claims
        }
        current = fingerprint.fingerprint(
            job,
            {label(up): planned[up].fingerprint["digest"] for up in upstream_keys},
            claim_identities,
        )
        reasons = _staleness(job, folder, current, [planned[up] for up in upstream_keys])
        action: Action
        if key(job) in forced:
            action = "restart" if has_state(folder) else "run"
        elif not has_state(folder):
            action = "run"
        elif reasons:
            action = "restart" if restart else "stale"
        elif finished(folder):
            action = "skip"
        else:
            action = "resume"
        planned[key(job)] = StagePlan(job, folder, current, action, reasons)
    return list(planned.values())


def _staleness(
    job: TrainingJob, folder: Path, current: dict[str, Any], upstream_plans: list[StagePlan]
) -> list[str]:
    """Why the folder's results (or checkpoints) are not this job's, if they are not."""
    if not has_state(folder):
        return []
    recorded = fingerprint.read(folder) or _legacy_record(folder)
    if recorded is None:
        return ["the folder holds results of unknown origin"]
    if "inputs" in recorded:
        reasons = fingerprint.changes(recorded, current)
    else:  # written before fingerprints: compare what it holds, the spec
        reasons = fingerprint.changes({"spec": recorded["spec"]}, {"spec": current["spec"]})
    consumed = recorded.get("consumed") or {}
    for upstream in upstream_plans:
        if upstream.action in PRODUCES_NEW_RESULTS:
            reasons.append(f"input {upstream.name} will be retrained")
            continue
        upstream_record = fingerprint.read(upstream.folder) or {}
        run = upstream_record.get("run")
        if upstream.name in consumed and run and consumed[upstream.name] != run:
            reasons.append(f"input {upstream.name} was retrained since")
    return list(dict.fromkeys(reasons))


def _legacy_record(folder: Path) -> dict[str, Any] | None:
    """A folder written before fingerprints existed: its config.json holds the job."""
    try:
        config = json.loads((folder / "config.json").read_text())
        spec = dict(config["job"]["spec"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for name in fingerprint.HOW_IT_RUNS:
        spec.pop(name, None)
    return {"spec": spec}


def stale_message(plans: list[StagePlan], command: str) -> list[str]:
    """What to tell the user when stages are stale: which, why, and the ways out."""
    lines = []
    for plan in plans:
        if plan.action != "stale":
            continue
        lines.append(f"{plan.name}: {plan.folder} holds results of another spec or other inputs:")
        lines.extend(f"    {reason}" for reason in plan.reasons)
    first = next(plan for plan in plans if plan.action == "stale")
    lines.append(
        f"refusing to reuse or overwrite them: rerun with --restart to retrain the stages"
        f" above (and what reads from them), --from {first.name} to retrain from that job on,"
        f" or choose another --workdir ({command})"
    )
    return lines


def record_start(plan: StagePlan) -> dict[str, Any]:
    """The fingerprint a stage writes as it starts: a new run id unless it resumes, and the
    run ids of the upstream results it reads."""
    previous = fingerprint.read(plan.folder) or {}
    run = previous.get("run") if plan.action == "resume" and previous.get("run") else None
    consumed = {}
    for upstream in upstreams(plan.job):
        upstream_folder = plan.folder.parent / f"{upstream.name}-{kind_info(upstream.kind).stage}"
        upstream_run = (fingerprint.read(upstream_folder) or {}).get("run")
        if upstream_run:
            consumed[f"{upstream.kind}/{upstream.name}"] = upstream_run
    return {**plan.fingerprint, "run": run or fingerprint.new_run_id(), "consumed": consumed}
