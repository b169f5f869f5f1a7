"""Spec pieces every kind shares: where models and data come from, compute, storage,
run policy and the training knobs common to all stages."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel, ListSet, Rule, at_most_one_of, exactly_one_of
from .network import DEVICES_ARE_NOT_THE_GPUS, Nccl, Network

QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,3}))?$"
)
"""A non-negative resource.Quantity (compute and storage are never negative), with a
decimal exponent of at most three digits (the apiserver refuses what overflows)."""
POSITIVE_QUANTITY_PATTERN = (
    r"^\+?(([0-9]*[1-9][0-9]*(\.[0-9]*)?)|([0-9]*\.[0-9]*[1-9][0-9]*))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,3}))?$"
)
"""A quantity above zero (a claim's size)."""
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
"""A label key, taint key or extended resource name: an optional DNS subdomain prefix and
a name of at most 63 characters."""
EXTENDED_RESOURCE_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
IMAGE_PATTERN = r"^[^\s]+$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
RELATIVE_PATH_PATTERN = r"^[^/].*$"

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]
PositiveQuantity = Annotated[str, Field(pattern=POSITIVE_QUANTITY_PATTERN, max_length=64)]
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_PATTERN, max_length=63)]
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]
RelativePath = Annotated[str, Field(pattern=RELATIVE_PATH_PATTERN, max_length=1024)]


# --- secrets -------------------------------------------------------------------------


class SecretKeyRef(ApiModel):
    """A key of a Secret in the job's namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: Annotated[str, Field(pattern=CONFIG_KEY_PATTERN, min_length=1, max_length=253)]
    """Key within the Secret (letters, digits, '-', '_' and '.')."""


# --- model sources -------------------------------------------------------------------


class HubModel(ApiModel):
    """A model on the Hugging Face Hub (or a mirror set through HF_ENDPOINT in env)."""

    id: Annotated[str, Field(min_length=1, max_length=256)]
    """Repository id, e.g. "Qwen/Qwen2.5-0.5B"."""
    revision: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """Branch, tag or commit; the default branch when unset."""
    token_secret_ref: SecretKeyRef | None = None
    """Secret holding a Hub token, for gated or private models."""


class ClaimPath(ApiModel):
    """A folder on an existing PersistentVolumeClaim in the job's namespace."""

    claim_name: ObjectName
    """Name of the PersistentVolumeClaim; it is mounted read-only."""
    path: RelativePath = "."
    """Folder (or file, for datasets) relative to the claim's root."""


class SFTJobReference(ApiModel):
    """An SFTJob (or DPOJob) in the same namespace; its output model is used once it has
    Succeeded."""

    kind: Literal["SFTJob", "DPOJob"] = "SFTJob"
    """Kind of the referenced job: a policy comes from an SFTJob, or from a DPOJob (its
    optimised policy)."""
    name: ObjectName
    """Name of the job."""


class RewardModelJobReference(ApiModel):
    """A RewardModelJob in the same namespace; its output model is used once it has Succeeded."""

    kind: Literal["RewardModelJob"] = "RewardModelJob"
    """Kind of the referenced job: a reward or value model comes from a RewardModelJob."""
    name: ObjectName
    """Name of the RewardModelJob."""


ModelPreset = Literal["tiny"]
MODEL_SOURCE_FIELDS = ("hub", "pvc", "fromJob", "preset")


class PolicyModelSource(ApiModel):
    """Where a language model comes from: set exactly one of hub, pvc, fromJob or preset."""

    rules = (exactly_one_of(*MODEL_SOURCE_FIELDS, what="model source"),)

    hub: HubModel | None = None
    """A Hub model, downloaded into the pod (needs network access to the Hub)."""
    pvc: ClaimPath | None = None
    """A model folder (config, weights, tokenizer) on an existing claim."""
    from_job: SFTJobReference | None = None
    """The output of an earlier SFTJob or DPOJob; this job waits until it has Succeeded."""
    preset: ModelPreset | None = None
    """A built-in model made in the pod with no download. "tiny": a 2-layer Llama with a
    byte-level tokenizer, for smoke tests of air-gapped clusters."""


class RewardModelSource(ApiModel):
    """Where a reward or value model comes from: set exactly one of hub, pvc, fromJob or preset."""

    rules = (exactly_one_of(*MODEL_SOURCE_FIELDS, what="model source"),)

    hub: HubModel | None = None
    """A Hub sequence-classification model with one output (a score)."""
    pvc: ClaimPath | None = None
    """A reward model folder on an existing claim."""
    from_job: RewardModelJobReference | None = None
    """The output of an earlier RewardModelJob; this job waits until it has Succeeded."""
    preset: ModelPreset | None = None
    """A built-in randomly initialised reward model ("tiny"), for smoke tests only."""


# --- dataset sources -----------------------------------------------------------------


class HubDataset(ApiModel):
    """A dataset on the Hugging Face Hub."""

    id: Annotated[str, Field(min_length=1, max_length=256)]
    """Dataset repository id, e.g. "trl-lib/ultrafeedback_binarized"."""
    config: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """Dataset configuration (subset) name."""
    split: Annotated[str, Field(min_length=1, max_length=256)] = "train"
    """Split to train on."""
    revision: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """Branch, tag or commit."""
    token_secret_ref: SecretKeyRef | None = None
    """Secret holding a Hub token, for gated or private datasets."""


class ClaimDataset(ClaimPath):
    """JSON Lines or Parquet files on an existing claim (a file, or a folder of files)."""

    file_format: Literal["auto", "jsonl", "parquet"] = "auto"
    """File format; "auto" decides by file extension."""


DatasetPreset = Literal["tiny"]


class DatasetSource(ApiModel):
    """Where training data comes from, how its columns are named, and what is held out
    for evaluation and for a final test."""

    rules = (
        exactly_one_of("hub", "pvc", "preset", what="dataset source"),
        at_most_one_of("evalSplit", "evalFraction", what="dataset evaluation"),
        at_most_one_of("testSplit", "testFraction", what="dataset test data"),
        Rule(
            cel=(
                "!has(self.testFraction) || !has(self.evalFraction)"
                " || self.testFraction + self.evalFraction < 1.0"
            ),
            check=lambda source: (
                source.test_fraction is None
                or source.eval_fraction is None
                or source.test_fraction + source.eval_fraction < 1
            ),
            message=(
                "testFraction: testFraction + evalFraction must be below 1 (leave data to train on)"
            ),
            field="testFraction",
        ),
        Rule(
            cel="!has(self.testSplit) || !has(self.evalSplit) || self.testSplit != self.evalSplit",
            check=lambda source: (
                source.test_split is None or source.test_split != source.eval_split
            ),
            message=(
                "testSplit: must differ from evalSplit (test figures come from data that"
                " early stopping and checkpoint selection never see)"
            ),
            field="testSplit",
        ),
    )

    hub: HubDataset | None = None
    """A Hub dataset."""
    pvc: ClaimDataset | None = None
    """Files on an existing claim."""
    preset: DatasetPreset | None = None
    """A built-in generated dataset for the stage ("tiny": small and learnable), for smoke
    tests with no downloads."""
    columns: dict[str, Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=dict, max_length=16
    )
    """Renames source columns to the names the stage's format expects, as
    {expected: actual}, e.g. {"prompt": "question", "completion": "answer"}."""
    eval_split: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """A separate split (Hub) or file (claim, relative to path) to evaluate on."""
    eval_fraction: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Fraction of the training data held out for evaluation, e.g. 0.1."""
    test_split: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """A separate split (Hub) or file (claim, relative to path) held out as test data:
    evaluated once after training and reported as test_* figures, never used for early
    stopping or checkpoint selection (SFTJob and RewardModelJob; PPOJob evaluates on
    held-out prompts instead and does not use it)."""
    test_fraction: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Fraction of the training data held out as test data (seeded, disjoint from the
    training and evaluation data), e.g. 0.1; see testSplit."""
    max_samples: Annotated[int, Field(ge=1)] | None = None
    """Use at most this many training examples (after shuffling with the seed)."""


# --- compute -------------------------------------------------------------------------


class Toleration(ApiModel):
    """A pod toleration (core/v1 Toleration), checked as the apiserver checks a pod's."""

    rules = (
        Rule(
            cel="has(self.key) || (has(self.operator) && self.operator == 'Exists')",
            check=lambda toleration: toleration.key is not None or toleration.operator == "Exists",
            message="operator: must be Exists when key is empty (to match every taint)",
            field="operator",
        ),
        Rule(
            cel="!has(self.operator) || self.operator != 'Exists' || !has(self.value)",
            check=lambda toleration: toleration.operator != "Exists" or toleration.value is None,
            message="value: must be empty when operator is Exists",
            field="value",
        ),
        Rule(
            cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            check=lambda toleration: (
                toleration.toleration_seconds is None or toleration.effect == "NoExecute"
            ),
            message="tolerationSeconds: only with effect NoExecute",
            field="tolerationSeconds",
        ),
    )

    key: Annotated[str, Field(pattern=QUALIFIED_NAME_PATTERN, max_length=317)] | None = None
    """Taint key (a label key, e.g. nvidia.com/gpu); unset with operator Exists matches
    all taints."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (the default)."""
    value: LabelValue | None = None
    """Taint value to match with Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; all effects when unset."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


class Resources(ApiModel):
    """Compute for the training pods: one pod per node."""

    rules = (
        Rule(
            cel=(
                "!has(self.nodeSelector) || self.nodeSelector.all(key, size(key) <= 317"
                f" && key.matches(r'{QUALIFIED_NAME_PATTERN}'))"
            ),
            check=lambda resources: all(
                len(key) <= 317 and re.match(QUALIFIED_NAME_PATTERN, key)
                for key in resources.node_selector
            ),
            message="nodeSelector: every key must be a label key, e.g. nvidia.com/gpu.product",
            field="nodeSelector",
        ),
        Rule(
            cel="!has(self.gpuResourceName) || !self.gpuResourceName.contains('kubernetes.io/')",
            check=lambda resources: "kubernetes.io/" not in resources.gpu_resource_name,
            message=(
                "gpuResourceName: an extended resource outside the kubernetes.io domain,"
                " e.g. nvidia.com/gpu"
            ),
            field="gpuResourceName",
        ),
        DEVICES_ARE_NOT_THE_GPUS,
    )

    nodes: Annotated[int, Field(ge=1, le=512)] = 1
    """Number of nodes (pods); more than one runs an Indexed Job with a rendezvous Service."""
    gpus_per_node: Annotated[int, Field(ge=0, le=16)] = 1
    """GPUs per node; 0 trains on CPU."""
    gpu_resource_name: Annotated[
        str, Field(pattern=EXTENDED_RESOURCE_PATTERN, min_length=1, max_length=317)
    ] = "nvidia.com/gpu"
    """Extended resource name of the GPU device plugin, e.g. amd.com/gpu (domain/name,
    outside kubernetes.io)."""
    cpu: Quantity | None = None
    """CPU request and limit per pod, e.g. "8"."""
    memory: Quantity | None = None
    """Memory request and limit per pod, e.g. "64Gi"."""
    shared_memory: Quantity = "8Gi"
    """Size of /dev/shm (data-loader workers and NCCL need more than the 64Mi default)."""
    node_selector: dict[str, LabelValue] = Field(default_factory=dict, max_length=64)
    """Node labels the pods must match (label keys and values)."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Tolerations for tainted GPU nodes."""
    priority_class_name: ObjectName | None = None
    """PriorityClass of the pods."""
    scratch_disk: Quantity = "20Gi"
    """Local disk per pod for downloads (Hub models and datasets, in /cache) and temporary
    files (/tmp): requested as ephemeral-storage, so the pod is placed on a node with that
    much disk, and its limit. A pod that writes more is evicted and the job fails with
    reason ScratchDiskExceeded (raise this, or read models from a modelCache claim)."""
    network: Network = Field(default_factory=Network)
    """RDMA devices (InfiniBand, RoCE, EFA) for traffic between nodes; docs/networking.md."""


class Distributed(ApiModel):
    """How training is spread over GPUs and nodes."""

    strategy: Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"] = "ddp"
    """ddp replicates the model; fsdp and deepspeed-zero3 shard parameters, gradients and
    optimizer state; deepspeed-zero2 shards gradients and optimizer state."""
    nccl: Nccl = Field(default_factory=Nccl)
    """NCCL settings (interfaces, adapters, debug logging) as environment variables."""


# --- storage -------------------------------------------------------------------------


AccessMode = Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]


class Output(ApiModel):
    """Where the job writes checkpoints and its final model: a new claim, or an existing one."""

    rules = (
        at_most_one_of("storageClassName", "existingClaim", what="output"),
        Rule(
            cel=(
                "!has(self.accessModes) || !('ReadWriteOncePod' in self.accessModes)"
                " || self.accessModes.size() == 1"
            ),
            check=lambda output: (
                "ReadWriteOncePod" not in output.access_modes or len(output.access_modes) == 1
            ),
            message="accessModes: ReadWriteOncePod cannot be combined with other access modes",
            field="accessModes",
        ),
    )

    size: PositiveQuantity = "20Gi"
    """Size of the claim the operator creates."""
    storage_class_name: ObjectName | None = None
    """StorageClass of the claim the operator creates; the cluster default when unset."""
    access_modes: Annotated[list[AccessMode], ListSet()] = Field(
        default_factory=lambda: list[AccessMode](["ReadWriteOnce"]), min_length=1, max_length=3
    )
    """Access modes of the claim the operator creates, each once; more than one node needs
    ReadWriteMany; ReadWriteOncePod only alone."""
    existing_claim: ObjectName | None = None
    """Write into this existing claim instead of creating one."""
    retain: bool = False
    """Keep the claim the operator created when the job is deleted."""


class ModelCache(ApiModel):
    """An existing claim holding a Hugging Face cache, shared by jobs and nodes so each
    model is downloaded once: Hub models (``hub`` sources) are read from, and with
    ``readOnly: false`` downloaded into, its ``hub/`` folder (the layout of HF_HOME;
    fill it with e.g. ``HF_HOME=<folder> hf download <model id>``)."""

    claim_name: ObjectName
    """Name of the PersistentVolumeClaim; more than one node needs it ReadOnlyMany or
    ReadWriteMany."""
    path: RelativePath = "."
    """The folder in the claim that is the HF_HOME (it holds hub/)."""
    read_only: bool = True
    """Mount it read-only and never download: a model missing from the cache fails the job
    (exit 78) saying which. false mounts it read-write and downloads what is missing into
    it (Hugging Face's lock files keep concurrent downloads apart)."""


# --- run policy ----------------------------------------------------------------------


class RunPolicy(ApiModel):
    """Retries, deadlines, clean-up and pausing. Every field but the checkpoint settings
    may change while the job runs and takes effect (on its batch Job, or in the operator's
    next look at it for startDeadlineSeconds) until the job has finished."""

    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 3
    """Retries after failures of the training code itself; evictions and node loss retry
    without counting, bad configuration or data fails at once. With several nodes a retry
    restarts the whole group of pods from the checkpoint (status.restarts)."""
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    """Fail the job once it has run this long, retries included; removing it removes the
    deadline."""
    start_deadline_seconds: Annotated[int, Field(ge=10)] = 600
    """Fail the job (reason PodsNotStarted, saying why) when a training pod has not
    started this long after it was created (not scheduled, image not pulled, a volume not
    mounted...), or its Job has made no pod this long after it started; the Job is
    stopped so it does not start later. Time queued or suspended does not count. With
    several nodes the ranks also wait this long (and 60 s) for each other to start."""
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = None
    """Delete the finished batch Job (not this resource, not the output) this long after it
    finished, and never before the operator has recorded its outcome."""
    suspend: bool = False
    """Stop the pods but keep the output and checkpoints; setting it back to false resumes
    from the latest checkpoint."""
    checkpoint_interval: Annotated[int, Field(ge=1)] = 500
    """Save a checkpoint every this many steps: optimizer steps for SFTJob and
    RewardModelJob, PPO updates (one rollout batch each, the unit of PPO's progress) for
    PPOJob; or sooner, see checkpointIntervalMinutes."""
    checkpoint_interval_minutes: Annotated[float, Field(ge=0)] = 30.0
    """Also save a checkpoint when this many minutes have passed since the last one (or
    since the run started), whichever comes first; 0 saves by steps only. Fixed once the
    job exists, like checkpointInterval and checkpointsToKeep."""
    checkpoints_to_keep: Annotated[int, Field(ge=1, le=100)] = 2
    """How many recent checkpoints to keep."""


class SecretEnvSource(ApiModel):
    """Take an environment variable's value from a Secret."""

    secret_key_ref: SecretKeyRef
    """The Secret key holding the value."""


class EnvVar(ApiModel):
    """An extra environment variable for the training container."""

    rules = (
        Rule(
            cel="has(self.value) != has(self.valueFrom)",
            check=lambda env: (env.value is None) != (env.value_from is None),
            message="env: set exactly one of value or valueFrom",
        ),
    )

    name: Annotated[str, Field(pattern=ENV_NAME_PATTERN, min_length=1, max_length=256)]
    """Variable name."""
    value: Annotated[str, Field(max_length=32768)] | None = None
    """Literal value."""
    value_from: SecretEnvSource | None = None
    """Value taken from a Secret."""


# --- training ------------------------------------------------------------------------


class Training(ApiModel):
    """Optimisation settings shared by every stage."""

    epochs: Annotated[float, Field(gt=0, le=1000)] = 1.0
    """Passes over the training data."""
    max_steps: Annotated[int, Field(ge=1)] | None = None
    """Stop after this many optimizer steps; overrides epochs."""
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 2e-5
    """Peak learning rate."""
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    """Learning-rate schedule after warm-up."""
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Fraction of the steps spent warming the learning rate up."""
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    """AdamW weight decay."""
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    """Examples per device per forward pass."""
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] = 1
    """Forward passes per optimizer step."""
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    """Gradient clipping norm."""
    max_length: Annotated[int, Field(ge=8, le=1048576)] = 1024
    """Longest tokenized example; longer ones are truncated."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Numeric precision; "auto" is bf16 on GPUs and fp32 on CPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% slower."""
    eval_steps: Annotated[int, Field(ge=1)] | None = None
    """Evaluate every this many steps; at the end of each epoch when unset."""
    logging_steps: Annotated[int, Field(ge=1)] = 10
    """Report training metrics every this many steps."""
    seed: Annotated[int, Field(ge=0)] = 42
    """Random seed for initialisation, shuffling and sampling."""


class Lora(ApiModel):
    """Low-rank adapters (LoRA) through peft: train a few million parameters instead of all."""

    r: Annotated[int, Field(ge=1, le=1024)] = 16
    """Adapter rank."""
    alpha: Annotated[int, Field(ge=1, le=4096)] = 32
    """Scaling numerator (the update is scaled by alpha / r)."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    """Dropout on the adapter input."""
    target_modules: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128)]], ListSet()
    ] = Field(default_factory=lambda: ["all-linear"], min_length=1, max_length=64)
    """Modules to adapt, each once; "all-linear" adapts every linear layer but the output
    head."""
    merge: bool = True
    """Merge the adapters into the base weights when saving, so later stages load a plain model."""


class Generation(ApiModel):
    """Sampling settings for generated text."""

    max_new_tokens: Annotated[int, Field(ge=1, le=65536)] = 64
    """Longest generated response, in tokens."""
    temperature: Annotated[float, Field(ge=0, le=10)] = 0.7
    """Sampling temperature; 0 decodes greedily."""
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Nucleus sampling threshold."""
