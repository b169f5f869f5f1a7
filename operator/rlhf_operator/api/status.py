"""What the operator observed: phase, conditions, progress, metrics and output.

The progress block follows Kubeflow Trainer's trainerStatus (progress percentage,
estimated remaining time, last update) so dashboards and tools built for it map over.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel

Phase = Literal["Pending", "Waiting", "Running", "Succeeded", "Failed", "Suspended"]
PHASES: tuple[Phase, ...] = ("Pending", "Waiting", "Running", "Succeeded", "Failed", "Suspended")
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
ConditionType = Literal[
    "Ready",
    "Reconciling",
    "Stalled",
    "Running",
    "Succeeded",
    "Failed",
    "Waiting",
    "Suspended",
    "PodsReady",
]


class Condition(ApiModel):
    """One aspect of the job's state, following Kubernetes condition conventions."""

    type: ConditionType
    """Ready (True once the job has Succeeded: its model is trained; False before,
    while it runs too), Reconciling (True while it progresses: pending, waiting,
    running), Stalled (True when it failed or cannot proceed without someone's help),
    as kstatus reads them (Flux, Argo CD: docs/health.md); Running, Succeeded, Failed,
    Waiting (for an upstream job), Suspended, or PodsReady (every training pod runs;
    when False, its reason says why one waits: Unschedulable, ErrImagePull,
    ImagePullBackOff, CreateContainerConfigError, FailedMount, FailedAttachVolume,
    ContainerCreating...)."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=REASON_PATTERN)]
    """Machine-readable CamelCase reason, e.g. DependencyNotFound."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable explanation and what to do about it."""
    last_transition_time: datetime
    """When status last changed."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The spec generation the condition was computed from."""


class Progress(ApiModel):
    """Training progress reported by the trainer."""

    step: Annotated[int, Field(ge=0)] = 0
    """Optimizer steps completed."""
    total_steps: Annotated[int, Field(ge=0)] | None = None
    """Optimizer steps planned."""
    percent: Annotated[int, Field(ge=0, le=100)] | None = None
    """step / totalSteps, in percent."""
    epoch: Annotated[float, Field(ge=0)] | None = None
    """Epochs completed (fractional)."""
    estimated_remaining_seconds: Annotated[int, Field(ge=0)] | None = None
    """Estimated seconds until training ends, from the recent step rate."""
    last_update_time: datetime | None = None
    """When progress was last read from the trainer."""


class OutputLocation(ApiModel):
    """Where the finished model is."""

    claim_name: str
    """PersistentVolumeClaim holding the output."""
    path: str
    """Folder of the final model within the claim."""


class GroupRestart(ApiModel):
    """The last restart of a multi-node job's whole group of pods."""

    job_uid: str
    """uid of the batch Job that failed and was replaced."""
    rank: Annotated[int, Field(ge=0)] | None = None
    """The rank (node index) that failed first, when a pod says."""
    exit_code: int | None = None
    """Its trainer's exit code, when it exited."""
    counted: bool
    """Whether the restart counts against runPolicy.backoffLimit (not after a disruption:
    eviction, preemption, node drain)."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """What failed."""
    time: datetime
    """When the operator restarted the group."""
    active_seconds: Annotated[int, Field(ge=0)] = 0
    """How long the groups replaced so far ran, together: runPolicy.activeDeadlineSeconds
    counts every attempt, so each fresh Job gets what is left."""


class JobStatus(ApiModel):
    """Observed state of a training job."""

    phase: Phase | None = None
    """Pending, Waiting (for an upstream job), Running, Succeeded, Failed or Suspended."""
    conditions: list[Condition] = Field(default_factory=list)
    """Latest observations of the job's state."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The spec generation the status was computed from and the batch Job carries (a
    runPolicy edit is applied when it reaches this)."""
    progress: Progress | None = None
    """Training progress."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Latest training and evaluation figures, by name (e.g. eval_loss, objective/rlhf_reward)."""
    key_metric: Annotated[str, Field(max_length=128)] | None = None
    """The stage's headline figure as name=value, shown by kubectl get."""
    output: OutputLocation | None = None
    """Where the finished model is."""
    job_name: str | None = None
    """The batch Job running the training."""
    start_time: datetime | None = None
    """When training started."""
    completion_time: datetime | None = None
    """When the job succeeded or failed."""
    attempts: Annotated[int, Field(ge=0)] = 0
    """Attempts so far: retries after failures and disruptions included."""
    restarts: Annotated[int, Field(ge=0)] = 0
    """Multi-node jobs: restarts of the whole group after a rank failed, counted against
    runPolicy.backoffLimit."""
    disruption_restarts: Annotated[int, Field(ge=0)] = 0
    """Multi-node jobs: restarts of the whole group after a rank was disrupted (evicted,
    preempted, its node drained), not counted."""
    last_restart: GroupRestart | None = None
    """Multi-node jobs: the last group restart, with the failing rank and its exit code."""
    pods: list[str] = Field(default_factory=list, max_length=1000)
    """Training pods created so far, oldest first (for kubectl logs)."""
    message: Annotated[str, Field(max_length=32768)] | None = None
    """Summary of the current state."""
