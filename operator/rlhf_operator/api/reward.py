"""RewardModelJob: learn a scalar reward from human preferences (rankings) or ratings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .common import DatasetSource, Lora, PolicyModelSource, Training
from .job import JobSpec
from .sft import EARLY_STOPPING_NEEDS_EVAL, EarlyStopping


class RewardDataset(DatasetSource):
    """Human feedback as preferences, rankings or ratings."""

    format: Literal["auto", "preference", "ranking", "rating"] = "auto"
    """preference: "prompt" (optional), "chosen", "rejected"; ranking: "prompt"
    (optional) and "responses", a list best first, expanded to every ordered pair;
    rating: "text" (or "prompt" + "response") and a numeric "score", learnt by
    regression. Prompts and answers are strings, or message lists ({role, content}) as
    TRL's conversational data (without "prompt", each answer holds the whole
    conversation); one shape per row and column. "auto" decides from the columns
    present."""


class RewardTraining(Training):
    """Optimisation settings for the reward model."""

    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-5
    """Peak learning rate."""


class RewardModelJobSpec(JobSpec):
    """Train a reward model: pairwise Bradley-Terry loss (RewardTrainer) on preferences and
    rankings, or mean squared error on ratings."""

    rules = (*JobSpec.rules, EARLY_STOPPING_NEEDS_EVAL)

    model: PolicyModelSource
    """The base model the reward model starts from (often the SFT policy)."""
    dataset: RewardDataset
    """Feedback data."""
    training: RewardTraining = Field(default_factory=RewardTraining)
    """Optimisation settings."""
    center_rewards_coefficient: Annotated[float, Field(ge=0)] | None = None
    """Pull mean rewards towards zero with this weight (pairwise data only)."""
    lora: Lora | None = None
    """Train LoRA adapters instead of all weights."""
    early_stopping: EarlyStopping | None = None
    """Stop when the evaluation metric stops improving."""
