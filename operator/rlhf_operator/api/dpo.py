"""DPOJob: direct preference optimisation of a policy on preference pairs, with no reward
model in the loop (TRL's DPOTrainer)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel, Rule
from .common import DatasetSource, Lora, PolicyModelSource, RewardModelSource, Training
from .job import JobSpec
from .sft import EARLY_STOPPING_NEEDS_EVAL, EarlyStopping

DPOLossType = Literal["sigmoid", "ipo", "hinge", "robust"]


class PreferenceDataset(DatasetSource):
    """Preference pairs, or rankings expanded to pairs (RewardModelJob's pairwise shapes)."""

    format: Literal["auto", "preference", "ranking"] = "auto"
    """preference: "prompt" (optional), "chosen", "rejected"; ranking: "prompt" (optional)
    and "responses", a list best first, expanded to every ordered pair. Prompts and answers
    are strings, or message lists ({role, content}) as TRL's conversational data (without
    "prompt", each answer holds the whole conversation and the prompt is the turns they
    share). "auto" decides from the columns present. Ratings hold no pairs: DPO cannot use
    them."""


class DPOTraining(Training):
    """Optimisation settings for the policy."""

    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-6
    """Peak learning rate (TRL's DPO default: DPO moves far with small steps)."""


class DPOSettings(ApiModel):
    """The DPO algorithm's settings (names follow TRL's DPOConfig)."""

    loss_type: DPOLossType = "sigmoid"
    """sigmoid: the DPO paper's loss, -log sigmoid(beta * margin); ipo: IPO's squared loss
    on the per-token margin (beta is its regulariser tau); hinge: SLiC's hinge loss on the
    margin; robust: rDPO, which assumes a share labelSmoothing of the labels is flipped."""
    beta: Annotated[float, Field(gt=0, le=100)] = 0.1
    """How strongly the policy is kept near the reference: higher stays closer (for ipo,
    the regulariser tau)."""
    label_smoothing: Annotated[float, Field(ge=0, le=0.49)] = 0.0
    """The share of preference labels assumed flipped (robust only; below 0.5, where the
    robust loss divides by zero)."""
    reference_free: bool = False
    """Train without a reference policy: its log-probabilities are taken as 0, so the
    implicit reward is beta * log pi(response) (no reference model in memory)."""
    eval_prompts: Annotated[int, Field(ge=0, le=100000)] = 64
    """With rewardModel set: held-out prompts the policy and the reference (the policy as
    it started) both answer, judged by the reward model (win rate). Taken from the
    evaluation pairs, else the test pairs, else the last training pairs."""
    response_length: Annotated[int, Field(ge=1, le=65536)] = 53
    """Longest response generated for the win rate, in tokens."""
    temperature: Annotated[float, Field(ge=0, le=10)] = 0.7
    """Sampling temperature of the win-rate responses (both models, same seed); 0 decodes
    greedily."""


LABEL_SMOOTHING_NEEDS_ROBUST = Rule(
    cel="self.dpo.labelSmoothing == 0.0 || self.dpo.lossType == 'robust'",
    check=lambda spec: spec.dpo.label_smoothing == 0 or spec.dpo.loss_type == "robust",
    message=(
        "dpo.labelSmoothing: only the robust loss reads it (the share of flipped labels);"
        " set dpo.lossType: robust or leave it 0"
    ),
    field="dpo.labelSmoothing",
)

REFERENCE_FREE_WITHOUT_LORA = Rule(
    cel="!self.dpo.referenceFree || !has(self.lora)",
    check=lambda spec: not spec.dpo.reference_free or spec.lora is None,
    message=(
        "dpo.referenceFree: not with lora (with adapters the reference is the base model"
        " itself and costs no memory); drop one of them"
    ),
    field="dpo.referenceFree",
)


class DPOJobSpec(JobSpec):
    """Direct preference optimisation of the policy on preference pairs (TRL's
    DPOTrainer), kept near a frozen reference copy of itself unless dpo.referenceFree."""

    rules = (
        *JobSpec.rules,
        EARLY_STOPPING_NEEDS_EVAL,
        LABEL_SMOOTHING_NEEDS_ROBUST,
        REFERENCE_FREE_WITHOUT_LORA,
    )

    policy: PolicyModelSource
    """The policy to optimise (usually an SFTJob's or another DPOJob's output); a frozen
    copy is the reference."""
    dataset: PreferenceDataset
    """Preference pairs or rankings."""
    reward_model: RewardModelSource | None = None
    """A judge only, never trained against: when set, the trained policy and the reference
    answer held-out prompts and this reward model scores both (eval/win_rate)."""
    training: DPOTraining = Field(default_factory=DPOTraining)
    """Optimisation settings."""
    dpo: DPOSettings = Field(default_factory=DPOSettings)
    """DPO algorithm settings."""
    lora: Lora | None = None
    """Train LoRA adapters instead of all weights (the reference is then the base model
    with the adapters off: no second copy in memory)."""
    early_stopping: EarlyStopping | None = None
    """Stop when the evaluation metric stops improving (e.g. eval_loss, or
    eval_rewards/accuracies)."""
