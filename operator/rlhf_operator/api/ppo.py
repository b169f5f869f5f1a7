"""PPOJob: optimise a policy against a reward model, kept near a reference policy by a
KL penalty."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel, ListSet, Rule
from .common import DatasetSource, PolicyModelSource, RewardModelSource, Training
from .job import JobSpec


class PromptDataset(DatasetSource):
    """Prompts the policy answers during training."""

    format: Literal["auto", "prompt", "messages"] = "auto"
    """prompt: a "prompt" column holding a string or a list of chat messages; messages: a
    "messages" list, whose last assistant turn (if it ends with one) is dropped and the rest
    kept. "auto" decides from the columns present."""


class PPOTraining(Training):
    """Optimisation settings for the policy and value model."""

    learning_rate: Annotated[float, Field(gt=0, le=1)] = 3e-6
    """Peak learning rate."""
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    """Sequences per forward/backward pass on one device (the micro-batch, which sizes
    memory); each mini-batch (ppo.rolloutBatchSize / ppo.miniBatches) is accumulated from
    such passes, so gradientAccumulationSteps is not used by PPO."""


class PPOSettings(ApiModel):
    """The PPO algorithm's settings (names follow TRL's PPOConfig)."""

    total_episodes: Annotated[int, Field(ge=1)] = 10000
    """Prompts answered over the whole run."""
    rollout_batch_size: Annotated[int, Field(ge=1, le=65536)] = 64
    """Prompts answered per rollout, per device."""
    mini_batches: Annotated[int, Field(ge=1, le=1024)] = 1
    """Mini-batches each rollout is split into for the updates."""
    epochs: Annotated[int, Field(ge=1, le=100)] = 4
    """Passes of PPO updates over each rollout."""
    kl_coef: Annotated[float, Field(ge=0)] = 0.05
    """Weight of the KL penalty to the reference policy in the reward."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """KL estimator: k1 (log-ratio, unbiased) or k3 (lower variance, always positive)."""
    clip_range: Annotated[float, Field(gt=0, le=10)] = 0.2
    """Clip range of the policy ratio."""
    clip_range_value: Annotated[float, Field(gt=0, le=1000)] = 0.2
    """Clip range of the value predictions."""
    value_coef: Annotated[float, Field(ge=0)] = 0.1
    """Weight of the value loss."""
    gamma: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Discount factor."""
    lambda_: Annotated[float, Field(ge=0, le=1, alias="lambda")] = 0.95
    """GAE lambda: bias-variance trade-off of the advantage estimates."""
    response_length: Annotated[int, Field(ge=1, le=65536)] = 53
    """Longest generated response, in tokens."""
    temperature: Annotated[float, Field(gt=0, le=10)] = 0.7
    """Sampling temperature of rollouts."""
    missing_eos_penalty: Annotated[float, Field(ge=0)] | None = None
    """Subtracted from the score of responses that do not end with a stop token."""
    stop_tokens: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], ListSet()] | None
    ) = Field(default=None, min_length=1, max_length=16)
    """Tokens that end a response (exact token strings of the policy's tokenizer). Default:
    every EOS id of the policy's generation config and tokenizer, plus the chat template's
    end-of-turn token (<|eot_id|>, <|im_end|>, <end_of_turn>)."""
    whiten_rewards: bool = False
    """Whiten (normalise) rewards within each batch."""
    eval_prompts: Annotated[int, Field(ge=0, le=100000)] = 64
    """Held-out prompts on which the policy is compared with the reference at the end."""


ROLLOUT_SPLITS_EVENLY = Rule(
    cel="self.ppo.rolloutBatchSize % self.ppo.miniBatches == 0",
    check=lambda spec: spec.ppo.rollout_batch_size % spec.ppo.mini_batches == 0,
    message="ppo.miniBatches: must divide ppo.rolloutBatchSize evenly",
    field="ppo.miniBatches",
)


MICRO_BATCH_SPLITS_MINI_BATCH = Rule(
    cel=(
        "self.training.batchSize >= self.ppo.rolloutBatchSize / self.ppo.miniBatches"
        " || (self.ppo.rolloutBatchSize / self.ppo.miniBatches) % self.training.batchSize == 0"
    ),
    check=lambda spec: (
        spec.training.batch_size >= spec.ppo.rollout_batch_size // spec.ppo.mini_batches
        or (spec.ppo.rollout_batch_size // spec.ppo.mini_batches) % spec.training.batch_size == 0
    ),
    message=(
        "training.batchSize: in PPO it is the micro-batch and must divide the mini-batch"
        " (ppo.rolloutBatchSize / ppo.miniBatches) evenly"
    ),
    field="training.batchSize",
)


PPO_NEEDS_DDP = Rule(
    cel="self.distributed.strategy == 'ddp'",
    check=lambda spec: spec.distributed.strategy == "ddp",
    message=(
        "distributed.strategy: PPO keeps four models in step and supports ddp only;"
        " to fit bigger models lower training.batchSize, turn on"
        " training.gradientCheckpointing or use GPUs with more memory"
    ),
    field="distributed.strategy",
)


class PPOJobSpec(JobSpec):
    """Proximal policy optimisation of the policy against the reward model."""

    rules = (*JobSpec.rules, ROLLOUT_SPLITS_EVENLY, MICRO_BATCH_SPLITS_MINI_BATCH, PPO_NEEDS_DDP)

    policy: PolicyModelSource
    """The policy to optimise (usually an SFTJob's output); a frozen copy is the reference."""
    reward_model: RewardModelSource
    """The reward model scoring responses (usually a RewardModelJob's output)."""
    value_model: RewardModelSource | None = None
    """Initial value model; the reward model when unset. It reads the policy's tokens, so
    it must have the policy's tokenizer (checked at start; the policy itself works). The
    reward model may have any tokenizer: responses are decoded and re-encoded for it."""
    dataset: PromptDataset
    """Prompts."""
    training: PPOTraining = Field(default_factory=PPOTraining)
    """Optimisation settings."""
    ppo: PPOSettings = Field(default_factory=PPOSettings)
    """PPO algorithm settings."""
