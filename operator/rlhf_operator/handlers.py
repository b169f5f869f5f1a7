"""Kopf handlers: thin. Each one picks the job an event concerns and calls reconcile.

The operator is level-triggered: every event on a training job, its batch Job or its
pods reconciles the job from what is (the cached world and the job's status), never
from what changed. So Kopf keeps no state on our objects (no annotations, no
finalizers), a missed event costs nothing but a timer tick, and a restarted operator
simply reconciles everything it lists. Reads come from watch-backed indexes
(`cache.py`); the API sees only writes and the rare read a cache cannot answer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from . import cache, kube, metrics, queueing
from .api import GROUP, KINDS, KINDS_BY_NAME, VERSION, KindInfo
from .reconcile import WRITTEN, reconcile
from .resources.names import MANAGED_BY
from .serialize import OnePerKey
from .settings import OperatorSettings
from .status import TERMINAL_PHASES

SETTINGS = OperatorSettings.from_environment()
OURS = {"app.kubernetes.io/managed-by": MANAGED_BY}
log = logging.getLogger("rlhf_operator")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Kopf records nothing on our objects today (no changing handlers, no finalizer);
    # should it ever, annotations: our strict status schema refuses `status.kopf`.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="rlhf.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="rlhf.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # we post our own, well-worded events
    settings.peering.lifetime = int(os.environ.get("RLHF_PEERING_LIFETIME_SECONDS", "60"))
    # Each reconcile makes a few blocking API calls: with the default pool (cores + 4
    # threads) a burst of new jobs queues behind them (bench/operator_scale.py).
    settings.execution.max_workers = SETTINGS.workers
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    kube.connect(connections=SETTINGS.workers)


ONE_AT_A_TIME = OnePerKey()


def _reconcile(info: KindInfo, body: dict[str, Any], view: cache.ClusterView) -> str | None:
    """Reconcile now, or fold into the reconcile of this job already running."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]

    def work(rerun: bool) -> str | None:
        current = view.training_job(info, namespace, name) if rerun else body
        return _reconcile_once(info, current, view) if current is not None else None

    return ONE_AT_A_TIME.run((info.kind, namespace, name), work)


def _reconcile_once(info: KindInfo, body: dict[str, Any], view: cache.ClusterView) -> str | None:
    try:
        return reconcile(info, body, SETTINGS, view)
    except kube.Conflict as error:
        raise kopf.TemporaryError(f"{error} keeps changing; retrying", delay=1) from error
    except ApiException as error:
        raise kopf.TemporaryError(
            f"Kubernetes API: {error.status} {error.reason}", delay=5
        ) from error


def _wake_dependents(view: cache.ClusterView, kind: str, namespace: str, name: str) -> None:
    """Jobs waiting for this one look again now, not at their next timer tick."""
    for info, dependent_name in view.dependents(namespace, kind, name):
        dependent = view.training_job(info, namespace, dependent_name)
        if dependent is not None:
            try:
                _reconcile(info, dependent, view)
            except kopf.TemporaryError as error:
                log.warning("waking %s/%s: %s", info.kind, dependent_name, error)


def _running(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") == "Running"


def _idle(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in (*TERMINAL_PHASES, "Running")


SAFETY_NET_FACTOR = 6
"""Waiting, pending and suspended jobs change on events (their upstream ends, their Job
or pods change, their spec is edited); their timer is only a safety net (and the retry
of a reconcile that failed), so it runs this many times less often than the progress
poll of running jobs."""


def _register(info: KindInfo) -> None:
    resource = (GROUP, VERSION, info.plural)

    async def index_job(body: kopf.Body, namespace: str, name: str, **_: Any) -> Any:
        return {(namespace, name): cache.trim_training_job(body)}

    async def index_dependent(body: kopf.Body, name: str, **_: Any) -> Any:
        return {key: name for key in cache.upstream_keys(body)}

    def on_event(type: str | None, body: kopf.Body, **indexes: Any) -> None:
        view = cache.view_from_indexes(indexes)
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        if type == "DELETED":
            metrics.record_phase(info.kind, namespace, name, None)
            WRITTEN.forget((info.kind, namespace, name))
            _wake_dependents(view, info.kind, namespace, name)
            return
        _reconcile(info, dict(body), view)
        # Dependents read this job from the index, which holds this event's body: wake
        # them when it shows the end (the reconcile that wrote it ran on an older one).
        if type == "ADDED" or (body.get("status") or {}).get("phase") in TERMINAL_PHASES:
            _wake_dependents(view, info.kind, namespace, name)

    def on_timer(body: kopf.Body, **indexes: Any) -> None:
        _reconcile(info, dict(body), cache.view_from_indexes(indexes))

    kopf.index(*resource, id=cache.training_jobs_index(info))(index_job)
    kopf.index(*resource, id=cache.dependents_index(info))(index_dependent)
    kopf.on.event(*resource, id=f"{info.stage}-event")(on_event)
    kopf.timer(
        *resource,
        id=f"{info.stage}-progress",
        interval=SETTINGS.recheck_seconds,
        initial_delay=SETTINGS.recheck_seconds,
        when=_running,
    )(on_timer)
    kopf.timer(
        *resource,
        id=f"{info.stage}-recheck",
        interval=SETTINGS.recheck_seconds * SAFETY_NET_FACTOR,
        initial_delay=SETTINGS.recheck_seconds,
        when=_idle,
    )(on_timer)


for _info in KINDS:
    _register(_info)


TIMER_IDS = tuple(f"{info.stage}-" for info in KINDS)


def _timers_without_finalizer(registry: kopf.OperatorRegistry) -> bool:
    """Kopf puts a finalizer on every object with a timer, to stop the timer before the
    object goes. Ours need no goodbye (a reconcile of a deleted job meets a 404 and
    stops), and the finalizer costs: two more writes per job (at 500 jobs at once about
    half of Kopf's were refused with a 422, racing our status writes) and, once the
    operator is uninstalled, jobs that hang in Terminating forever.

    Kopf has no public switch for this, so it is flipped on our timer handlers; if a
    Kopf release moves the internals, timers keep their finalizer and a warning says so
    (tests/cluster/test_operator.py checks that jobs carry no finalizer).
    Kopf also removes the finalizer it added to existing jobs in older releases.
    """
    spawning = getattr(registry, "_spawning", None)
    handlers = getattr(spawning, "_handlers", None)
    if not isinstance(handlers, list):
        log.warning("this Kopf release keeps a finalizer on every job (timers)")
        return False
    handlers[:] = [
        dataclasses.replace(handler, requires_finalizer=False)
        if getattr(handler, "requires_finalizer", None) and handler.id.startswith(TIMER_IDS)
        else handler
        for handler in handlers
    ]
    return True


_timers_without_finalizer(kopf.get_default_registry())


@kopf.index("batch", "v1", "jobs", labels=OURS, id=cache.BATCH_JOBS_INDEX)
async def index_batch_job(body: kopf.Body, namespace: str, name: str, **_: Any) -> Any:
    return {(namespace, name): cache.trim_batch_job(body)}


@kopf.index("v1", "pods", labels=OURS, id=cache.PODS_INDEX)
async def index_pod(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> Any:
    job_name = labels.get(cache.JOB_NAME_LABEL)
    return {(namespace, job_name): cache.trim_pod(body)} if job_name else None


def _reconcile_owner(body: kopf.Body, indexes: dict[str, Any]) -> None:
    """A child changed (a Job started or ended, a pod ran or exited): update its owner."""
    labels = body["metadata"].get("labels") or {}
    info = KINDS_BY_NAME.get(labels.get("rlhf.dev/kind", ""))
    if info is None:
        return
    view = cache.view_from_indexes(indexes)
    owner = view.training_job(info, body["metadata"]["namespace"], labels.get("rlhf.dev/job", ""))
    if owner is None or (owner.get("status") or {}).get("phase") in TERMINAL_PHASES:
        return
    try:
        _reconcile(info, owner, view)
    except kopf.TemporaryError as error:
        log.warning("updating %s/%s: %s", info.kind, owner["metadata"]["name"], error)


@kopf.on.event("batch", "v1", "jobs", labels=OURS)
def on_batch_job(body: kopf.Body, **indexes: Any) -> None:
    _reconcile_owner(body, indexes)


# Kueue's Workloads (queueing.py), at the version the cluster prefers. Where Kueue is not
# installed Kopf logs once that the resource is unresolved, and starts watching it when
# the CRD appears. Workloads carry no label of ours: each is matched to its Job by the
# uid label Kueue puts on it.
@kopf.index(queueing.GROUP, queueing.WORKLOADS, id=cache.WORKLOADS_INDEX)
async def index_workload(body: kopf.Body, namespace: str, **_: Any) -> Any:
    job_uid = queueing.job_uid_of(body)
    return {(namespace, job_uid): queueing.trim_workload(body)} if job_uid else None


@kopf.on.event(queueing.GROUP, queueing.WORKLOADS)
def on_workload(body: kopf.Body, namespace: str, **indexes: Any) -> None:
    """Kueue admitted, evicted or reconsidered a Workload: update the job of its Job."""
    for reference in body["metadata"].get("ownerReferences") or []:
        if reference.get("kind") != "Job" or not reference.get("controller"):
            continue
        view = cache.view_from_indexes(indexes)
        batch_job = view.batch_job(namespace, reference.get("name", ""))
        if batch_job is None or batch_job["metadata"].get("uid") != reference.get("uid"):
            continue  # not one of ours
        owner = next((ref for ref in batch_job["metadata"].get("ownerReferences") or []), None)
        info = KINDS_BY_NAME.get((owner or {}).get("kind", ""))
        job = view.training_job(info, namespace, owner["name"]) if info and owner else None
        if info is None or job is None:
            continue
        if (job.get("status") or {}).get("phase") in TERMINAL_PHASES:
            continue
        try:
            _reconcile(info, job, view)
        except kopf.TemporaryError as error:
            log.warning("updating %s/%s: %s", info.kind, job["metadata"]["name"], error)


@kopf.on.event("v1", "pods", labels=OURS)
def on_pod(body: kopf.Body, **indexes: Any) -> None:
    _reconcile_owner(body, indexes)
