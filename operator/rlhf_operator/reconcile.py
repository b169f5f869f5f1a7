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

from . import groupfailure, kube, metrics, podwait, queueing
from .api import KINDS_BY_NAME, KindInfo, ManifestError, TrainingJob, parse_manifest
from .cache import ClusterView
from .chaining import Decision, decide
from .health import health
from .inputs import upstreams
from .ownership import (
    BEING_DELETED,
    Leftover,
    Owner,
    has_finished,
    is_controlled_by,
    leftover,
    leftover_pods,
    owner_of,
)
from .resources import (
    batch_job,
    child_names,
    config_map,
    headless_service,
    output_claim,
    pod_trainer_config,
)
from .runpolicy import job_spec_patch
from .serialize import WrittenStatus
from .settings import OperatorSettings
from .sharing import claim_problem, claims_to_read
from .status import TERMINAL_PHASES, observe, set_condition, stops_its_job

log = logging.getLogger("rlhf_operator")

CHILD_INVALID = "ChildInvalid"
"""Failed reason: the apiserver refused a child the operator rendered from the spec."""
CHILD_INVALID_TEXT = "the apiserver refused a child object rendered from this spec"

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
    metadata = body["metadata"]
    namespace = metadata["namespace"]
    previous = dict(body.get("status") or {})
    if previous.get("phase") in TERMINAL_PHASES:
        return _keep_final(info, body, previous, view)
    if metadata.get("deletionTimestamp"):
        return previous.get("phase")  # going (foreground deletion): start nothing
    try:
        job = parse_manifest(body)
    except ManifestError as error:
        return _refuse(info, body, previous, error)

    names = child_names(job)
    owner = owner_of(job)
    cached_pods = view.pods_of(namespace, names.job)
    found_job = view.batch_job(namespace, names.job)
    if found_job is None and (previous.get("jobName") or cached_pods):
        # Created a moment ago, and the watch has not brought it yet (its pods may have).
        found_job = kube.get_batch_job(namespace, names.job)
    blocked = leftover(
        owner, "Job", found_job, usable_while_deleted=bool(found_job and has_finished(found_job))
    )
    ours = found_job if blocked is None else None
    decision = Decision("ready")
    if ours is None and blocked is None:
        blocked = leftover_pods(owner, names.job, cached_pods, job_uid=None)
    if ours is None and blocked is None:
        found = {
            u: view.training_job(KINDS_BY_NAME[u.kind], namespace, u.name) for u in upstreams(job)
        }
        decision = _shared_claims_checked(job, decide(job, found))
        if decision.readiness == "ready":
            try:
                ours, blocked = _create_children(job, owner, decision, settings)
            except kube.Invalid as error:
                # A spec the CRD accepted whose children the apiserver refuses: final, and
                # said (the CRD is meant to refuse such specs; tests/cluster/
                # test_render_property.py looks for them).
                decision = Decision("failed", CHILD_INVALID, f"{CHILD_INVALID_TEXT}: {error}")
            created = metadata.get("creationTimestamp")
            if ours is not None and created:
                latency = datetime.now(UTC) - datetime.fromisoformat(created.replace("Z", "+00:00"))
                metrics.JOB_CREATE_SECONDS.labels(kind=info.kind).observe(latency.total_seconds())
    if blocked is not None:
        decision = Decision("waiting", blocked.reason, blocked.message)
    elif ours is not None:
        used = groupfailure.active_seconds_used(previous)
        _apply_run_policy(job, ours, outcome_recorded=False, seconds_used=used)
    job_uid = (ours or {}).get("metadata", {}).get("uid")
    workload = view.workload_of(namespace, job_uid) if ours and job.spec.queue_name else None
    if workload is not None and not has_finished(ours or {}):
        _apply_queue_suspension(job, workload)
    pods = [pod for pod in cached_pods if is_controlled_by(pod, job_uid)] if ours else []
    progress = _progress(pods, settings) if progress_due(previous, settings) else None
    events: dict[str, list[dict[str, Any]]] = {}
    if ours is not None:
        for uid in podwait.event_subjects(ours, pods, datetime.now(UTC)):
            events[uid] = kube.warning_events(namespace, uid)
    if ours is not None:
        group = groupfailure.decide(job, previous, ours, pods)
    else:
        group = groupfailure.awaiting_replacement(job, previous, cached_pods)
    observation = observe(
        job,
        previous,
        decision,
        ours,
        pods,
        progress,
        warning_events=events,
        group=group,
        workload=workload,
    )
    if observation.status != previous:
        written = kube.patch_status(
            info,
            namespace,
            job.metadata.name,
            observation.status,
            resource_version=metadata.get("resourceVersion"),
        )
        WRITTEN.remember((info.kind, namespace, job.metadata.name), written)
    if ours is not None:
        _stop_unstarted_job(observation.status, ours)
        if group.action in ("restart", "replacing"):
            _replace_group(ours)  # after the status records the restart: counted once
    for event_type, reason, message in observation.events:
        kube.post_event(info, body, event_type, reason, message)
    phase = observation.status.get("phase")
    if phase in TERMINAL_PHASES and previous.get("phase") != phase:
        _record_end(info, observation.status)
        if ours is not None:
            # The outcome is recorded: only now may the TTL controller remove the Job.
            _apply_run_policy(job, ours, outcome_recorded=True)
    return phase


def _keep_final(
    info: KindInfo, body: dict[str, Any], previous: dict[str, Any], view: ClusterView
) -> str:
    """Succeeded and Failed are final: a later runPolicy edit, a Job removed by
    ttlSecondsAfterFinished, a restart of the operator never start training again. A job
    failed because its pods did not start keeps stopping its Job until the Job shows it.
    What an edit can still mean is applied (the TTL of a Job still there), and
    observedGeneration says so."""
    metadata = body["metadata"]
    namespace = metadata["namespace"]
    phase = str(previous["phase"])
    generation = metadata.get("generation")
    recorded = view.batch_job(namespace, previous["jobName"]) if previous.get("jobName") else None
    if recorded is not None and is_controlled_by(recorded, metadata.get("uid") or ""):
        _stop_unstarted_job(previous, recorded)
    try:
        job: TrainingJob | None = parse_manifest(body)
    except ManifestError:
        job = None  # refused as InvalidSpec: there is no Job to apply anything to
    if job is not None:
        found_job = view.batch_job(namespace, child_names(job).job)
        if found_job is not None and is_controlled_by(found_job, job.metadata.uid or ""):
            _apply_run_policy(job, found_job, outcome_recorded=True)
    conditions = _with_health(previous, phase, generation)
    if previous.get("observedGeneration") != generation or conditions != previous.get("conditions"):
        status = {**previous, "observedGeneration": generation, "conditions": conditions}
        written = kube.patch_status(
            info,
            metadata["namespace"],
            metadata["name"],
            status,
            resource_version=metadata.get("resourceVersion"),
        )
        WRITTEN.remember((info.kind, metadata["namespace"], metadata["name"]), written)
    return phase


def _with_health(
    previous: dict[str, Any], phase: str, generation: int | None
) -> list[dict[str, Any]]:
    """A finished job's conditions with Reconciling, Stalled and Ready as health.py says
    (a job finished before they existed, or before Ready meant a trained model, gets
    them on its next reconcile); the same list when they say so already."""
    conditions = list(previous.get("conditions") or [])
    reason = next(
        (str(c.get("reason")) for c in conditions if c.get("type") == phase),
        phase,
    )
    stamp = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    for kind, state, why, text in health(phase, reason, str(previous.get("message") or "")):
        current = next((c for c in conditions if c.get("type") == kind), None)
        if (
            current is not None
            and current.get("status") == ("True" if state else "False")
            and current.get("reason") == why
        ):
            continue
        conditions = set_condition(conditions, kind, state, why, text, generation, stamp)
    return conditions


def _shared_claims_checked(job: TrainingJob, decision: Decision) -> Decision:
    """A ready multi-node job whose claims cannot be mounted on several nodes fails
    (sharing.py); the claims are read only for such a job, once, before it starts."""
    if decision.readiness != "ready":
        return decision
    namespace = job.metadata.namespace or ""
    found = {
        name: kube.get("PersistentVolumeClaim", namespace, name)
        for name in claims_to_read(job, decision.input_claims)
    }
    return claim_problem(job, decision.input_claims, found) or decision


def _create_children(
    job: TrainingJob, owner: Owner, decision: Decision, settings: OperatorSettings
) -> tuple[dict[str, Any] | None, Leftover | None]:
    """ConfigMap, output claim, Service, then the Job (last: its pods need the rest).

    Returns the Job, or what is in the way: a child of that name that is not this job's
    (a 409 is success only when the object found is ours).
    """
    config = pod_trainer_config(job, decision.input_claims, settings)
    rendered_config = config_map(job, config)
    digest = hashlib.sha256(rendered_config["data"]["config.json"].encode()).hexdigest()[:16]
    claim = output_claim(job, settings)
    retained_claim = claim is not None and "ownerReferences" not in claim["metadata"]
    for child in (rendered_config, claim, headless_service(job)):
        if child is None or kube.create(child):
            continue
        meta = child["metadata"]
        existing = kube.get(child["kind"], meta["namespace"], meta["name"])
        blocked = leftover(
            owner,
            child["kind"],
            existing,
            unowned_is_ours=child is claim and retained_claim,
        )
        if blocked is not None:
            return None, blocked
    rendered_job = batch_job(job, settings, decision.input_claims, digest)
    namespace, name = job.metadata.namespace or "", rendered_job["metadata"]["name"]
    created = kube.create(rendered_job)
    if created:
        log.info("created Job %s/%s", namespace, name)
        return created, None
    existing = kube.get_batch_job(namespace, name)
    if existing is None:  # gone again in between: the next reconcile creates it
        return None, Leftover(BEING_DELETED, f"Job {namespace}/{name}: waiting for it to go")
    blocked = leftover(owner, "Job", existing, usable_while_deleted=has_finished(existing))
    return (existing, None) if blocked is None else (None, blocked)


def _apply_run_policy(
    job: TrainingJob, found_job: dict[str, Any], outcome_recorded: bool, seconds_used: int = 0
) -> None:
    """Patch the Job with the runPolicy fields it does not show yet (runpolicy.py)."""
    patch = job_spec_patch(job, found_job, outcome_recorded, seconds_used)
    if patch:
        kube.patch_batch_job(
            found_job["metadata"]["namespace"], found_job["metadata"]["name"], {"spec": patch}
        )
        found_job["spec"] = {
            key: value
            for key, value in {**(found_job.get("spec") or {}), **patch}.items()
            if value is not None
        }


def _replace_group(failed_job: dict[str, Any]) -> None:
    """Delete a multi-node job's failed Job and its pods (groupfailure.py): foreground, so
    the Job stays until every pod is gone and a fresh Job (made by the usual creation once
    it is gone) never runs beside a pod of the old one still writing a checkpoint."""
    metadata = failed_job["metadata"]
    if metadata.get("deletionTimestamp"):
        return
    kube.delete_batch_job(metadata["namespace"], metadata["name"], metadata["uid"])
    log.info("restarting the group: deleted Job %s/%s", metadata["namespace"], metadata["name"])


def _apply_queue_suspension(job: TrainingJob, workload: dict[str, Any]) -> None:
    """runPolicy.suspend of a queued job, the Kueue way: the Workload's spec.active
    (queueing.py). Kueue then suspends or, once admitted again, resumes the Job."""
    patch = queueing.active_patch(job, workload)
    if patch is None:
        return
    metadata = workload["metadata"]
    kube.patch_workload(workload["apiVersion"], metadata["namespace"], metadata["name"], patch)
    workload["spec"] = {**(workload.get("spec") or {}), **patch["spec"]}
    log.info(
        "%s Workload %s/%s of queued job %s",
        "activated" if patch["spec"]["active"] else "deactivated",
        metadata["namespace"],
        metadata["name"],
        job.metadata.name,
    )


STOPPED_DEADLINE_SECONDS = 1
"""activeDeadlineSeconds that stops the Job of a job whose pods did not start in time."""


def _stop_unstarted_job(status: dict[str, Any], found_job: dict[str, Any]) -> None:
    """The job failed because its pods did not start (or a pod wrote more than its scratch
    disk, scratch.py): make its Job (``found_job``, the job's own) fail too, so that it
    never starts them later (when a node frees up, an image appears, or a queue admits
    it), nor retries into the same disk.

    A Job past its activeDeadlineSeconds fails for good (reason DeadlineExceeded) and its
    pods are deleted; suspending it instead would leave it to be resumed (Kueue resumes
    the Jobs it admitted), and the operator deletes nothing (the garbage collector does).
    Written after the status, so the decision is recorded first; done again by every
    reconcile of the failed job until the Job shows it (idempotent). The runPolicy sync
    leaves a Job alone once the job's outcome is recorded (runpolicy.py), so an edit of
    activeDeadlineSeconds never undoes this.
    """
    if not stops_its_job(status) or has_finished(found_job):
        return
    spec = found_job.get("spec") or {}
    if spec.get("activeDeadlineSeconds") == STOPPED_DEADLINE_SECONDS:
        return
    namespace, name = found_job["metadata"]["namespace"], found_job["metadata"]["name"]
    kube.patch_batch_job(
        namespace, name, {"spec": {"activeDeadlineSeconds": STOPPED_DEADLINE_SECONDS}}
    )
    found_job["spec"] = {**spec, "activeDeadlineSeconds": STOPPED_DEADLINE_SECONDS}
    log.info("stopped Job %s/%s: %s", namespace, name, status.get("message", ""))


def progress_due(
    previous: dict[str, Any], settings: OperatorSettings, at: datetime | None = None
) -> bool:
    """Whether to ask the trainer for progress now: when the status has none yet, or it is
    at least half a recheck interval old. Every status write comes back as a watch event,
    and the reconcile it wakes would otherwise read /progress again and, once the step
    has moved into a new second, write again: reads and writes bounded only by how often
    the status changes. The running jobs' timer (every recheck interval) still reads it."""
    stamp = (previous.get("progress") or {}).get("lastUpdateTime")
    if not stamp:
        return True
    age = ((at or datetime.now(UTC)) - _parse(stamp)).total_seconds()
    return age >= settings.recheck_seconds / 2 or age < 0


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
    conditions = list(previous.get("conditions") or [])
    for kind, state, reason, text in [
        ("Failed", True, "InvalidSpec", message),
        *health("Failed", "InvalidSpec", message),
    ]:
        conditions = set_condition(conditions, kind, state, reason, text, generation, stamp)
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
