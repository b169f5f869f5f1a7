"""The kinds as whole manifests, their names, and parsing of user YAML."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .base import ApiModel, FieldError, Rule, field_errors
from .dpo import DPOJobSpec
from .job import JobSpec
from .ppo import PPOJobSpec
from .reward import RewardModelJobSpec
from .sft import SFTJobSpec
from .status import JobStatus

GROUP = "rlhf.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "rlhf"
MAX_NAME_LENGTH = 52
"""Children are named after the job plus a suffix, and Job names end up in pod labels
(63 characters at most): 52 leaves room for the suffixes."""


class Metadata(BaseModel):
    """The part of ObjectMeta the operator reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


NAME_FITS = Rule(
    cel=f"!has(self.metadata.name) || self.metadata.name.size() <= {MAX_NAME_LENGTH}",
    check=lambda job: len(job.metadata.name) <= MAX_NAME_LENGTH,
    message=(
        f"metadata.name: at most {MAX_NAME_LENGTH} characters (the operator derives Job and pod"
        " names from it)"
    ),
)


DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_IS_A_LABEL = Rule(
    cel=f"!has(self.metadata.name) || self.metadata.name.matches('{DNS_LABEL}')",
    check=lambda job: re.match(DNS_LABEL, job.metadata.name) is not None,
    message=(
        "metadata.name: lower case letters, digits and '-', starting and ending with a letter"
        " or digit, no '.' (a DNS label: the operator names the Job, its pods and their host"
        " names after it)"
    ),
)
MULTI_NODE_NAME_STARTS_WITH_A_LETTER = Rule(
    cel=(
        "!has(self.metadata.name) || self.spec.resources.nodes <= 1"
        " || self.metadata.name.matches('^[a-z]')"
    ),
    check=lambda job: job.spec.resources.nodes <= 1 or job.metadata.name[:1].isalpha(),
    message=(
        "metadata.name: must start with a letter when resources.nodes > 1 (the rendezvous"
        " Service is named after the job, and Service names are DNS-1035 labels)"
    ),
)


class TrainingJob(ApiModel):
    """Base of the kinds' manifest models."""

    rules = (NAME_FITS, NAME_IS_A_LABEL, MULTI_NODE_NAME_STARTS_WITH_A_LETTER)
    model_config = ConfigDict(extra="forbid")

    api_version: Literal["rlhf.dev/v1alpha1"] = "rlhf.dev/v1alpha1"
    """API group and version."""
    metadata: Metadata
    """Standard object metadata."""
    spec: JobSpec
    status: JobStatus | None = None
    """Observed state, written by the operator."""


class SFTJob(TrainingJob):
    """Supervised fine-tuning: teach a model to produce demonstrated responses, or to
    classify text."""

    kind: Literal["SFTJob"] = "SFTJob"
    """Kind of the resource."""
    spec: SFTJobSpec
    """What to fine-tune, on what data, with which settings and resources."""


class RewardModelJob(TrainingJob):
    """Reward-model training from human preferences, rankings or ratings."""

    kind: Literal["RewardModelJob"] = "RewardModelJob"
    """Kind of the resource."""
    spec: RewardModelJobSpec
    """The base model, the feedback data, settings and resources."""


class PPOJob(TrainingJob):
    """Policy optimisation with PPO against a reward model, kept near a reference policy."""

    kind: Literal["PPOJob"] = "PPOJob"
    """Kind of the resource."""
    spec: PPOJobSpec
    """Policy, reward model, prompts, PPO settings and resources."""


class DPOJob(TrainingJob):
    """Direct preference optimisation: the policy learns from preference pairs, with no
    reward model in the loop."""

    kind: Literal["DPOJob"] = "DPOJob"
    """Kind of the resource."""
    spec: DPOJobSpec
    """Policy, preference data, DPO settings and resources."""


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class KindInfo:
    """Everything the CRD and the operator need to know about one kind."""

    model: type[TrainingJob]
    plural: str
    short_names: tuple[str, ...]
    stage: str
    """The trainer sub-command: sft, rm, ppo or dpo."""
    key_metric_help: str

    @property
    def kind(self) -> str:
        return str(self.model.model_fields["kind"].default)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    def printer_columns(self) -> list[PrinterColumn]:
        return [
            PrinterColumn("Phase", ".status.phase", description="Lifecycle phase"),
            PrinterColumn(
                "Progress", ".status.progress.percent", "integer", "Training progress in percent"
            ),
            PrinterColumn("Metric", ".status.keyMetric", description=self.key_metric_help),
            PrinterColumn(
                "Attempts", ".status.attempts", "integer", "Training pod attempts", priority=1
            ),
            PrinterColumn("Job", ".status.jobName", description="The batch Job", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ]


KINDS: tuple[KindInfo, ...] = (
    KindInfo(SFTJob, "sftjobs", ("sft",), "sft", "eval_loss, or eval_accuracy for classification"),
    KindInfo(RewardModelJob, "rewardmodeljobs", ("rmjob", "rm"), "rm", "Pairwise eval accuracy"),
    KindInfo(PPOJob, "ppojobs", ("ppo",), "ppo", "Mean reward-model score of the policy"),
    KindInfo(DPOJob, "dpojobs", ("dpo",), "dpo", "Held-out implicit reward accuracy"),
)
KINDS_BY_NAME: dict[str, KindInfo] = {info.kind: info for info in KINDS}


class ManifestError(ValueError):
    """A manifest is not a valid job; ``errors`` says where and why."""

    def __init__(self, errors: list[FieldError], source: str = "") -> None:
        self.errors = errors
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(str(error) for error in errors))

    def lines(self) -> list[str]:
        """One line per problem, each naming its file and document."""
        where = f"{self.source}: " if self.source else ""
        return [f"{where}{error}" for error in self.errors]


def parse_manifest(document: dict[str, Any], source: str = "") -> TrainingJob:
    """Validate one manifest (a dict from YAML) into its kind's model.

    Raises ManifestError naming each bad field the way the apiserver would.
    """
    if not isinstance(document, dict):
        raise ManifestError([FieldError("", "a manifest must be a mapping")], source)
    api_version = document.get("apiVersion")
    if api_version != API_VERSION:
        raise ManifestError(
            [FieldError("apiVersion", f'must be "{API_VERSION}", not {api_version!r}')], source
        )
    kind = document.get("kind")
    info = KINDS_BY_NAME.get(kind) if isinstance(kind, str) else None
    if info is None:
        names = ", ".join(KINDS_BY_NAME)
        raise ManifestError([FieldError("kind", f"must be one of {names}, not {kind!r}")], source)
    try:
        return info.model.model_validate(document)
    except ValidationError as error:
        raise ManifestError(field_errors(error), source) from None


def kind_info(job: TrainingJob | str) -> KindInfo:
    """The KindInfo of a job model or kind name."""
    return KINDS_BY_NAME[job if isinstance(job, str) else job.kind]  # type: ignore[attr-defined]
