"""One reconcile of one job: read the world, start what is ready, report what is so.

Idempotent: running it twice, or from two places at once, or again after a crash
half-way, converges on the same children and status.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import kube, metrics, podwait
from .api import KINDS_BY_NAME, KindInfo, ManifestError, TrainingJob, parse_manifest
from .cache import ClusterView
from .chaining import Decision, decide
from .inputs import upstreams
from .resources import (
    batch_job,
    child_names,
    config_map,
    headless_service,
    output_claim,
    pod_trainer_config,
)
from .serialize import WrittenStatus
from .settings import OperatorSettings
from .status import TERMINAL_PHASES, observe, set_condition, stops_its_job

log = logging.getLogger("rlhf_operator")

WRITTEN = WrittenStatus()
"""Our last status write per job, until the watch delivers it (see serialize.py)."""


def reconcile(
    info: KindInfo, body: dict[str, Any], settings: OperatorSettings, view: ClusterView
) -> str | None:
    """Bring one job a step closer to done; returns its phase."""
    started = time.monotonic()
    metadata = body["metadata"]
    key = (info.kind, metadata["namespace"], metadata["name"])
    body = WRITTEN.freshest(key, body)
    try:
        for _ in range(5):
            try:
                phase = _reconcile(info, body, settings, view)
                break
            except kube.Conflict:
                WRITTEN.forget(key)
                fresh = kube.get_job(info, metadata["namespace"], metadata["name"])
                if fresh is None:
                    return None
                body = fresh
        else:
            raise kube.Conflict(metadata["name"])
    except ApiException:
        metrics.RECONCILE_ERRORS.labels(kind=info.kind).inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.labels(kind=info.kind).observe(time.monotonic() - started)
    metrics.record_phase(info.kind, metadata["namespace"], metadata["name"], phase)
    return phase


def _reconcile(
    info: KindInfo, body: dict[str, Any], settings: OperatorSettings, view: ClusterView
) -> str | None:
    namespace = body["metadata"]["namespace"]
    previous = dict(body.get("status") or {})
    finished = previous.get("phase") in TERMINAL_PHASES
    if finished and previous.get("observedGeneration") == body["metadata"].get("generation"):
        _stop_unstarted_job(namespace, previous, view)
        return str(previous["phase"])
    try:
        job = parse_manifest(body)
    except ManifestError as error:
        return _refuse(info, body, previous, error)

    names = child_names(job)
    found_job = view.batch_job(namespace, names.job)
    if found_job is None and previous.get("jobName"):
        # Created a moment ago, and the watch has not brought it yet.
        found_job = kube.get_batch_job(namespace, names.job)
    if found_job is None:
        # Nothing to read first: create straight away (a 409 says it exists after all).
        found = {
            u: view.training_job(KINDS_BY_NAME[u.kind], namespace, u.name) for u in upstreams(job)
        }
        decision = decide(job, found)
        if decision.readiness == "ready":
            found_job = _create_children(job, decision, settings)
            created = body["metadata"].get("creationTimestamp")
            if created:
                latency = datetime.now(UTC) - datetime.fromisoformat(created.replace("Z", "+00:00"))
                metrics.JOB_CREATE_SECONDS.labels(kind=info.kind).observe(latency.total_seconds())
    else:
        decision = Decision("ready")
        if not finished:  # a finished job's Job is never resumed or changed
            _sync_mutable_fields(job, found_job)
    pods = view.pods_of(namespace, names.job) if found_job is not None else []
    progress = _progress(pods, settings)
    events: dict[str, list[dict[str, Any]]] = {}
    if found_job is not None and not finished:
        for uid in podwait.event_subjects(found_job, pods, datetime.now(UTC)):
            events[uid] = kube.warning_events(namespace, uid)
    observation = observe(job, previous, decision, found_job, pods, progress, warning_events=events)
    if observation.status != previous:
        written = kube.patch_status(
            info,
            namespace,
            job.metadata.name,
            observation.status,
            resource_version=body["metadata"].get("resourceVersion"),
        )
        WRITTEN.remember((info.kind, namespace, job.metadata.name), written)
    _stop_unstarted_job(namespace, observation.status, view, found_job)
    for event_type, reason, message in observation.events:
        kube.post_event(info, body, event_type, reason, message)
    phase = observation.status.get("phase")
    if phase in TERMINAL_PHASES and previous.get("phase") != phase:
        _record_end(info, observation.status)
    return phase


def _create_children(
    job: TrainingJob, decision: Decision, settings: OperatorSettings
) -> dict[str, Any]:
    """ConfigMap, output claim, Service, then the Job (last: its pods need the rest)."""
    config = pod_trainer_config(job, decision.input_claims, settings)
    rendered_config = config_map(job, config)
    digest = hashlib.sha256(rendered_config["data"]["config.json"].encode()).hexdigest()[:16]
    for child in (rendered_config, output_claim(job, settings), headless_service(job)):
        if child is not None:
            kube.create(child)
    rendered_job = batch_job(job, settings, decision.input_claims, digest)
    if kube.create(rendered_job):
        log.info("created Job %s/%s", job.metadata.namespace, rendered_job["metadata"]["name"])
        return rendered_job
    existing = kube.get_batch_job(job.metadata.namespace or "", rendered_job["metadata"]["name"])
    return existing or rendered_job


def _sync_mutable_fields(job: TrainingJob, found_job: dict[str, Any]) -> None:
    """Suspension and the deadline can change while a job runs; apply them to the Job."""
    run_policy = job.spec.run_policy
    spec = found_job.get("spec") or {}
    patch: dict[str, Any] = {}
    queue_managed = job.spec.queue_name is not None and not run_policy.suspend
    wants_suspend = run_policy.suspend
    if (
        not queue_managed
        and bool(spec.get("suspend")) != wants_suspend
        and not _finished(found_job)
    ):
        patch["suspend"] = wants_suspend
    deadline = run_policy.active_deadline_seconds
    if deadline is not None and spec.get("activeDeadlineSeconds") != deadline:
        patch["activeDeadlineSeconds"] = deadline
    if patch:
        kube.patch_batch_job(
            found_job["metadata"]["namespace"], found_job["metadata"]["name"], {"spec": patch}
        )
        found_job["spec"] = {**spec, **patch}


STOPPED_DEADLINE_SECONDS = 1
"""activeDeadlineSeconds that stops the Job of a job whose pods did not start in time."""


def _stop_unstarted_job(
    namespace: str,
    status: dict[str, Any],
    view: ClusterView,
    found_job: dict[str, Any] | None = None,
) -> None:
    """The job failed because its pods did not start: make its Job fail too, so that it
    never starts them later (when a node frees up, an image appears, or a queue admits it).

    A Job past its activeDeadlineSeconds fails for good (reason DeadlineExceeded) and its
    pods are deleted; suspending it instead would leave it to be resumed (Kueue resumes
    the Jobs it admitted), and the operator deletes nothing (the garbage collector does).
    Written after the status, so the decision is recorded first; done again by every
    reconcile of the failed job until the Job shows it (idempotent).
    """
    if not stops_its_job(status) or not status.get("jobName"):
        return
    batch = found_job if found_job is not None else view.batch_job(namespace, status["jobName"])
    if batch is None or _finished(batch):
        return
    if (batch.get("spec") or {}).get("activeDeadlineSeconds") == STOPPED_DEADLINE_SECONDS:
        return
    kube.patch_batch_job(
        namespace,
        status["jobName"],
        {"spec": {"activeDeadlineSeconds": STOPPED_DEADLINE_SECONDS}},
    )
    log.info("stopped Job %s/%s: its pods did not start in time", namespace, status["jobName"])


def _finished(found_job: dict[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (found_job.get("status") or {}).get("conditions") or []
    )


def _progress(pods: list[dict[str, Any]], settings: OperatorSettings) -> dict[str, Any] | None:
    """Ask the first running pod (node rank 0 when there are several) for progress."""
    running = [
        pod
        for pod in pods
        if (pod.get("status") or {}).get("phase") == "Running" and pod["status"].get("podIP")
    ]
    running.sort(
        key=lambda pod: (pod["metadata"].get("annotations") or {}).get(
            "batch.kubernetes.io/job-completion-index", "0"
        )
    )
    for pod in running[:1]:
        return kube.read_progress(
            pod["status"]["podIP"], settings.metrics_port, settings.progress_timeout_seconds
        )
    return None


def _refuse(
    info: KindInfo, body: dict[str, Any], previous: dict[str, Any], error: ManifestError
) -> str:
    """A spec the apiserver let through but the models refuse: fail it, say why, keep going."""
    message = "; ".join(str(problem) for problem in error.errors)
    generation = body["metadata"].get("generation")
    stamp = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    conditions = set_condition(
        list(previous.get("conditions") or []),
        "Failed",
        True,
        "InvalidSpec",
        message,
        generation,
        stamp,
    )
    status = {
        **previous,
        "phase": "Failed",
        "message": message,
        "conditions": conditions,
        "observedGeneration": generation,
    }
    if status != previous:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        written = kube.patch_status(info, namespace, name, status)
        WRITTEN.remember((info.kind, namespace, name), written)
        kube.post_event(info, body, "Warning", "InvalidSpec", message)
    return "Failed"


def _record_end(info: KindInfo, status: dict[str, Any]) -> None:
    phase = status["phase"]
    if phase == "Failed":
        reason = next(
            (c.get("reason") for c in status.get("conditions", []) if c.get("type") == "Failed"),
            "Unknown",
        )
        metrics.FAILURES.labels(kind=info.kind, reason=reason).inc()
    start, end = status.get("startTime"), status.get("completionTime")
    if start and end:
        seconds = (_parse(end) - _parse(start)).total_seconds()
        metrics.JOB_SECONDS.labels(kind=info.kind, phase=phase).observe(max(0.0, seconds))


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
