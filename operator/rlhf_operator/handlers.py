"""Kopf handlers: thin. Each one reads the event, calls reconcile, and lets Kopf retry
on API errors. All decisions live in chaining, status and resources."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from . import kube, metrics
from .api import GROUP, KINDS, KINDS_BY_NAME, VERSION, KindInfo
from .reconcile import dependents, reconcile
from .resources.names import MANAGED_BY
from .settings import OperatorSettings
from .status import TERMINAL_PHASES

SETTINGS = OperatorSettings.from_environment()
log = logging.getLogger("rlhf_operator")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our status schema is strict: keep Kopf's own bookkeeping in annotations.
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
    kube.connect()


def _reconcile_event(info: KindInfo, body: kopf.Body) -> None:
    try:
        phase = reconcile(info, dict(body), SETTINGS)
    except kube.Conflict as error:
        raise kopf.TemporaryError(f"{error} keeps changing; retrying", delay=1) from error
    except ApiException as error:
        raise kopf.TemporaryError(
            f"Kubernetes API: {error.status} {error.reason}", delay=5
        ) from error
    if phase in TERMINAL_PHASES:
        _wake_dependents(info, body)


def _wake_dependents(info: KindInfo, body: kopf.Body) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    for dependent_info, dependent in dependents(namespace, info.kind, name):
        reconcile(dependent_info, dependent, SETTINGS)


def _running(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") == "Running"


def _idle(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in (*TERMINAL_PHASES, "Running")


SAFETY_NET_FACTOR = 6
"""Waiting, pending and suspended jobs change on events (their upstream ends, their Job
or pods change, their spec is edited); their timer is only a safety net, so it runs
this many times less often than the progress poll of running jobs."""


def _register(info: KindInfo) -> None:
    resource = (GROUP, VERSION, info.plural)

    def on_change(body: kopf.Body, **_: Any) -> None:
        _reconcile_event(info, body)

    def on_timer(body: kopf.Body, **_: Any) -> None:
        _reconcile_event(info, body)

    def on_delete(body: kopf.Body, **_: Any) -> None:
        metrics.record_phase(
            info.kind, body["metadata"]["namespace"], body["metadata"]["name"], None
        )

    kopf.on.resume(*resource, id=f"{info.stage}-resume")(on_change)
    kopf.on.create(*resource, id=f"{info.stage}-create")(on_change)
    kopf.on.update(*resource, id=f"{info.stage}-update", field="spec")(on_change)
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
    kopf.on.delete(*resource, id=f"{info.stage}-forget", optional=True)(on_delete)


for _info in KINDS:
    _register(_info)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def on_batch_job(body: kopf.Body, **_: Any) -> None:
    """A training Job changed (started, finished): update its owner at once."""
    labels = body["metadata"].get("labels") or {}
    info = KINDS_BY_NAME.get(labels.get("rlhf.dev/kind", ""))
    if info is None:
        return
    owner = kube.get_job(info, body["metadata"]["namespace"], labels.get("rlhf.dev/job", ""))
    if owner is not None and (owner.get("status") or {}).get("phase") not in TERMINAL_PHASES:
        try:
            _reconcile_event(info, owner)  # type: ignore[arg-type]
        except kopf.TemporaryError:
            pass  # the owner's own timer retries
