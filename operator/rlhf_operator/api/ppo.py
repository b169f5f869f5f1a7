"""PPOJob: optimise a policy against a reward model, kept near a reference policy by a
KL penalty, with PPO's value model (advantageEstimator gae) or without one (grpo, rloo,
reinforce++)."""

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


AdvantageEstimator = Literal["gae", "grpo", "rloo", "reinforce++"]


class PPOSettings(ApiModel):
    """The RL algorithm's settings (names follow TRL's PPOConfig and, for the estimators,
    OpenRLHF's and TRL's GRPO/RLOO options)."""

    advantage_estimator: AdvantageEstimator = "gae"
    """How a response's advantage is estimated. gae: PPO with a value model (critic),
    generalised advantage estimation. grpo: group-relative, the score minus the mean of the
    samplesPerPrompt answers to the same prompt, divided by their std (scaleRewards); no
    value model. rloo: REINFORCE leave-one-out, the score minus the mean of the other
    answers to the same prompt; no value model. reinforce++: PPO's per-token rewards (KL on
    every token) summed to returns and normalised over the whole batch; no value model."""
    samples_per_prompt: Annotated[int, Field(ge=1, le=256)] = 1
    """Responses sampled per prompt (OpenRLHF's n_samples_per_prompt, TRL's
    num_generations); at least 2 for grpo and rloo, which compare them."""
    kl_penalty: Literal["reward", "loss"] | None = None
    """Where the KL penalty to the reference goes: reward (klCoef x the per-token estimate
    taken off the reward, as PPO, RLOO and REINFORCE++ do) or loss (klCoef x the mean
    per-token estimate added to the loss, GRPO's use_kl_loss). Default: loss for grpo,
    reward otherwise."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """grpo only: after subtracting the group's mean, divide by the std of the group, of the
    rollout (batch), or by nothing (none: Dr. GRPO). TRL's scale_rewards."""
    normalize_advantages: bool = False
    """rloo only: standardise the leave-one-out advantages over the rollout (TRL's
    normalize_advantages)."""
    total_episodes: Annotated[int, Field(ge=1)] = 10000
    """Responses sampled over the whole run (prompts x samplesPerPrompt)."""
    rollout_batch_size: Annotated[int, Field(ge=1, le=65536)] = 64
    """Responses sampled per rollout, per device (prompts x samplesPerPrompt: a multiple of
    samplesPerPrompt, so every prompt's answers are in one rollout on one device)."""
    mini_batches: Annotated[int, Field(ge=1, le=1024)] = 1
    """Mini-batches each rollout is split into for the updates."""
    epochs: Annotated[int, Field(ge=1, le=100)] = 4
    """Passes of PPO updates over each rollout."""
    kl_coef: Annotated[float, Field(ge=0)] = 0.05
    """Weight of the KL penalty to the reference policy (in the reward or the loss, see
    klPenalty; TRL's beta)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """Per-token KL estimator: k1 (log-ratio, unbiased, can be negative), k2 (half its
    square, its gradient is the KL's: for the loss) or k3 (unbiased, never negative, lower
    variance: GRPO's)."""
    clip_range: Annotated[float, Field(gt=0, le=10)] = 0.2
    """Clip range of the policy ratio."""
    clip_range_value: Annotated[float, Field(gt=0, le=1000)] = 0.2
    """Clip range of the value predictions."""
    value_coef: Annotated[float, Field(ge=0)] = 0.1
    """Weight of the value loss (gae)."""
    gamma: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Discount factor (gae, reinforce++)."""
    lambda_: Annotated[float, Field(ge=0, le=1, alias="lambda")] = 0.95
    """GAE lambda: bias-variance trade-off of the advantage estimates (gae)."""
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
    """Whiten (normalise) rewards within each batch (gae)."""
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


GROUP_ESTIMATORS_NEED_SAMPLES = Rule(
    cel="!(self.ppo.advantageEstimator in ['grpo', 'rloo']) || self.ppo.samplesPerPrompt >= 2",
    check=lambda spec: (
        spec.ppo.advantage_estimator not in ("grpo", "rloo") or spec.ppo.samples_per_prompt >= 2
    ),
    message=(
        "ppo.samplesPerPrompt: grpo and rloo compare the answers to one prompt and need at"
        " least 2 of them"
    ),
    field="ppo.samplesPerPrompt",
)


ROLLOUT_HOLDS_WHOLE_GROUPS = Rule(
    cel="self.ppo.rolloutBatchSize % self.ppo.samplesPerPrompt == 0",
    check=lambda spec: spec.ppo.rollout_batch_size % spec.ppo.samples_per_prompt == 0,
    message=(
        "ppo.rolloutBatchSize: counts responses and must be a multiple of"
        " ppo.samplesPerPrompt, so every prompt's answers are in one rollout"
    ),
    field="ppo.rolloutBatchSize",
)


VALUE_MODEL_ONLY_WITH_GAE = Rule(
    cel="!has(self.valueModel) || self.ppo.advantageEstimator == 'gae'",
    check=lambda spec: spec.value_model is None or spec.ppo.advantage_estimator == "gae",
    message=(
        "valueModel: only the gae estimator has a value model; grpo, rloo and reinforce++"
        " use none (remove valueModel)"
    ),
    field="valueModel",
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

    rules = (
        *JobSpec.rules,
        ROLLOUT_SPLITS_EVENLY,
        MICRO_BATCH_SPLITS_MINI_BATCH,
        GROUP_ESTIMATORS_NEED_SAMPLES,
        ROLLOUT_HOLDS_WHOLE_GROUPS,
        VALUE_MODEL_ONLY_WITH_GAE,
        PPO_NEEDS_DDP,
    )

    policy: PolicyModelSource
    """The policy to optimise (usually an SFTJob's output); a frozen copy is the reference."""
    reward_model: RewardModelSource
    """The reward model scoring responses (usually a RewardModelJob's output)."""
    value_model: RewardModelSource | None = None
    """Initial value model (advantageEstimator gae only); the reward model when unset. It
    reads the policy's tokens, so it must have the policy's tokenizer (checked at start; the
    policy itself works). The reward model may have any tokenizer: responses are decoded and
    re-encoded for it."""
    dataset: PromptDataset
    """Prompts."""
    training: PPOTraining = Field(default_factory=PPOTraining)
    """Optimisation settings."""
    ppo: PPOSettings = Field(default_factory=PPOSettings)
    """RL algorithm settings: the advantage estimator and its knobs."""
