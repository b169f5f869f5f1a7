"""The API contract: pydantic models of every spec and status.

The single source of truth: the CRDs are generated from these models, the operator
and local mode validate specs with them, and the trainer parses its config with them.
Imports pydantic only, so the trainer image can use it without the operator's
dependencies.
"""

from .base import ApiModel, FieldError, Rule, field_errors
from .common import (
    DatasetSource,
    Distributed,
    EnvVar,
    Lora,
    Output,
    PolicyModelSource,
    Resources,
    RewardModelSource,
    RunPolicy,
    Training,
)
from .dpo import DPOJobSpec, DPOSettings
from .kinds import (
    API_VERSION,
    CATEGORY,
    GROUP,
    KINDS,
    KINDS_BY_NAME,
    VERSION,
    DPOJob,
    KindInfo,
    ManifestError,
    PPOJob,
    RewardModelJob,
    SFTJob,
    TrainingJob,
    kind_info,
    parse_manifest,
)
from .ppo import PPOJobSpec, PPOSettings
from .reward import RewardModelJobSpec
from .sft import SFTJobSpec
from .status import PHASES, Condition, JobStatus, Phase, Progress

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "KINDS",
    "KINDS_BY_NAME",
    "PHASES",
    "VERSION",
    "ApiModel",
    "Condition",
    "DPOJob",
    "DPOJobSpec",
    "DPOSettings",
    "DatasetSource",
    "Distributed",
    "EnvVar",
    "FieldError",
    "JobStatus",
    "KindInfo",
    "Lora",
    "ManifestError",
    "Output",
    "PPOJob",
    "PPOJobSpec",
    "PPOSettings",
    "Phase",
    "PolicyModelSource",
    "Progress",
    "Resources",
    "RewardModelJob",
    "RewardModelJobSpec",
    "RewardModelSource",
    "Rule",
    "RunPolicy",
    "SFTJob",
    "SFTJobSpec",
    "Training",
    "TrainingJob",
    "field_errors",
    "kind_info",
    "parse_manifest",
]
