"""A job with ``queueName`` and Kueue: who owns suspend, and what the queue says. Pure.

Kueue (batch/job integration) makes a Workload for the Job (it carries the label
``kueue.x-k8s.io/job-uid`` and is controlled by the Job) and from then on owns
``Job.spec.suspend``: it unsuspends the Job when its scheduler admits the Workload and
suspends it when the Workload is evicted; a Job suspended by anyone else while its Workload
is admitted is unsuspended again. So the operator creates a queued Job suspended and never
writes its ``spec.suspend`` afterwards. A user's ``runPolicy.suspend`` goes through Kueue's
own switch instead, the Workload's ``spec.active`` (what ``kueuectl stop workload`` and
``kueuectl resume workload`` set): ``active: false`` evicts the Workload (reason
``Deactivated``), Kueue suspends the Job (its pods get SIGTERM and the grace period to write
a checkpoint) and frees the quota for the next workload; ``active: true`` queues it again,
and it runs when it is admitted.

Status shows Kueue's view: the Workload's ``QuotaReserved``, ``Admitted`` and ``Evicted``
conditions say whether it is admitted, or why it waits (``couldn't assign flavors to pod
set main: insufficient unused quota for cpu in flavor default, 1 more needed``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .api import TrainingJob

GROUP = "kueue.x-k8s.io"
WORKLOADS = "workloads"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
"""The label Kueue puts on the Workload of a Job: the Job's uid."""
CONDITIONS = ("QuotaReserved", "Admitted", "Evicted", "Finished")


def trim_workload(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a reconcile reads of a Workload: where to patch it, ``spec.active``, the
    queueing conditions and the ClusterQueue that admitted it."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")},
        "spec": {"active": spec.get("active", True)},
        "status": {
            "conditions": [
                {key: condition.get(key) for key in ("type", "status", "reason", "message")}
                for condition in status.get("conditions") or []
                if condition.get("type") in CONDITIONS
            ],
            "clusterQueue": (status.get("admission") or {}).get("clusterQueue"),
        },
    }


def job_uid_of(body: Mapping[str, Any]) -> str | None:
    """The uid of the Job a Workload is for (Kueue's label), None for other workloads."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    uid = labels.get(JOB_UID_LABEL)
    return str(uid) if uid else None


def is_active(workload: Mapping[str, Any]) -> bool:
    return (workload.get("spec") or {}).get("active", True) is not False


def active_patch(job: TrainingJob, workload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch of the Workload that applies ``runPolicy.suspend`` (None: in step)."""
    wanted = not job.spec.run_policy.suspend
    return None if is_active(workload) == wanted else {"spec": {"active": wanted}}


def _condition(workload: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for condition in (workload.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def is_admitted(workload: Mapping[str, Any]) -> bool:
    return _condition(workload, "Admitted").get("status") == "True"


def queue_message(queue_name: str, workload: Mapping[str, Any] | None) -> str:
    """Why a queued job's Job is suspended, in Kueue's words."""
    prefix = f"queued in {queue_name}"
    if workload is None:
        return f"{prefix}: waiting for Kueue to make its Workload"
    if not is_active(workload):
        return f"{prefix}: its Workload is deactivated"
    if is_admitted(workload):
        cluster_queue = (workload.get("status") or {}).get("clusterQueue")
        where = f" by ClusterQueue {cluster_queue}" if cluster_queue else ""
        return f"{prefix}: admitted{where}, starting"
    evicted = _condition(workload, "Evicted")
    reserved = _condition(workload, "QuotaReserved")
    if reserved.get("status") == "False" and reserved.get("message"):
        return f"{prefix}: {reserved['message']}"
    if evicted.get("status") == "True" and evicted.get("message"):
        return f"{prefix}: evicted: {evicted['message']}"
    if reserved.get("status") == "True":
        return f"{prefix}: quota reserved, waiting for its admission checks"
    return f"{prefix}: waiting for admission"
