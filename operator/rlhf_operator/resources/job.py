"""The batch/v1 Job that runs the trainer: one pod per node, hardened, with the inputs
mounted read-only and a failure policy that retries infrastructure, not user error."""

from __future__ import annotations

import posixpath
from typing import Any

from ..api import TrainingJob, kind_info
from ..api.common import Resources
from ..api.trainer_config import (
    CONFIG_PATH,
    INPUTS_DIR,
    MODEL_CACHE_DIR,
    OUTPUT_DIR,
    TERMINATION_MESSAGE_PATH,
    InputSlot,
    hub_token_variable,
)
from ..inputs import sources
from ..settings import OperatorSettings
from .names import child_names, labels, metadata
from .objects import RENDEZVOUS_PORT
from .pod_settings import (
    customise,
    mounts_service_account_token,
    nccl_environment,
    pod_security_context,
)

CONTAINER = "trainer"
USER_ERROR_EXIT_CODES = [65, 78]  # rlhf_trainer.errors: bad data, bad config
GRACE_SECONDS = 120
"""Time for the trainer to write a checkpoint after SIGTERM (eviction, suspension)."""
SHUTDOWN_SECONDS = GRACE_SECONDS - 10
"""The launcher's wait for its workers to checkpoint after SIGTERM before it kills them:
the grace period less a margin for the launcher itself to exit (torch's default is 30 s)."""
STOPPED_EXIT_CODE = 143
"""The trainer's exit after a checkpoint on SIGTERM (rlhf_trainer.lifecycle.EXIT_INTERRUPTED)."""
RENDEZVOUS_MARGIN_SECONDS = 60
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
DEFAULT_GPU_RESOURCE: str = Resources.model_fields["gpu_resource_name"].default
"""The API's default GPU resource name, which the operator's setting may replace."""


def input_mount_path(slot: InputSlot) -> str:
    return posixpath.join(INPUTS_DIR, slot)


def batch_job(
    job: TrainingJob,
    settings: OperatorSettings,
    input_claims: dict[InputSlot, tuple[str, str]],
    config_hash: str,
) -> dict[str, Any]:
    """The Job. ``input_claims`` maps each stored input to (claim name, path in claim)."""
    spec = job.spec
    names = child_names(job)
    nodes = spec.resources.nodes
    run_policy = spec.run_policy
    job_spec: dict[str, Any] = {
        "backoffLimit": job_backoff_limit(job),
        "completions": nodes,
        "parallelism": nodes,
        "completionMode": "Indexed" if nodes > 1 else "NonIndexed",
        "suspend": run_policy.suspend or spec.queue_name is not None,
        "podFailurePolicy": {"rules": _pod_failure_rules(nodes)},
        "template": _pod_template(job, settings, input_claims, config_hash),
    }
    if nodes > 1:
        job_spec.update(_group_policy())
    if run_policy.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = run_policy.active_deadline_seconds
    # ttlSecondsAfterFinished is added once the job's status records the outcome
    # (runpolicy.py): the TTL controller must not remove a Job the operator has not read.
    meta = metadata(job, names.job)
    meta["annotations"] = {"rlhf.dev/config-hash": config_hash}
    if spec.queue_name:
        meta["labels"][KUEUE_QUEUE_LABEL] = spec.queue_name
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def _pod_template(
    job: TrainingJob,
    settings: OperatorSettings,
    input_claims: dict[InputSlot, tuple[str, str]],
    config_hash: str,
) -> dict[str, Any]:
    spec = job.spec
    names = child_names(job)
    volumes, mounts = _volumes(job, input_claims)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": mounts_service_account_token(spec.pod),
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "securityContext": pod_security_context(spec.pod.security_context),
        "containers": [
            {
                "name": CONTAINER,
                "image": spec.image or settings.trainer_image,
                "imagePullPolicy": spec.image_pull_policy,
                "command": _command(job),
                "args": [kind_info(job).stage, "--config", CONFIG_PATH],
                "env": _environment(job),
                "ports": [{"name": "metrics", "containerPort": settings.metrics_port}],
                "resources": _resources(job, settings),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": mounts,
                "terminationMessagePath": TERMINATION_MESSAGE_PATH,
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": volumes,
    }
    if spec.resources.nodes > 1:
        pod_spec["subdomain"] = names.service
    if spec.resources.node_selector:
        pod_spec["nodeSelector"] = dict(spec.resources.node_selector)
    if spec.resources.tolerations:
        pod_spec["tolerations"] = [t.to_manifest() for t in spec.resources.tolerations]
    if spec.resources.priority_class_name:
        pod_spec["priorityClassName"] = spec.resources.priority_class_name
    pod_labels = labels(job)
    if spec.queue_name:
        pod_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    template = {
        "metadata": {
            "labels": pod_labels,
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(settings.metrics_port),
                "prometheus.io/path": "/metrics",
                "rlhf.dev/config-hash": config_hash,
            },
        },
        "spec": pod_spec,
    }
    return customise(template, spec)


def job_backoff_limit(job: TrainingJob) -> int:
    """The batch Job's backoffLimit: runPolicy.backoffLimit for one node; 0 for a group,
    whose retries are the operator's (a whole new Job per attempt, groupfailure.py)."""
    return job.spec.run_policy.backoff_limit if job.spec.resources.nodes == 1 else 0


def _pod_failure_rules(nodes: int) -> list[dict[str, Any]]:
    """User errors fail the Job at once. One node: a disruption (eviction, preemption,
    node drain) is retried by the Job without counting. Several: any rank's disruption
    fails the Job too, so the operator replaces the whole group (not counted) instead of
    the Job replacing one rank the others no longer wait for; a rank stopped by SIGTERM
    (143: suspension, or the agreed stop when a peer was told to stop) is not a failure;
    anything else fails the Job through backoffLimit 0 and the operator counts a restart."""
    user_error = {
        "action": "FailJob",
        "onExitCodes": {
            "containerName": CONTAINER,
            "operator": "In",
            "values": USER_ERROR_EXIT_CODES,
        },
    }
    disruption = {"onPodConditions": [{"type": "DisruptionTarget"}]}
    if nodes == 1:
        return [user_error, {"action": "Ignore", **disruption}]
    stopped = {
        "action": "Ignore",
        "onExitCodes": {
            "containerName": CONTAINER,
            "operator": "In",
            "values": [STOPPED_EXIT_CODE],
        },
    }
    return [user_error, {"action": "FailJob", **disruption}, stopped]


def _group_policy() -> dict[str, Any]:
    """A multi-node Job: rank 0 decides success (the other ranks are then stopped, so a
    rank failing during teardown after rank 0 published the model does not fail the job),
    and a replacement pod starts only once the pod it replaces is gone (its GPUs and its
    hostname free)."""
    return {
        "successPolicy": {"rules": [{"succeededIndexes": "0"}]},
        "podReplacementPolicy": "Failed",
    }


def rendezvous_timeout_seconds(job: TrainingJob) -> int:
    """How long rank 0 waits for the other ranks (torchrun's static rendezvous: the
    TCPStore's timeout, ``--rdzv_conf=timeout=``), and the others for rank 0: a gang is
    scheduled within runPolicy.startDeadlineSeconds or the operator fails the job
    (PodsNotStarted), so the rendezvous outlasts it by a margin and never fails first."""
    return job.spec.run_policy.start_deadline_seconds + RENDEZVOUS_MARGIN_SECONDS


def _command(job: TrainingJob) -> list[str]:
    """One process per GPU through the trainer's launcher (torchrun in-process, keeping
    the trainer's exit code and the grace period to checkpoint, rlhf_trainer/launch.py)
    when there is more than one; never a shell."""
    resources = job.spec.resources
    per_node = max(1, resources.gpus_per_node)
    if resources.nodes == 1 and per_node == 1:
        return ["python", "-m", "rlhf_trainer"]
    launcher = [
        "python",
        "-m",
        "rlhf_trainer.launch",
        f"--nproc_per_node={per_node}",
        f"--shutdown-timeout={SHUTDOWN_SECONDS}",
    ]
    if resources.nodes == 1:
        return [*launcher, "--standalone", "-m", "rlhf_trainer"]
    names = child_names(job)
    return [
        *launcher,
        f"--nnodes={resources.nodes}",
        # The kubelet expands $(VAR) from the container's env: no shell involved.
        "--node_rank=$(JOB_COMPLETION_INDEX)",
        f"--master_addr={names.job}-0.{names.service}",
        f"--master_port={RENDEZVOUS_PORT}",
        f"--rdzv_conf=timeout={rendezvous_timeout_seconds(job)}",
        "-m",
        "rlhf_trainer",
    ]


def _environment(job: TrainingJob) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/cache/huggingface"},
        {"name": "TRITON_CACHE_DIR", "value": "/cache/triton"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if job.spec.resources.nodes > 1:
        env.append(
            {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {
                    "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}
                },
            }
        )
    for slot, source in sources(job):
        secret = getattr(getattr(source, "hub", None), "token_secret_ref", None)
        if secret is not None:
            env.append(
                {
                    "name": hub_token_variable(slot),
                    "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
                }
            )
    env.extend(nccl_environment(job.spec.distributed.nccl))
    env.extend(variable.to_manifest() for variable in job.spec.env)
    return env


def _resources(job: TrainingJob, settings: OperatorSettings) -> dict[str, Any]:
    resources = job.spec.resources
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if resources.cpu:
        requests["cpu"] = limits["cpu"] = resources.cpu
    if resources.memory:
        requests["memory"] = limits["memory"] = resources.memory
    # The scratch emptyDirs (/tmp, /cache) live on the node's disk: ask for it, and cap it
    # so a large download evicts this pod (ScratchDiskExceeded), not its neighbours.
    requests["ephemeral-storage"] = limits["ephemeral-storage"] = resources.scratch_disk
    if resources.gpus_per_node:
        gpu = resources.gpu_resource_name
        if gpu == DEFAULT_GPU_RESOURCE and settings.gpu_resource_name:
            gpu = settings.gpu_resource_name
        requests[gpu] = limits[gpu] = str(resources.gpus_per_node)
    rendered: dict[str, Any] = {}
    if requests:
        rendered["requests"] = requests
    if limits:
        rendered["limits"] = limits
    return rendered


def _volumes(
    job: TrainingJob, input_claims: dict[InputSlot, tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    names = child_names(job)
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names.config_map}},
        {"name": "output", "persistentVolumeClaim": {"claimName": names.output_claim}},
        {"name": "tmp", "emptyDir": {"sizeLimit": job.spec.resources.scratch_disk}},
        {"name": "cache", "emptyDir": {"sizeLimit": job.spec.resources.scratch_disk}},
        {
            "name": "dshm",
            "emptyDir": {"medium": "Memory", "sizeLimit": job.spec.resources.shared_memory},
        },
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": posixpath.dirname(CONFIG_PATH), "readOnly": True},
        {"name": "output", "mountPath": OUTPUT_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": "/cache"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    # One volume per claim, however often it is mounted: an output claim that is also
    # read as an input or as the model cache is mounted again from the same volume.
    claim_volumes: dict[str, str] = {names.output_claim: "output"}

    def claim_volume(claim: str, name: str, read_only: bool) -> str:
        if claim not in claim_volumes:
            claim_volumes[claim] = name
            volumes.append(
                {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
            )
        return claim_volumes[claim]

    for slot in sorted(input_claims):
        claim, _ = input_claims[slot]
        volume = claim_volume(claim, f"input-{len(claim_volumes) - 1}", read_only=True)
        mounts.append({"name": volume, "mountPath": input_mount_path(slot), "readOnly": True})
    model_cache = job.spec.model_cache
    if model_cache is not None:
        volume = claim_volume(model_cache.claim_name, "model-cache", model_cache.read_only)
        mounts.append(
            {"name": volume, "mountPath": MODEL_CACHE_DIR, "readOnly": model_cache.read_only}
        )
    return volumes, mounts


def input_paths(input_claims: dict[InputSlot, tuple[str, str]]) -> dict[InputSlot, str]:
    """Where the trainer finds each input inside the pod."""
    return {
        slot: posixpath.normpath(posixpath.join(input_mount_path(slot), path))
        for slot, (_, path) in input_claims.items()
    }
