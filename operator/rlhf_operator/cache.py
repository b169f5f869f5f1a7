"""What the operator knows of the cluster without asking: watch-backed views.

Kopf indexes (one watch per kind) keep the batch Jobs and pods the operator made, and
the training jobs themselves, in memory. A reconcile reads them instead of calling the
API, which on a cluster with a thousand jobs is most of what the operator would
otherwise send (bench/operator_scale.py: `get jobs` and `list pods` were ~90% of its
idle requests). Only the fields a reconcile reads are kept, so a thousand cached jobs
cost a few megabytes, not the hundreds a full copy with `managedFields` would.

A view may lag the cluster by one event. Every reader tolerates that: a Job missing from
the view right after it was created is read from the API, status writes carry a
resourceVersion precondition (a stale body gets a 409 and a fresh read), and creating a
child that exists already is a no-op (409).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .api import KINDS, KINDS_BY_NAME, KindInfo, ManifestError, parse_manifest
from .inputs import upstreams
from .runpolicy import SYNCED_FIELDS

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

Key = tuple[str, ...]
Lookup = Mapping[Any, Iterable[Any]]
"""A Kopf index: key -> the values of every object filed under it."""

DEPENDENT_PHASES = (None, "Waiting", "Pending")
"""Phases in which a job may still wait for an upstream (and so must be woken)."""


def trim_batch_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a batch Job that status observation and spec syncing read."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            **_ownership(metadata),
        },
        "spec": {key: spec[key] for key in (*SYNCED_FIELDS, "parallelism") if key in spec},
        "status": _plain(body.get("status") or {}),
    }


def _ownership(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What tells whose an object is, and whether it is going (ownership.py reads it)."""
    kept: dict[str, Any] = {}
    controller = [
        {key: reference.get(key) for key in ("kind", "name", "uid", "controller")}
        for reference in metadata.get("ownerReferences") or []
        if reference.get("controller")
    ]
    if controller:
        kept["ownerReferences"] = controller
    for key in ("deletionTimestamp", "finalizers"):
        if metadata.get(key):
            kept[key] = _plain(metadata[key])
    return kept


def trim_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a training pod that status observation reads: phase, address, exits,
    and why it has not started (whether it is scheduled, or why not; what its containers
    wait for, with their image; its uid, to read its Events); whether it was disrupted
    (DisruptionTarget: a multi-node group restart after it is not counted)."""
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    annotations = metadata.get("annotations") or {}
    trimmed: dict[str, Any] = {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "creationTimestamp": metadata.get("creationTimestamp"),
            **{
                key: value
                for key, value in _ownership(metadata).items()
                if key in ("ownerReferences", "deletionTimestamp")
            },
            "annotations": (
                {COMPLETION_INDEX: annotations[COMPLETION_INDEX]}
                if COMPLETION_INDEX in annotations
                else {}
            ),
        },
        "status": {
            "phase": status.get("phase"),
            "containerStatuses": [
                _trim_container(container) for container in status.get("containerStatuses") or []
            ],
        },
    }
    if status.get("podIP"):
        trimmed["status"]["podIP"] = status["podIP"]
    if status.get("reason") == "Evicted":  # scratch.py: evicted for its own disk use?
        trimmed["status"]["reason"] = status["reason"]
        trimmed["status"]["message"] = str(status.get("message") or "")[:1000]
    scheduled = [
        {key: condition[key] for key in ("type", "status", "reason", "message") if key in condition}
        for condition in status.get("conditions") or []
        if condition.get("type") in ("PodScheduled", "DisruptionTarget")
    ]
    if scheduled:
        trimmed["status"]["conditions"] = scheduled
    waiting_init = [
        _trim_container(container)
        for container in status.get("initContainerStatuses") or []
        if (container.get("state") or {}).get("waiting")
    ]
    if waiting_init:
        trimmed["status"]["initContainerStatuses"] = waiting_init
    return trimmed


def _trim_container(container: Mapping[str, Any]) -> dict[str, Any]:
    """A container's name, restarts, exit (with its termination message) or what it waits
    for (reason, message and image); nothing of a running one."""
    state = container.get("state") or {}
    trimmed: dict[str, Any] = {
        "name": container.get("name"),
        "restartCount": container.get("restartCount", 0),
        "state": {},
    }
    if state.get("terminated"):
        trimmed["state"] = {"terminated": _plain(state["terminated"])}
    elif state.get("waiting"):
        waiting = state["waiting"]
        trimmed["state"] = {
            "waiting": {key: waiting[key] for key in ("reason", "message") if key in waiting}
        }
        trimmed["image"] = container.get("image")
    return trimmed


def trim_training_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """A training job as the API returns it, less what no reconcile reads.

    `managedFields` and kubectl's last-applied copy of the manifest are most of a small
    object's size; everything the models parse stays.
    """
    metadata = dict(body.get("metadata") or {})
    metadata.pop("managedFields", None)
    annotations = {
        key: value
        for key, value in (metadata.get("annotations") or {}).items()
        if key != LAST_APPLIED
    }
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    trimmed = {key: _plain(value) for key, value in body.items() if key != "metadata"}
    trimmed["metadata"] = _plain(metadata)
    return trimmed


def upstream_keys(body: Mapping[str, Any]) -> list[Key]:
    """(namespace, kind, name) of each job this one still waits for; none once it started.

    A job that has started (or ended) never waits again, so it leaves the dependents
    index; a spec the models refuse has no upstreams to wait for.
    """
    if (body.get("status") or {}).get("phase") not in DEPENDENT_PHASES:
        return []
    try:
        job = parse_manifest(dict(body))
    except ManifestError:
        return []
    namespace = job.metadata.namespace or ""
    return [(namespace, upstream.kind, upstream.name) for upstream in upstreams(job)]


def _plain(value: Any) -> Any:
    """A deep copy in plain dicts and lists (Kopf hands out read-only mapping views)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _values(lookup: Lookup, key: Any) -> list[Any]:
    """Copy one index entry; the event loop may change it while a handler thread reads."""
    for _ in range(5):
        try:
            return list(lookup[key]) if key in lookup else []
        except (KeyError, RuntimeError):  # emptied or resized while we read
            continue
    return []


@dataclass(frozen=True)
class ClusterView:
    """The cached objects one reconcile may read, built per handler call from the index
    keyword arguments Kopf passes to every handler (``view_from_indexes``)."""

    batch_jobs: Lookup
    pods: Lookup
    training_jobs: Mapping[str, Lookup]
    dependents_by_kind: Mapping[str, Lookup]
    workloads: Lookup = field(default_factory=dict)
    """Kueue's Workloads by (namespace, uid of their Job): queueing.trim_workload."""

    def batch_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Job as last seen; None when the watch has not seen it (yet)."""
        found = _values(self.batch_jobs, (namespace, name))
        return dict(found[0]) if found else None

    def pods_of(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        return [dict(pod) for pod in _values(self.pods, (namespace, job_name))]

    def training_job(self, info: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
        """A training job as last seen (it may be one event behind; see the module doc)."""
        found = _values(self.training_jobs[info.kind], (namespace, name))
        return dict(found[0]) if found else None

    def workload_of(self, namespace: str, job_uid: str) -> dict[str, Any] | None:
        """The Workload Kueue made for the Job with this uid; None before it made one
        (or where Kueue is not installed)."""
        found = _values(self.workloads, (namespace, job_uid))
        return dict(found[0]) if found else None

    def dependents(self, namespace: str, kind: str, name: str) -> list[tuple[KindInfo, str]]:
        """The jobs still waiting for this one, as (kind, name)."""
        found = {
            (info.kind, dependent)
            for info in KINDS
            for dependent in _values(self.dependents_by_kind[info.kind], (namespace, kind, name))
        }
        return [(KINDS_BY_NAME[k], n) for k, n in sorted(found)]


BATCH_JOBS_INDEX = "rlhf_batch_jobs"
PODS_INDEX = "rlhf_pods"
WORKLOADS_INDEX = "rlhf_workloads"


def training_jobs_index(info: KindInfo) -> str:
    return f"rlhf_{info.stage}_jobs"


def dependents_index(info: KindInfo) -> str:
    return f"rlhf_{info.stage}_dependents"


def view_from_indexes(indexes: Mapping[str, Any]) -> ClusterView:
    """A view over the indexes Kopf passes to every handler as keyword arguments."""
    return ClusterView(
        batch_jobs=indexes[BATCH_JOBS_INDEX],
        pods=indexes[PODS_INDEX],
        training_jobs={info.kind: indexes[training_jobs_index(info)] for info in KINDS},
        dependents_by_kind={info.kind: indexes[dependents_index(info)] for info in KINDS},
        workloads=indexes.get(WORKLOADS_INDEX, {}),
    )
