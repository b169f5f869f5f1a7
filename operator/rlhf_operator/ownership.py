"""Whose is a child? Pure decisions on objects as the apiserver returns them.

A child is recognised by the uid in its controller owner reference, as
``metav1.IsControlledBy`` does, never by its name alone: a job deleted and re-created
under the same name (the documented way to change a fixed field) finds the old job's
children still there until the garbage collector removes them, with the same names. Using
one would be adopting another run: its Job may have Succeeded already (the new job would
report a result it never trained), its ConfigMap and claim are about to go.

So a same-named child that is controlled by someone else, owned by nobody, or being
deleted makes the job wait (``Leftover``: a condition and an Event saying which child
and why) until it is gone; the job never adopts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .api import TrainingJob, kind_info

OWNED_BY_ANOTHER = "ChildOwnedByAnother"
"""Waiting reason: a child's name is taken by an object that is not this job's."""
BEING_DELETED = "ChildBeingDeleted"
"""Waiting reason: a child (of this job or not) is being deleted."""
LEFTOVER_REASONS = (OWNED_BY_ANOTHER, BEING_DELETED)


@dataclass(frozen=True)
class Owner:
    """The job children must be controlled by."""

    kind: str
    namespace: str
    name: str
    uid: str


def owner_of(job: TrainingJob) -> Owner:
    return Owner(
        kind_info(job).kind,
        job.metadata.namespace or "",
        job.metadata.name,
        job.metadata.uid or "",
    )


@dataclass(frozen=True)
class Leftover:
    """A child in the way, and why the job waits for it."""

    reason: str
    message: str


def controller_of(child: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference with ``controller: true`` (at most one is allowed)."""
    for reference in (child.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("controller"):
            return reference  # type: ignore[no-any-return]
    return None


def is_controlled_by(child: Mapping[str, Any], uid: str) -> bool:
    """``metav1.IsControlledBy``: the controller reference names this uid."""
    reference = controller_of(child)
    return bool(uid) and reference is not None and reference.get("uid") == uid


def is_being_deleted(child: Mapping[str, Any]) -> bool:
    return bool((child.get("metadata") or {}).get("deletionTimestamp"))


def has_finished(batch_job: Mapping[str, Any]) -> bool:
    """A batch Job with a Complete or Failed condition: its result is final."""
    return any(
        condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True"
        for condition in (batch_job.get("status") or {}).get("conditions") or []
    )


def leftover(
    owner: Owner,
    kind: str,
    child: Mapping[str, Any] | None,
    *,
    unowned_is_ours: bool = False,
    usable_while_deleted: bool = False,
) -> Leftover | None:
    """None when ``child`` (of ``kind``) is this job's to use, or absent; else why to wait.

    ``unowned_is_ours``: an object with no controller but this job's labels is ours (an
    output claim kept by ``output.retain``, which carries no owner reference).
    ``usable_while_deleted``: a child of ours being deleted may still be read (a finished
    batch Job the TTL controller removes: its result stands).
    """
    if child is None:
        return None
    metadata = child.get("metadata") or {}
    where = f"{kind} {metadata.get('namespace') or owner.namespace}/{metadata.get('name')}"
    reference = controller_of(child)
    ours = is_controlled_by(child, owner.uid) or (
        reference is None and unowned_is_ours and _labelled_for(child, owner)
    )
    deleting = is_being_deleted(child)
    if ours:
        if deleting and not usable_while_deleted:
            return Leftover(
                BEING_DELETED,
                f"{where}{_deleting(child)}: waiting for it to go before creating it again",
            )
        return None
    if reference is not None and (reference.get("kind"), reference.get("name")) == (
        owner.kind,
        owner.name,
    ):
        # Same kind and name, another uid: an earlier job of this name, deleted (two
        # objects of one name cannot exist at once), whose children the garbage collector
        # has not removed yet.
        return Leftover(
            BEING_DELETED if deleting else OWNED_BY_ANOTHER,
            f"{where}{_deleting(child)} still belongs to a deleted {owner.kind}"
            f" (uid {reference.get('uid')}); waiting for "
            + ("it to go" if deleting else "the garbage collector"),
        )
    if deleting:
        return Leftover(BEING_DELETED, f"{where}{_deleting(child)}: waiting for it to go")
    if reference is not None:
        return Leftover(
            OWNED_BY_ANOTHER,
            f"{where} belongs to {reference.get('kind')} {reference.get('name')}"
            f" (uid {reference.get('uid')}), not to this {owner.kind}; delete it, or re-create"
            " this job under another name",
        )
    if kind == "PersistentVolumeClaim" and _labelled_for(child, owner):
        return Leftover(
            OWNED_BY_ANOTHER,
            f"{where} is the output of an earlier {owner.kind} {owner.name} kept by"
            " output.retain; delete it, or re-create this job with output.retain: true to"
            " write into it",
        )
    return Leftover(
        OWNED_BY_ANOTHER,
        f"{where} exists and no {owner.kind} owns it; delete it, or re-create this job under"
        " another name",
    )


def leftover_pods(
    owner: Owner, job_name: str, pods: Iterable[Mapping[str, Any]], job_uid: str | None
) -> Leftover | None:
    """A pod labelled with the Job's name but controlled by another Job (an earlier one of
    this name, deleted by hand or with an earlier job): it may still write to the output
    claim for its grace period, so a new Job waits for it to go.

    ``job_uid``: the uid of this job's own batch Job, None while there is none.
    """
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name") or ""):
        reference = controller_of(pod)
        if job_uid is not None and reference is not None and reference.get("uid") == job_uid:
            continue
        metadata = pod.get("metadata") or {}
        earlier = f" of an earlier Job {job_name}" if reference is not None else ""
        uid = f" (uid {reference.get('uid')})" if reference is not None else ""
        state = "is still terminating" if is_being_deleted(pod) else "still exists"
        return Leftover(
            BEING_DELETED if is_being_deleted(pod) else OWNED_BY_ANOTHER,
            f"Pod {metadata.get('namespace') or owner.namespace}/{metadata.get('name')}"
            f"{earlier}{uid} {state}; waiting for it to go before starting this job's pods",
        )
    return None


def _labelled_for(child: Mapping[str, Any], owner: Owner) -> bool:
    labels = (child.get("metadata") or {}).get("labels") or {}
    return labels.get("rlhf.dev/job") == owner.name and labels.get("rlhf.dev/kind") == owner.kind


def _deleting(child: Mapping[str, Any]) -> str:
    """ " (being deleted, finalizers: a, b)" for an object being deleted, else ""."""
    if not is_being_deleted(child):
        return ""
    finalizers = (child.get("metadata") or {}).get("finalizers") or []
    held = f", finalizers: {', '.join(finalizers)}" if finalizers else ""
    return f" (being deleted{held})"
