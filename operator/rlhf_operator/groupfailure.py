"""A multi-node job fails and restarts as one group. Pure: the job, its status and what
the cluster shows (its batch Job, that Job's pods) -> what to do.

One rank lost means every rank is lost (torchrun's static rendezvous and NCCL have no way
to take a replacement in), so the batch Job of a multi-node job never retries a pod: its
``podFailurePolicy`` and ``backoffLimit: 0`` (resources/job.py) fail it on the first rank
failure or disruption, and the Job controller stops the other ranks (SIGTERM: they
checkpoint). The operator then decides here:

* a user error (exit code 65/78 on any rank) or a deadline: the failure is final
  (status.py reports it; no restart);
* a disruption of any rank (eviction, preemption, node drain: the pod's
  ``DisruptionTarget`` condition): restart the group, not counted;
* any other failure: restart the group, counted against ``runPolicy.backoffLimit``; when
  the restarts are used up, the job fails (BackoffLimitExceeded) with the failing rank and
  its exit code.

A restart is recorded in the status first (``restarts``, ``disruptionRestarts``,
``lastRestart`` with the failed Job's uid, so the same failed Job is never counted twice),
then the failed Job is deleted with its pods (foreground: the Job stays until every pod is
gone, so no new rank ever meets an old one still writing a checkpoint), and once it is gone
the usual creation makes a fresh Job, which resumes from the latest checkpoint.

One-node jobs keep the batch Job's own retries (its backoffLimit is runPolicy's); the
decision for them is always NOTHING.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from .api import TrainingJob
from .resources.job import COMPLETION_INDEX, CONTAINER, STOPPED_EXIT_CODE, USER_ERROR_EXIT_CODES

Action = Literal["nothing", "restart", "replacing", "exhausted"]
GROUP_RESTARTING = "GroupRestarting"
"""Status reason while the group is replaced."""
GROUP_RESTARTED = "GroupRestarted"
"""Event reason of a restart."""
RESTARTS_EXHAUSTED = "BackoffLimitExceeded"
"""Failed reason once runPolicy.backoffLimit restarts are used up."""
FINAL_JOB_REASONS = ("DeadlineExceeded",)
"""Batch Job failure reasons that are the job's own outcome: activeDeadlineSeconds (the
user's deadline, or the operator's stop for pods that never started)."""
USER_ERROR_RULE = "FailJob rule at index 0"
"""The Job controller's message for a pod matching the first podFailurePolicy rule (user
errors), e.g. "Container trainer for pod ns/p failed with exit code 65 matching FailJob
rule at index 0": read when the pods themselves are gone."""


@dataclass(frozen=True)
class RankFailure:
    """Which rank failed first and how; ``rank`` and ``exit_code`` are None when no pod
    says (a pod deleted with its node)."""

    rank: int | None
    exit_code: int | None
    disrupted: bool

    def describe(self) -> str:
        who = f"rank {self.rank}" if self.rank is not None else "a rank"
        how = f"exited with code {self.exit_code}" if self.exit_code is not None else "failed"
        if self.disrupted:
            return f"{who} {how} after a disruption (eviction, preemption or node loss)"
        return f"{who} {how}"


@dataclass(frozen=True)
class GroupDecision:
    action: Action
    failure: RankFailure | None = None
    restarts: int = 0
    """Restarts counted against runPolicy.backoffLimit, this one included."""
    disruption_restarts: int = 0
    """Restarts after disruptions (not counted), this one included."""
    message: str = ""


NOTHING = GroupDecision("nothing")


def decide(
    job: TrainingJob,
    status: dict[str, Any],
    batch_job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
) -> GroupDecision:
    """What to do about the job's batch Job (the job's own) and its pods."""
    if job.spec.resources.nodes == 1 or batch_job is None:
        return NOTHING
    failed = _failed_condition(batch_job)
    if failed is None or failed.get("reason") in FINAL_JOB_REASONS:
        return NOTHING
    if _user_error(failed, pods):
        return NOTHING
    restarts = int(status.get("restarts") or 0)
    disruption_restarts = int(status.get("disruptionRestarts") or 0)
    last = status.get("lastRestart") or {}
    failure = _first_failure(pods)
    limit = job.spec.run_policy.backoff_limit
    if last.get("jobUid") == batch_job["metadata"].get("uid"):
        return GroupDecision(
            "replacing",
            failure,
            restarts,
            disruption_restarts,
            _replacing_message(last.get("message") or failure.describe(), restarts, limit),
        )
    if failure.disrupted:
        disruption_restarts += 1
    elif restarts >= limit:
        return GroupDecision(
            "exhausted",
            failure,
            restarts,
            disruption_restarts,
            f"{failure.describe()}; no restart left: {restarts} restart(s) used"
            f" (runPolicy.backoffLimit {limit})",
        )
    else:
        restarts += 1
    return GroupDecision(
        "restart",
        failure,
        restarts,
        disruption_restarts,
        _replacing_message(failure.describe(), restarts, limit),
    )


def awaiting_replacement(
    job: TrainingJob, status: dict[str, Any], pods: list[dict[str, Any]]
) -> GroupDecision:
    """With no Job of the job's own: REPLACING while a pod of the Job last restarted is
    still there (creation waits for it, ownership.leftover_pods), else NOTHING."""
    last = status.get("lastRestart") or {}
    if job.spec.resources.nodes == 1 or not last.get("jobUid"):
        return NOTHING
    if not any(
        reference.get("uid") == last["jobUid"]
        for pod in pods
        for reference in (pod.get("metadata") or {}).get("ownerReferences") or []
    ):
        return NOTHING
    restarts = int(status.get("restarts") or 0)
    return GroupDecision(
        "replacing",
        None,
        restarts,
        int(status.get("disruptionRestarts") or 0),
        _replacing_message(
            last.get("message") or "a rank failed", restarts, job.spec.run_policy.backoff_limit
        ),
    )


def _replacing_message(cause: str, restarts: int, limit: int) -> str:
    return (
        f"{cause}: replacing every pod of the group and resuming from the latest checkpoint"
        f" ({restarts} of {limit} restart(s) counted)"
    )


def restart_record(
    decision: GroupDecision, failed_job: dict[str, Any], status: dict[str, Any], timestamp: str
) -> dict[str, Any]:
    """status.lastRestart for a restart decision about ``failed_job``; ``activeSeconds``
    adds the time that Job ran to the earlier groups' (runPolicy.activeDeadlineSeconds
    counts every attempt: each fresh Job gets what is left, runpolicy.py)."""
    failure = decision.failure or RankFailure(None, None, False)
    record: dict[str, Any] = {
        "jobUid": failed_job["metadata"]["uid"],
        "counted": not failure.disrupted,
        "time": timestamp,
        "message": failure.describe(),
        "activeSeconds": active_seconds_used(status) + _ran_seconds(failed_job, timestamp),
    }
    if failure.rank is not None:
        record["rank"] = failure.rank
    if failure.exit_code is not None:
        record["exitCode"] = failure.exit_code
    return record


def active_seconds_used(status: dict[str, Any]) -> int:
    """Seconds the groups replaced so far ran, together."""
    return int((status.get("lastRestart") or {}).get("activeSeconds") or 0)


def _ran_seconds(batch_job: dict[str, Any], timestamp: str) -> int:
    job_status = batch_job.get("status") or {}
    started = job_status.get("startTime")
    if not started:
        return 0
    ended = (_failed_condition(batch_job) or {}).get("lastTransitionTime") or timestamp
    return max(0, int((_parse(ended) - _parse(started)).total_seconds()))


def _parse(stamp: str) -> datetime:
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _failed_condition(batch_job: dict[str, Any]) -> dict[str, Any] | None:
    for condition in (batch_job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return dict(condition)
    return None


def _user_error(failed: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
    if failed.get("reason") == "PodFailurePolicy" and USER_ERROR_RULE in (
        failed.get("message") or ""
    ):
        return True
    return any(_exit_code(pod) in USER_ERROR_EXIT_CODES for pod in pods)


def _first_failure(pods: list[dict[str, Any]]) -> RankFailure:
    """The rank that failed first: the earliest non-zero exit, a stop on SIGTERM (the
    Job controller stopping the others, or the agreed stop) only when nothing else failed;
    within the same second (the resolution of finishedAt), a rank killed by a signal (a
    code above 128: the OOM killer, a lost container) before one that exited on its own
    (a peer's collective error follows a rank's death), then the lowest rank; disrupted
    when any pod carries DisruptionTarget."""
    disrupted = [pod for pod in pods if _has_condition(pod, "DisruptionTarget")]
    exits = [
        (code == STOPPED_EXIT_CODE, _finished_at(pod), code <= 128, _rank(pod) or 0, code, pod)
        for pod in pods
        if (code := _exit_code(pod)) not in (None, 0)
    ]
    if exits:
        *_, code, pod = min(exits, key=lambda item: item[:4])
        return RankFailure(_rank(pod), code, bool(disrupted))
    if disrupted:
        return RankFailure(_rank(disrupted[0]), None, True)
    return RankFailure(None, None, False)


def _exit_code(pod: dict[str, Any]) -> int | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") != CONTAINER:
            continue
        terminated = (container.get("state") or {}).get("terminated") or {}
        code = terminated.get("exitCode")
        return int(code) if isinstance(code, int) else None
    return None


def _finished_at(pod: dict[str, Any]) -> str:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("finishedAt"):
            return str(terminated["finishedAt"])
    return "~"  # sorts after every timestamp


def _rank(pod: dict[str, Any]) -> int | None:
    value = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX)
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _has_condition(pod: dict[str, Any], kind: str) -> bool:
    return any(
        condition.get("type") == kind and condition.get("status") == "True"
        for condition in (pod.get("status") or {}).get("conditions") or []
    )
