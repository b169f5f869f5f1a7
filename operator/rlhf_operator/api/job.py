"""What every kind's spec has besides its stage settings: image, compute, storage,
run policy, queueing and environment."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from .base import ApiModel, Rule
from .common import (
    DNS_SUBDOMAIN_PATTERN,
    IMAGE_PATTERN,
    Distributed,
    EnvVar,
    ModelCache,
    Output,
    Resources,
    RunPolicy,
)
from .pod import PodSettings

MULTI_NODE_NEEDS_SHARED_OUTPUT = Rule(
    cel=(
        "self.resources.nodes <= 1 || has(self.output.existingClaim)"
        " || 'ReadWriteMany' in self.output.accessModes"
    ),
    check=lambda spec: (
        spec.resources.nodes <= 1
        or spec.output.existing_claim is not None
        or "ReadWriteMany" in spec.output.access_modes
    ),
    message=(
        "output.accessModes: resources.nodes > 1 needs ReadWriteMany (every node writes"
        " checkpoints) or an existingClaim"
    ),
    field="output.accessModes",
)

TRACKERS_ONCE_EACH = Rule(
    cel="self.trackers.all(t, self.trackers.filter(u, u == t).size() == 1)",
    check=lambda spec: len(set(spec.trackers)) == len(spec.trackers),
    message="trackers: name each tracker once",
    field="trackers",
)

SHARDING_NEEDS_GPUS = Rule(
    cel="self.distributed.strategy == 'ddp' || self.resources.gpusPerNode > 0",
    check=lambda spec: spec.distributed.strategy == "ddp" or spec.resources.gpus_per_node > 0,
    message=(
        "distributed.strategy: fsdp and deepspeed need GPUs; set resources.gpusPerNode > 0"
        " or use ddp"
    ),
    field="distributed.strategy",
)


MUTABLE_FIELDS = ("runPolicy",)
"""Spec fields that may change after creation: suspension, deadline, retries and clean-up
are applied to the running Job (operator/rlhf_operator/runpolicy.py). Everything else is
fixed once training may have started; the CRD refuses changes to it (CEL transition
rules)."""

FIXED_RUN_POLICY_FIELDS = ("checkpointInterval", "checkpointIntervalMinutes", "checkpointsToKeep")
"""runPolicy fields the trainer reads from its config when it starts: fixed like the rest
of the spec (a new value would reach no running pod, and a resumed run would save on
another schedule than the one it was started with)."""

_HOW_TO_CHANGE = "delete and re-create the job to change it"


def _unchanged(path: str, always_present: bool) -> str:
    if always_present:
        return f"self.{path} == oldSelf.{path}"
    return (
        f"has(self.{path}) == has(oldSelf.{path})"
        f" && (!has(self.{path}) || self.{path} == oldSelf.{path})"
    )


def immutable_field_rules(spec_model: type[ApiModel]) -> list[dict[str, str]]:
    """CEL transition rules (using oldSelf) refusing changes to fixed spec fields."""
    rules = []
    for name, info in spec_model.model_fields.items():
        field = info.alias or name
        if field in MUTABLE_FIELDS:
            continue
        always_present = (
            info.is_required() or info.get_default(call_default_factory=True) is not None
        )
        rules.append(
            {
                "rule": _unchanged(field, always_present),
                "message": (
                    f"{field} cannot change once the job exists (only runPolicy can);"
                    f" {_HOW_TO_CHANGE}"
                ),
                "fieldPath": f".{field}",
                "reason": "FieldValueForbidden",
            }
        )
    for field in FIXED_RUN_POLICY_FIELDS:
        # runPolicy and these fields have defaults: the apiserver fills them in.
        path = f"runPolicy.{field}"
        rules.append(
            {
                "rule": _unchanged(path, always_present=True),
                "message": (
                    f"runPolicy.{field} cannot change once the job exists (the trainer reads"
                    f" it when it starts); {_HOW_TO_CHANGE}"
                ),
                "fieldPath": f".{path}",
                "reason": "FieldValueForbidden",
            }
        )
    return rules


class JobSpec(ApiModel):
    """Fields every kind shares. Subclasses add the stage's model, data and settings."""

    rules: ClassVar[tuple[Rule, ...]] = (
        MULTI_NODE_NEEDS_SHARED_OUTPUT,
        SHARDING_NEEDS_GPUS,
        TRACKERS_ONCE_EACH,
    )

    image: Annotated[str, Field(pattern=IMAGE_PATTERN, min_length=1, max_length=512)] | None = None
    """Trainer image; the operator's default (a Helm value) when unset."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """When the kubelet pulls the trainer image."""
    resources: Resources = Field(default_factory=Resources)
    """GPUs, nodes, CPU, memory and placement of the training pods."""
    distributed: Distributed = Field(default_factory=Distributed)
    """How training is spread over GPUs and nodes."""
    output: Output = Field(default_factory=Output)
    """Where checkpoints and the final model are written."""
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    """Retries, deadlines, clean-up and suspension."""
    queue_name: (
        Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=63)] | None
    ) = None
    """Kueue LocalQueue: the Job is created suspended and Kueue unsuspends it on admission;
    runPolicy.suspend then deactivates and reactivates its Kueue Workload. A LocalQueue's
    name, at most 63 characters (it becomes a label value)."""
    pod: PodSettings = Field(default_factory=PodSettings)
    """Settings of the training pods for the cluster: image pull secrets, service account,
    affinity, topology spread, scheduler, extra volumes and mounts, labels, annotations,
    user and group ids."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Extra environment variables for the training container (e.g. HF_ENDPOINT)."""
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, max_length=3
    )
    """Experiment trackers the trainer logs every figure to (none by default).
    "tensorboard": event files in the output folder's tensorboard/ (point TensorBoard at the
    claim); "mlflow": the server in MLFLOW_TRACKING_URI (and MLFLOW_EXPERIMENT_NAME);
    "wandb": Weights & Biases with WANDB_API_KEY (and WANDB_PROJECT). Set those in env,
    secrets with valueFrom; the trainer image must hold the tracker's package."""
    model_cache: ModelCache | None = None
    """A pre-populated Hugging Face cache on an existing claim to load Hub models from,
    instead of downloading them into each pod's scratch disk."""
