"""The RL loop's settings (``PPOHyperparameters``) and their validation."""

from __future__ import annotations

from dataclasses import dataclass

from .estimators import (
    ESTIMATORS,
    GROUP_ESTIMATORS,
    KL_ESTIMATORS,
    KL_PENALTIES,
    REWARD_SCALINGS,
    AdvantageSettings,
)


@dataclass
class PPOHyperparameters:
    """Knobs of the loop. Names differ from TRL's PPOConfig where TRL's were abbreviations:
    num_ppo_epochs -> epochs, num_mini_batches -> mini_batches, cliprange -> clip_range,
    cliprange_value -> clip_range_value, vf_coef -> value_coef. The estimator's knobs follow
    OpenRLHF and TRL: samples_per_prompt (n_samples_per_prompt, num_generations),
    kl_penalty "loss" (use_kl_loss), scale_rewards and normalize_advantages (TRL's)."""

    total_episodes: int = 10000  # responses sampled over the run (all processes)
    rollout_batch_size: int = 64  # responses per rollout per process (prompts x samples)
    mini_batches: int = 1  # each rollout split into this many mini-batches per epoch
    gradient_accumulation_steps: int = 1  # micro-batches per mini-batch
    epochs: int = 4  # passes over each rollout
    learning_rate: float = 3e-6
    lr_scheduler: str = "linear"  # transformers get_scheduler name
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    kl_coef: float = 0.05
    kl_estimator: str = "k1"  # "k1", "k2" or "k3"
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    value_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    response_length: int = 53
    temperature: float = 0.7
    missing_eos_penalty: float | None = None
    whiten_rewards: bool = False
    seed: int = 42
    advantage_estimator: str = "gae"  # "gae", "grpo", "rloo" or "reinforce++"
    samples_per_prompt: int = 1  # responses per prompt, side by side in a rollout
    kl_penalty: str | None = None  # "reward" or "loss"; None: "loss" for grpo, else "reward"
    scale_rewards: str = "group"  # grpo: divide by the std of the "group", "batch" or "none"
    normalize_advantages: bool = False  # rloo: standardise the advantages over the rollout

    @property
    def mini_batch_size(self) -> int:
        """Rollout samples per optimizer step on one process."""
        return self.rollout_batch_size // self.mini_batches

    @property
    def micro_batch_size(self) -> int:
        """Samples per forward/backward pass on one process (memory is sized by this)."""
        return self.mini_batch_size // self.gradient_accumulation_steps

    @property
    def prompts_per_rollout(self) -> int:
        """Distinct prompts per rollout per process."""
        return self.rollout_batch_size // self.samples_per_prompt

    @property
    def uses_value_model(self) -> bool:
        return self.advantage_estimator == "gae"

    @property
    def kl_in_loss(self) -> bool:
        return self.resolved_kl_penalty == "loss"

    @property
    def resolved_kl_penalty(self) -> str:
        if self.kl_penalty is not None:
            return self.kl_penalty
        return "loss" if self.advantage_estimator == "grpo" else "reward"

    def advantage_settings(self) -> AdvantageSettings:
        return AdvantageSettings(
            estimator=self.advantage_estimator,
            samples_per_prompt=self.samples_per_prompt,
            kl_coef=self.kl_coef,
            kl_penalty=self.resolved_kl_penalty,
            gamma=self.gamma,
            lam=self.lam,
            whiten_rewards=self.whiten_rewards,
            scale_rewards=self.scale_rewards,
            normalize_advantages=self.normalize_advantages,
        )

    def validate(self) -> None:
        """Fail at construction rather than mid-run on settings the loop cannot honour."""
        if self.total_episodes < 1:
            raise ValueError("total_episodes must be at least 1")
        if (
            self.rollout_batch_size < 1
            or self.mini_batches < 1
            or self.gradient_accumulation_steps < 1
        ):
            raise ValueError(
                "rollout_batch_size, mini_batches and gradient_accumulation_steps must be >= 1"
            )
        if self.rollout_batch_size % self.mini_batches:
            raise ValueError(
                f"rollout_batch_size ({self.rollout_batch_size}) must be a multiple of "
                f"mini_batches ({self.mini_batches})"
            )
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"the mini-batch size ({self.mini_batch_size}) must be a multiple of "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps})"
            )
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                "kl_estimator must be 'k1' (plain log-ratio, unbiased), 'k2' (half its square,"
                " its gradient is the KL's) or 'k3' (lower variance, unbiased, never negative);"
                " see http://joschu.net/blog/kl-approx.html"
            )
        if self.temperature <= 0:
            raise ValueError(
                "temperature must be > 0: the loss needs the sampling distribution's"
                " log-probabilities"
            )
        if self.response_length < 1:
            raise ValueError("response_length must be at least 1")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError("warmup_ratio must be within [0, 1]")
        self._validate_estimator()

    def _validate_estimator(self) -> None:
        if self.advantage_estimator not in ESTIMATORS:
            raise ValueError(f"advantage_estimator must be one of {', '.join(ESTIMATORS)}")
        if self.samples_per_prompt < 1:
            raise ValueError("samples_per_prompt must be at least 1")
        if self.advantage_estimator in GROUP_ESTIMATORS and self.samples_per_prompt < 2:
            raise ValueError(
                f"{self.advantage_estimator} compares the answers to one prompt: "
                "samples_per_prompt must be at least 2"
            )
        if self.rollout_batch_size % self.samples_per_prompt:
            raise ValueError(
                f"rollout_batch_size ({self.rollout_batch_size}) counts responses and must be a"
                f" multiple of samples_per_prompt ({self.samples_per_prompt})"
            )
        if self.kl_penalty is not None and self.kl_penalty not in KL_PENALTIES:
            raise ValueError("kl_penalty must be 'reward' or 'loss'")
        if self.scale_rewards not in REWARD_SCALINGS:
            raise ValueError(f"scale_rewards must be one of {', '.join(REWARD_SCALINGS)}")
