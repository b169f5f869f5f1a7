"""From what the cluster shows (the batch Job, its pods, the trainer's progress) to the
job's status: phase, conditions, progress, metrics, output. Pure functions."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .api import TrainingJob
from .api.trainer_config import FINAL_MODEL_DIR
from .chaining import Decision
from .groupfailure import (
    GROUP_RESTARTED,
    GROUP_RESTARTING,
    RESTARTS_EXHAUSTED,
    GroupDecision,
    restart_record,
)
from .health import health
from .ownership import LEFTOVER_REASONS
from .podwait import PodWait, job_is_active, start_deadline_passed, why_pods_wait
from .queueing import queue_message
from .resources.job import USER_ERROR_EXIT_CODES
from .resources.names import child_names
from .scratch import SCRATCH_DISK_EXCEEDED, scratch_disk_eviction

TERMINAL_PHASES = ("Succeeded", "Failed")
PODS_NOT_STARTED = "PodsNotStarted"
"""Failed reason of a job whose pods did not start within runPolicy.startDeadlineSeconds."""


@dataclass
class Observation:
    """The job's new status and the events that explain the change."""

    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type Normal/Warning, reason, message) to post on the job."""


def now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    state: bool,
    reason: str,
    message: str,
    generation: int | None,
    timestamp: str,
) -> list[dict[str, Any]]:
    """Conditions with one updated; the transition time moves only when status flips."""
    value = "True" if state else "False"
    previous = next((c for c in conditions if c.get("type") == kind), None)
    transition = timestamp
    if previous is not None and previous.get("status") == value:
        transition = previous.get("lastTransitionTime", timestamp)
    condition: dict[str, Any] = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    if previous is None:
        return [*conditions, condition]
    return [condition if c.get("type") == kind else c for c in conditions]


def observe(
    job: TrainingJob,
    previous: dict[str, Any],
    decision: Decision,
    batch_job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    progress: dict[str, Any] | None,
    timestamp: str | None = None,
    warning_events: dict[str, list[dict[str, Any]]] | None = None,
    group: GroupDecision | None = None,
    workload: dict[str, Any] | None = None,
) -> Observation:
    """The status to write, given the previous one and what the cluster shows now.

    ``warning_events``: Warning Events by the uid of the pod or Job they are about (podwait.py
    says which are worth reading); ``timestamp`` is the clock (tests pass their own);
    ``group``: what groupfailure.py decided about a multi-node job's failed Job.
    ``workload``: Kueue's Workload of a queued job's Job (queueing.trim_workload).
    """
    timestamp = timestamp or now()
    status = dict(previous)
    generation = job.metadata.generation
    status["observedGeneration"] = generation
    conditions = list(status.get("conditions") or [])
    old_phase = previous.get("phase")

    def condition(kind: str, state: bool, reason: str, message: str = "") -> None:
        nonlocal conditions
        conditions = set_condition(conditions, kind, state, reason, message, generation, timestamp)

    active = batch_job is not None and job_is_active(batch_job)
    wait = (
        why_pods_wait(batch_job, pods, warning_events) if batch_job is not None and active else None
    )
    phase, reason, message = _phase(
        job, decision, batch_job, pods, wait, _parse(timestamp), workload, group
    )
    if group is not None and group.action != "nothing":
        status["restarts"] = group.restarts
        status["disruptionRestarts"] = group.disruption_restarts
        if group.action == "restart" and batch_job is not None:
            status["lastRestart"] = restart_record(group, batch_job, previous, timestamp)
    if old_phase in TERMINAL_PHASES:
        phase, reason, message = (
            old_phase,
            _reason_of(previous, old_phase),
            previous.get("message", ""),
        )
    status["phase"] = phase
    status["message"] = message
    if batch_job is not None:
        status["jobName"] = batch_job["metadata"]["name"]
        # Pods come and go (evictions delete them): remember every one we have seen.
        seen = list(previous.get("pods") or [])
        for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
            if pod["metadata"]["name"] not in seen:
                seen.append(pod["metadata"]["name"])
        status["pods"] = seen[-1000:]
        status["attempts"] = -(-len(seen) // max(1, job.spec.resources.nodes))
    condition(
        "Waiting",
        phase == "Waiting",
        reason if phase == "Waiting" else "NotWaiting",
        message if phase == "Waiting" else "",
    )
    condition(
        "Running",
        phase == "Running",
        "TrainerRunning" if phase == "Running" else phase or "Pending",
    )
    condition("Suspended", phase == "Suspended", reason if phase == "Suspended" else "NotSuspended")
    if old_phase not in TERMINAL_PHASES:
        condition("PodsReady", *_pods_ready(phase, reason, batch_job, wait))
    if phase == "Succeeded":
        condition("Succeeded", True, reason, message)
    if phase == "Failed":
        condition("Failed", True, reason, message)
    for kind, state, why, text in health(phase, reason, message):
        condition(kind, state, why, text)
    status["conditions"] = conditions

    if phase == "Running" and status.get("startTime") is None:
        status["startTime"] = _started(batch_job) or timestamp
    if progress:
        status["progress"] = {**progress.get("progress", {}), "lastUpdateTime": timestamp}
        metrics = _numbers(progress.get("metrics") or {})
        if metrics:
            status["metrics"] = metrics
    summary = _termination_summary(pods) if phase in TERMINAL_PHASES else None
    if phase == "Succeeded" and old_phase != "Succeeded":
        status["completionTime"] = _finished(batch_job) or timestamp
        names = child_names(job)
        status["output"] = {
            "claimName": names.output_claim,
            "path": posixpath.join(
                names.output_folder, (summary or {}).get("output", FINAL_MODEL_DIR)
            ),
        }
        if summary:
            status["metrics"] = _numbers(summary.get("metrics") or {})
            status["keyMetric"] = summary.get("keyMetric")
            steps = summary.get("steps")
            if isinstance(steps, int):
                status["progress"] = {
                    "step": steps,
                    "totalSteps": steps,
                    "percent": 100,
                    "estimatedRemainingSeconds": 0,
                    "lastUpdateTime": timestamp,
                }
    if phase == "Failed" and old_phase != "Failed":
        status["completionTime"] = timestamp
    if progress and phase == "Running":
        status["keyMetric"] = _key_metric(job, status.get("metrics") or {}) or status.get(
            "keyMetric"
        )
    status = {key: value for key, value in status.items() if value is not None}

    events = []
    # A new phase, or a new reason to wait (the upstream now exists, or now runs, or
    # another leftover child is in the way).
    new_reason = reason != _reason_of(previous, "Waiting")
    new_leftover = reason in LEFTOVER_REASONS and message != previous.get("message")
    if group is not None and group.action == "restart":
        events.append(("Warning", GROUP_RESTARTED, message))
    elif phase != old_phase or (phase == "Waiting" and (new_reason or new_leftover)):
        kind = "Warning" if phase == "Failed" else "Normal"
        events.append((kind, reason or phase, message or f"phase {phase}"))
    # A new reason the pods cannot start (not one more retry of the same image pull).
    if (
        wait is not None
        and wait.problem
        and phase not in TERMINAL_PHASES
        and not wait.same_as(_condition_reason(previous, "PodsReady"))
    ):
        events.append(("Warning", wait.reason, wait.message))
    return Observation(status, events)


def _pods_ready(
    phase: str, reason: str, batch_job: dict[str, Any] | None, wait: PodWait | None
) -> tuple[bool, str, str]:
    """PodsReady (as Kueue's): True while every pod of the Job runs; else why not."""
    if phase == "Running" and wait is None:
        return True, "PodsRunning", ""
    if wait is not None:
        return False, wait.reason, wait.message
    if batch_job is None:
        return False, "NotCreated", ""
    if phase in TERMINAL_PHASES:
        return False, "JobFinished", ""
    return False, reason or "PodsPending", ""


def _phase(
    job: TrainingJob,
    decision: Decision,
    batch_job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    wait: PodWait | None,
    now: datetime,
    workload: dict[str, Any] | None = None,
    group: GroupDecision | None = None,
) -> tuple[str, str, str]:
    """(phase, reason, message) from the world as it is now. A multi-node job's group
    decision comes first: its failed Job is being replaced, or its restarts are spent."""
    if group is not None and group.action in ("restart", "replacing"):
        return "Pending", GROUP_RESTARTING, group.message
    if group is not None and group.action == "exhausted":
        return "Failed", RESTARTS_EXHAUSTED, group.message
    if batch_job is None:
        if decision.readiness == "failed":
            return "Failed", decision.reason, decision.message
        if decision.readiness == "waiting":
            return "Waiting", decision.reason, decision.message
        return "Pending", "Creating", "creating the training Job"
    job_status = batch_job.get("status") or {}
    complete = any(
        c.get("type") == "Complete" and c.get("status") == "True"
        for c in job_status.get("conditions") or []
    )
    scratch_eviction = None if complete else scratch_disk_eviction(pods)
    if scratch_eviction is not None:
        return "Failed", SCRATCH_DISK_EXCEEDED, scratch_eviction + "; the Job was stopped"
    for condition in job_status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Succeeded", "TrainingSucceeded", "training finished"
        if condition.get("type") == "Failed":
            detail = _failure_detail(pods)
            reason = condition.get("reason") or "JobFailed"
            if detail.get("reason") in ("DataError", "ConfigError"):
                reason = detail["reason"]
            text = detail.get("message") or condition.get("message") or "the training Job failed"
            return "Failed", reason, text
    if (batch_job.get("spec") or {}).get("suspend"):
        if job.spec.run_policy.suspend:
            return (
                "Suspended",
                "SuspendedByUser",
                "suspended: pods stopped, output and checkpoints kept",
            )
        if job.spec.queue_name is not None:
            return "Pending", "Queued", queue_message(job.spec.queue_name, workload)
        return "Pending", "Queued", "the Job is suspended"
    deadline = job.spec.run_policy.start_deadline_seconds
    if start_deadline_passed(batch_job, pods, deadline, now):
        why = f": {wait.reason}: {wait.message}" if wait is not None else ""
        return (
            "Failed",
            PODS_NOT_STARTED,
            f"the training pods did not start within {deadline} s{why}; the Job was stopped",
        )
    running = [pod for pod in pods if (pod.get("status") or {}).get("phase") == "Running"]
    if running:
        text = f"training ({len(running)} pod(s) running)"
        if wait is not None and wait.problem:
            text += f"; a pod waits: {wait.reason}: {wait.message}"
        return "Running", "TrainerRunning", text
    if wait is not None:
        why = f"{wait.reason}: {wait.message}" if wait.problem else wait.message
        return "Pending", wait.reason, f"waiting for the training pods to start: {why}"
    return "Pending", "PodsPending", "waiting for the training pods to start"


def stops_its_job(status: dict[str, Any]) -> bool:
    """Whether the status says the job failed for pods that never started (its Job could
    otherwise start them once the cluster changes) or for a pod over its scratch disk (its
    Job would retry into the same disk), so its Job must be stopped."""
    return status.get("phase") == "Failed" and _reason_of(status, "Failed") in (
        PODS_NOT_STARTED,
        SCRATCH_DISK_EXCEEDED,
    )


def _failure_detail(pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest failed pod's exit summary; a rank's user error (exit 65/78) before the
    other ranks' (stopped by the Job controller once it failed the Job)."""
    for pod in sorted(
        pods,
        key=lambda p: (_user_error_exit(p), p["metadata"].get("creationTimestamp") or ""),
        reverse=True,
    ):
        summary = _message_of(pod)
        if summary and summary.get("phase") == "Failed":
            return summary
    return {}


def _user_error_exit(pod: dict[str, Any]) -> bool:
    return any(
        ((container.get("state") or {}).get("terminated") or {}).get("exitCode")
        in USER_ERROR_EXIT_CODES
        for container in (pod.get("status") or {}).get("containerStatuses") or []
    )


def _termination_summary(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trainer's exit summary from the newest pod that wrote one (index 0 first)."""
    ordered = sorted(
        pods,
        key=lambda p: (
            (p["metadata"].get("annotations") or {}).get(
                "batch.kubernetes.io/job-completion-index", "0"
            )
            != "0",
            p["metadata"].get("creationTimestamp") or "",
        ),
    )
    for pod in ordered:
        summary = _message_of(pod)
        if summary and summary.get("phase") == "Succeeded":
            return summary
    return None


def _message_of(pod: dict[str, Any]) -> dict[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        text = terminated.get("message")
        if text:
            try:
                value = json.loads(text)
            except ValueError:
                return {"phase": "Failed", "message": text.strip().splitlines()[-1][:1000]}
            return value if isinstance(value, dict) else None
    return None


def _condition_reason(status: dict[str, Any], kind: str) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("reason") or "")
    return None


def _reason_of(status: dict[str, Any], phase: str) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("type") == phase:
            return str(condition.get("reason") or phase)
    return phase


def _started(batch_job: dict[str, Any] | None) -> str | None:
    return ((batch_job or {}).get("status") or {}).get("startTime")


def _finished(batch_job: dict[str, Any] | None) -> str | None:
    return ((batch_job or {}).get("status") or {}).get("completionTime")


def _parse(stamp: str) -> datetime:
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Figures the trainer logs that stay out of status.metrics (kept small: kubectl shows it
# whole): the RL update's GPU memory peaks per phase and its milliseconds-long advantage
# phase are in /metrics and the report. The phase seconds, generation tokens/s, response
# length and truncated share stay: they say where a slow PPOJob's time goes.
LEFT_OUT_OF_STATUS = ("gpu_memory_peak_bytes/", "time/advantages")


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        str(name): float(value)
        for name, value in metrics.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not str(name).startswith(LEFT_OUT_OF_STATUS)
    }


KEY_METRICS = {
    "SFTJob": ("eval_accuracy", "eval_loss", "loss"),
    "RewardModelJob": ("eval_accuracy", "accuracy", "loss"),
    "PPOJob": ("objective/scores", "objective/rlhf_reward"),
    "DPOJob": ("eval_rewards/accuracies", "rewards/accuracies", "loss"),
}


def _key_metric(job: TrainingJob, metrics: dict[str, float]) -> str | None:
    for name in KEY_METRICS[job.kind]:  # type: ignore[attr-defined]
        if name in metrics:
            return f"{name}={metrics[name]:.4g}"
    return None
