"""Why a job's training pods have not started, and whether they have waited too long.

Pure functions over the batch Job and its pods as the cache keeps them (cache.py), plus
the Warning Events the kubelet and controllers post about a pod or the Job: a volume that
cannot be mounted (FailedMount), a ReadWriteOnce claim held on another node
(FailedAttachVolume: "Multi-Attach error ..."), pods the Job controller may not create
(FailedCreate: a quota, a Pod Security level) never show in a pod's status. reconcile.py
reads those Events, only for what ``event_subjects`` names, and passes them in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

STARTING = frozenset({"ContainerCreating", "PodInitializing"})
"""Container waiting reasons of a pod that is simply starting."""
IMAGE_PROBLEMS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
"""Container waiting reasons about the image: the message names the image."""
SAME_PROBLEM = {"ImagePullBackOff": "ErrImagePull"}
"""The kubelet alternates ErrImagePull and ImagePullBackOff on every retry: one problem."""
EVENTS_AFTER_SECONDS = 10
"""A pod still being created (or a Job still without pods) this long has its Warning Events
read: sooner, almost every pod is just starting."""
MULTI_ATTACH_HINT = (
    " (a ReadWriteOnce claim is attached to another node, where another pod uses it: give"
    " the claim ReadOnlyMany or ReadWriteMany, e.g. the upstream's spec.output.accessModes,"
    " or run the jobs that read it one after another)"
)
"""Said after a Multi-Attach error: which claim it is, the pod's volumes tell."""
MESSAGE_LIMIT = 1000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PodWait:
    """Why the training pods wait: a CamelCase reason and a message naming the pod."""

    reason: str
    message: str
    problem: bool = True
    """False for a pod that is just being created (no Warning, no Event)."""

    def same_as(self, reason: str | None) -> bool:
        """Whether ``reason`` (a previous one) names the same problem."""
        return SAME_PROBLEM.get(self.reason, self.reason) == SAME_PROBLEM.get(reason or "", reason)


def job_is_active(batch_job: Mapping[str, Any]) -> bool:
    """The Job runs or should: neither suspended (by its user or a queue) nor finished."""
    if (batch_job.get("spec") or {}).get("suspend"):
        return False
    return not any(
        condition.get("type") in ("Complete", "Failed", "SuccessCriteriaMet", "FailureTarget")
        and condition.get("status") == "True"
        for condition in (batch_job.get("status") or {}).get("conditions") or []
    )


def why_pods_wait(
    batch_job: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    events: Mapping[str, list[dict[str, Any]]] | None = None,
) -> PodWait | None:
    """Why the pods of an active Job have not all started; None when none waits.

    A problem (not schedulable, image not pulled, a missing Secret key, a volume that does
    not mount) of any pod comes before a pod that is merely being created. ``events``:
    Warning Events by the uid of the object they are about (pod or Job).
    """
    events = events or {}
    pods = list(pods)
    if not pods:
        found = _newest(events.get(_uid(batch_job), []))
        if found is None:
            return None
        name = (batch_job.get("metadata") or {}).get("name")
        return PodWait(_reason(found.get("reason")), _short(f"Job {name}: {found.get('message')}"))
    starting = None
    for pod in sorted(pending_pods(pods), key=_order):
        wait = _pod_wait(pod, events.get(_uid(pod), []))
        if wait.problem:
            return wait
        starting = starting or wait
    return starting


def pending_pods(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods whose containers have not started yet (phase Pending)."""
    return [pod for pod in pods if (pod.get("status") or {}).get("phase") == "Pending"]


def waiting_since(
    batch_job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]
) -> datetime | None:
    """Since when the job has waited for a pod to start: the creation of its oldest pod
    still pending, or, while the Job has no pod at all, when the Job started (the Job
    controller sets that again when a suspended Job resumes). None: nothing waits."""
    pods = list(pods)
    if pods:
        created = [
            _time((pod.get("metadata") or {}).get("creationTimestamp"))
            for pod in pending_pods(pods)
        ]
        return min((stamp for stamp in created if stamp is not None), default=None)
    return _time((batch_job.get("status") or {}).get("startTime"))


def start_deadline_passed(
    batch_job: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    deadline_seconds: int,
    now: datetime,
) -> bool:
    """Whether an active Job's pods have waited to start for ``deadline_seconds`` or more."""
    if not job_is_active(batch_job):
        return False
    since = waiting_since(batch_job, pods)
    return since is not None and (now - since).total_seconds() >= deadline_seconds


def event_subjects(
    batch_job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], now: datetime
) -> list[str]:
    """The uid whose Warning Events may say why the job waits (at most one, to keep the
    API calls few): a Job without pods long after it started, or the first pod scheduled
    long ago and still being created, whose status says no more."""
    if not job_is_active(batch_job):
        return []
    pods = list(pods)
    if not pods:
        started = _time((batch_job.get("status") or {}).get("startTime"))
        old = started is not None and (now - started).total_seconds() >= EVENTS_AFTER_SECONDS
        return [_uid(batch_job)] if old and _uid(batch_job) else []
    for pod in sorted(pending_pods(pods), key=_order):
        created = _time((pod.get("metadata") or {}).get("creationTimestamp"))
        if created is None or (now - created).total_seconds() < EVENTS_AFTER_SECONDS:
            continue
        wait = _pod_wait(pod, [])
        if not wait.problem and _scheduled(pod) and _uid(pod):
            return [_uid(pod)]
    return []


def _pod_wait(pod: Mapping[str, Any], events: list[dict[str, Any]]) -> PodWait:
    name = (pod.get("metadata") or {}).get("name")
    status = pod.get("status") or {}
    unschedulable = next(
        (
            condition
            for condition in status.get("conditions") or []
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False"
        ),
        None,
    )
    if unschedulable is not None:
        why = _reason(unschedulable.get("reason"), "Unschedulable")
        return PodWait(why, _short(f"pod {name}: {unschedulable.get('message') or why}"))
    if not _scheduled(pod):
        return PodWait("NotScheduled", f"pod {name}: waiting for a scheduler to place it", False)
    for container in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if not reason or reason in STARTING:
            continue
        detail = str(waiting.get("message") or reason)
        image = container.get("image")
        if reason in IMAGE_PROBLEMS and image and image not in detail:
            detail = f'image "{image}": {detail}'
        where = f"pod {name}, container {container.get('name')}"
        return PodWait(_reason(reason), _short(f"{where}: {detail}"))
    found = _newest(events)
    if found is not None:
        message = f"pod {name}: {found.get('message')}"
        if "Multi-Attach" in message:
            message += MULTI_ATTACH_HINT
        return PodWait(_reason(found.get("reason")), _short(message))
    return PodWait(
        "ContainerCreating", f"pod {name}: creating its containers (image pull, volumes)", False
    )


def _scheduled(pod: Mapping[str, Any]) -> bool:
    return any(
        condition.get("type") == "PodScheduled" and condition.get("status") == "True"
        for condition in (pod.get("status") or {}).get("conditions") or []
    )


def _newest(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The most recent Warning Event (by last time seen)."""
    warnings = [event for event in events if event.get("type", "Warning") == "Warning"]
    return max(warnings, key=lambda event: _time(event.get("lastSeen")) or EPOCH, default=None)


def _order(pod: Mapping[str, Any]) -> tuple[int, str]:
    """Node rank 0 first, then by name: the same pod is reported every time."""
    metadata = pod.get("metadata") or {}
    index = (metadata.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
    rank = int(index) if isinstance(index, str) and index.isdigit() else 0
    return rank, str(metadata.get("name") or "")


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid") or "")


def _reason(text: Any, default: str = "PodsNotStarted") -> str:
    """A reason a status condition accepts (CamelCase letters, digits, _)."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "", str(text or ""))
    cleaned = re.sub(r"^[^A-Za-z]+", "", cleaned)[:128]
    return cleaned or default


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def _time(stamp: Any) -> datetime | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
