"""RL for language models: the loop we own since TRL dropped its PPOTrainer (last in trl 1.12),
with a choice of advantage estimator (``estimators.py``): PPO's ``gae`` with a value model,
or ``grpo``, ``rloo`` and ``reinforce++`` without one, as OpenRLHF runs them in one loop.

The PPO algorithm follows TRL's PPOTrainer (``trl/experimental/ppo/ppo_trainer.py`` in trl
1.12), itself a port of OpenAI's lm-human-preferences. One *update* reads as its phases:

1. Generate (``rollout.py``). This process's prompts of the update, each repeated
   ``samples_per_prompt`` times side by side, are answered by sampling the policy
   (temperature, at most ``response_length`` tokens). Generation stops at any stop token
   (every EOS id of the model plus the chat template's end-of-turn); everything after it
   becomes padding.
2. Score. One reward-model score per response: the response is decoded to text and
   re-encoded with the reward model's own tokenizer in the form the reward model was
   trained on (``scoring.py``), then scored by the reward model's own forward. Responses
   without a stop token lose ``missing_eos_penalty``.
3. Policy and reference log-probabilities (``forward.py``) of the sampled tokens, and with
   ``gae`` the value model's value of every response position; the per-token KL estimate
   (k1, k2 or k3) of the policy from the reference.
4. Advantages (``estimators.compute_advantages``): the KL penalty in the reward (or left to
   the loss), then GAE, group-relative, leave-one-out or REINFORCE++ advantages.
5. Update (``ppo_update.py``). ``epochs`` passes over the rollout in shuffled mini-batches:
   clipped policy loss, plus the clipped value loss with a value model, plus the KL term
   when it sits in the loss; one AdamW step per mini-batch. The learning-rate scheduler steps
   once per update, as in TRL.

Checkpoints are ``ppo_checkpoint.py``'s. ``PPOLoop`` strings the phases together.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import accelerate
import numpy as np
import torch
from accelerate.utils import gather_object
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from transformers import PreTrainedTokenizerBase, get_scheduler
from trl.trainer.utils import disable_dropout_in_model

from . import scoring
from .checkpointing import CheckpointSchedule
from .estimators import (
    ESTIMATORS,
    GROUP_ESTIMATORS,
    KL_ESTIMATORS,
    KL_PENALTIES,
    REWARD_SCALINGS,
    AdvantageSettings,
    compute_advantages,
    generalized_advantage_estimation,
    kl_estimate,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
)
from .forward import (
    PolicyAndValue,
    accepts_logits_to_keep,
    check_value_model,
    response_logits,
    token_logprobs,
)
from .ppo_checkpoint import (
    CHECKPOINT_PREFIX,
    TRAINER_STATE_FILE,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .ppo_update import PROCESS_SEED_STRIDE, PolicyUpdate, clipped_policy_loss, clipped_value_loss
from .rollout import (
    Generation,
    PromptSchedule,
    Rollout,
    Sampler,
    first_true_indices,
    is_stop_token,
    left_padded,
    truncate_after_stop_token,
)

__all__ = [
    "CHECKPOINT_PREFIX",
    "TRAINER_STATE_FILE",
    "PPOHyperparameters",
    "PPOLoop",
    "clipped_policy_loss",
    "clipped_value_loss",
    "first_true_indices",
    "generalized_advantage_estimation",
    "is_stop_token",
    "kl_estimate",
    "latest_checkpoint",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "per_token_rewards",
    "truncate_after_stop_token",
]


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


class PPOLoop:
    """Runs RL updates over a list of prompts; see the module docstring for the phases.

    The models are used in place: the policy (and value model, gae only) is trained, dropout
    is switched off in all of them (as TRL does: dropout would make the rollout's
    log-probabilities differ from the ones recomputed for the loss), the reference policy and
    reward model are frozen. On CPU all models are converted to fp32 (half precision is
    slower or unsupported there).
    """

    def __init__(
        self,
        policy: nn.Module,
        reference_policy: nn.Module,
        value_model: nn.Module | None,
        reward_model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        train_prompts: list[list[int]],
        hyperparameters: PPOHyperparameters,
        accelerator: accelerate.Accelerator | None = None,
        on_log: Callable[[int, int, dict[str, float]], None] | None = None,
        logging_steps: int = 1,
        reward_tokenizer: PreTrainedTokenizerBase | None = None,
        reward_format: scoring.ScoringFormat | None = None,
        reward_prompts: list[scoring.Turns] | None = None,
        stop_token_ids: list[int] | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        """``value_model`` is required by the ``gae`` estimator and refused by the others.
        ``reward_tokenizer`` and ``reward_format`` say how the reward model reads a
        (prompt, response) (default: the policy's tokenizer, plain prompt + response text,
        nothing appended); ``reward_prompts`` are the prompts as the reward model should see
        them, one per train prompt (default: the decoded prompt ids). ``stop_token_ids`` end
        responses (default: the tokenizer's EOS)."""
        hyperparameters.validate()
        if reference_policy is policy:
            raise ValueError(
                "reference_policy must be a separate (frozen) copy of the policy, "
                "not the same object"
            )
        if not train_prompts:
            raise ValueError("train_prompts is empty")
        if any(len(prompt) == 0 for prompt in train_prompts):
            raise ValueError("every prompt needs at least one token")
        if hyperparameters.uses_value_model and value_model is None:
            raise ValueError("the gae estimator needs a value model")
        if not hyperparameters.uses_value_model and value_model is not None:
            raise ValueError(
                f"the {hyperparameters.advantage_estimator} estimator uses no value model;"
                " pass value_model=None"
            )
        if value_model is not None:
            check_value_model(value_model)
        if reward_prompts is not None and len(reward_prompts) != len(train_prompts):
            raise ValueError("reward_prompts must hold one prompt per train prompt")

        self.hyperparameters = hyperparameters
        self.tokenizer = tokenizer
        self.train_prompts = [list(prompt) for prompt in train_prompts]
        self.on_log = on_log
        self.logging_steps = max(1, int(logging_steps))
        self.accelerator = accelerator or accelerate.Accelerator(cpu=not torch.cuda.is_available())
        if self.accelerator.gradient_accumulation_steps != 1:
            raise ValueError(
                "pass an Accelerator with gradient_accumulation_steps=1: PPOLoop accumulates "
                "hyperparameters.gradient_accumulation_steps micro-batches itself"
            )
        self.step = 0
        self.stopped = False

        self.eos_token_id, self.pad_token_id = self._special_token_ids(tokenizer)
        self.stop_token_ids = list(dict.fromkeys(stop_token_ids or [self.eos_token_id]))
        self.sampler = Sampler(hyperparameters.temperature, self.stop_token_ids, self.pad_token_id)
        self.prompt_schedule = PromptSchedule(
            len(self.train_prompts),
            hyperparameters.prompts_per_rollout,
            hyperparameters.samples_per_prompt,
            hyperparameters.seed,
            self.accelerator.process_index,
            self.accelerator.num_processes,
        )
        device = self.accelerator.device
        trained = [policy] + ([value_model] if value_model is not None else [])
        for model in (*trained, reference_policy, reward_model):
            disable_dropout_in_model(model)
            if device.type == "cpu":
                model.float()
        for frozen in (reference_policy, reward_model):
            frozen.eval()
            frozen.requires_grad_(False)
        self.reference_policy = reference_policy.to(device)
        self.reward_model = reward_model.to(device)
        self.reference_accepts_logits_to_keep = accepts_logits_to_keep(reference_policy)
        self.reward_scorer = scoring.RewardScorer(
            self.reward_model,
            reward_tokenizer or tokenizer,
            reward_format or scoring.ScoringFormat(conversational=False, append_eos=False),
            batch_size=hyperparameters.micro_batch_size,
        )
        self.reward_prompts = (
            list(reward_prompts)
            if reward_prompts is not None
            else [self._decode_prompt(prompt) for prompt in self.train_prompts]
        )
        if gradient_checkpointing:
            for model in trained:
                model.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )

        # Like TRL the trained models stay in train mode throughout (dropout is off anyway).
        policy_and_value = PolicyAndValue(policy, value_model)
        policy_and_value.train()
        optimizer = torch.optim.AdamW(
            self._parameter_groups(policy_and_value, hyperparameters.weight_decay),
            lr=hyperparameters.learning_rate,
        )
        self.model, self.optimizer = self.accelerator.prepare(policy_and_value, optimizer)
        self.scheduler = self._build_scheduler(completed_updates=0)
        self.policy_update = PolicyUpdate(
            self.accelerator,
            self.model,
            self.optimizer,
            hyperparameters,
            with_value_model=value_model is not None,
        )

    # ----- sizes -----------------------------------------------------------------------

    @property
    def global_batch_size(self) -> int:
        """Responses per update over all processes."""
        return self.hyperparameters.rollout_batch_size * self.accelerator.num_processes

    @property
    def total_updates(self) -> int:
        """Updates (rollouts) of the whole run. Rounded up, so the run may sample a few more
        than total_episodes responses (as TRL)."""
        return math.ceil(self.hyperparameters.total_episodes / self.global_batch_size)

    @property
    def _policy(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model).policy

    @property
    def _value_model(self) -> nn.Module | None:
        return self.accelerator.unwrap_model(self.model).value_model

    def _trained_models(self) -> dict[str, nn.Module]:
        """What a checkpoint holds, by file stem."""
        models = {"policy": self._policy}
        if self._value_model is not None:
            models["value_model"] = self._value_model
        return models

    # ----- setup helpers ----------------------------------------------------------------

    @staticmethod
    def _special_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
        """EOS ends responses; padding defaults to EOS when the tokenizer has none (a common
        case for decoder-only models). Response ends are found from masks, never by pad id."""
        if tokenizer.eos_token_id is None:
            raise ValueError(
                "the tokenizer needs an EOS token: it is the stop token that ends responses"
            )
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return int(tokenizer.eos_token_id), int(tokenizer.pad_token_id)

    @staticmethod
    def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Weight decay on matrices only; biases and norm scales (1-D) are not decayed, as in
        transformers' Trainer."""
        decayed: list[nn.Parameter] = []
        not_decayed: list[nn.Parameter] = []
        for parameter in model.parameters():
            if parameter.requires_grad:
                (decayed if parameter.ndim >= 2 else not_decayed).append(parameter)
        return [
            {"params": decayed, "weight_decay": weight_decay},
            {"params": not_decayed, "weight_decay": 0.0},
        ]

    def _build_scheduler(self, completed_updates: int) -> LRScheduler:
        """The LR schedule over total_updates, stepped once per update (TRL's convention),
        positioned after ``completed_updates``.

        On resume the schedule is rebuilt and fast-forwarded rather than loaded: it is a pure
        function of (step, total), and the total may have grown since the checkpoint.
        """
        for group in self.optimizer.param_groups:
            group["lr"] = self.hyperparameters.learning_rate
            group["initial_lr"] = self.hyperparameters.learning_rate
        scheduler = get_scheduler(
            self.hyperparameters.lr_scheduler,
            self.optimizer,
            num_warmup_steps=math.ceil(self.hyperparameters.warmup_ratio * self.total_updates),
            num_training_steps=self.total_updates,
        )
        with _quiet_scheduler_warnings():
            for _ in range(completed_updates):
                scheduler.step()
        return scheduler

    def _left_padded(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return left_padded(prompts, self.pad_token_id, self.accelerator.device)

    def _decode_prompt(self, prompt: list[int]) -> str:
        return self.tokenizer.decode(prompt, skip_special_tokens=True)

    # ----- the phases of one update -----------------------------------------------------

    def generate(self, update: int) -> Generation:
        """Phase 1: sample this process's responses of update ``update`` (0-based); the
        ``samples_per_prompt`` answers to a prompt are consecutive rows."""
        indices = self.prompt_schedule.indices(update)
        prompt_ids, prompt_mask = self._left_padded([self.train_prompts[i] for i in indices])
        responses, response_mask = self.sampler.sample(
            self._policy, prompt_ids, prompt_mask, self.hyperparameters.response_length
        )
        return Generation(indices, prompt_ids, prompt_mask, responses, response_mask)

    def score(
        self, generation: Generation, reward_prompts: list[scoring.Turns] | None = None
    ) -> torch.Tensor:
        """Phase 2: the reward model's score of each response (``reward_prompts`` default to
        the training prompts the generation answered)."""
        if reward_prompts is None:
            reward_prompts = [self.reward_prompts[i] for i in generation.prompt_indices]
        return self.reward_scores(
            reward_prompts,
            generation.prompt_ids,
            generation.prompt_mask,
            generation.responses,
            generation.response_mask,
        )

    @torch.no_grad()
    def policy_logprobs(
        self, generation: Generation, with_values: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Phase 3a: the policy's log-probabilities of the sampled tokens (the "old" ones the
        update's ratio is taken against) and, ``with_values``, the value model's values, in
        micro-batch chunks to bound memory."""
        policy_and_value = self.accelerator.unwrap_model(self.model)
        logprobs, values = [], []
        for ids, mask, response in self._chunks(generation):
            if with_values:
                logits, chunk_values = policy_and_value(
                    input_ids=ids, attention_mask=mask, response_width=response.size(1)
                )
                values.append(chunk_values.float())
            else:
                logits = response_logits(
                    policy_and_value.policy,
                    ids,
                    mask,
                    response.size(1),
                    policy_and_value.policy_accepts_logits_to_keep,
                )
            logprobs.append(token_logprobs(logits, response, self.hyperparameters.temperature))
            del logits
        return torch.cat(logprobs), (torch.cat(values) if values else None)

    @torch.no_grad()
    def reference_logprobs(self, generation: Generation) -> torch.Tensor:
        """Phase 3b: the frozen reference policy's log-probabilities of the sampled tokens."""
        pieces = []
        for ids, mask, response in self._chunks(generation):
            logits = response_logits(
                self.reference_policy,
                ids,
                mask,
                response.size(1),
                self.reference_accepts_logits_to_keep,
            )
            pieces.append(token_logprobs(logits, response, self.hyperparameters.temperature))
            del logits
        return torch.cat(pieces)

    def _chunks(self, generation: Generation) -> Iterator[tuple[torch.Tensor, ...]]:
        input_ids, attention_mask = generation.input_ids, generation.attention_mask
        chunk = self.hyperparameters.micro_batch_size
        for start in range(0, input_ids.size(0), chunk):
            rows = slice(start, start + chunk)
            yield input_ids[rows], attention_mask[rows], generation.responses[rows]

    def rollout(self, update: int) -> Rollout:
        """Phases 1-4 for one batch of prompts: generate, score, log-probabilities, advantages."""
        hp = self.hyperparameters
        generation = self.generate(update)
        scores = self.score(generation)
        logprobs, values = self.policy_logprobs(generation, with_values=hp.uses_value_model)
        reference_logprobs = self.reference_logprobs(generation)

        response_mask = generation.response_mask
        mask = response_mask.to(logprobs.dtype)
        ends_with_eos = (
            is_stop_token(generation.responses, self.stop_token_ids)
            .logical_and(response_mask)
            .any(dim=1)
        )
        if hp.missing_eos_penalty is not None:
            scores = scores - hp.missing_eos_penalty * (~ends_with_eos).to(scores.dtype)
        logprobs, reference_logprobs = logprobs * mask, reference_logprobs * mask
        kl = kl_estimate(logprobs, reference_logprobs, hp.kl_estimator) * mask
        values = values * mask if values is not None else None
        advantages = compute_advantages(
            hp.advantage_settings(),
            scores,
            kl,
            mask,
            values,
            sum_over_processes=lambda totals: self.accelerator.reduce(totals, reduction="sum"),
        )
        return Rollout(
            input_ids=generation.input_ids,
            attention_mask=generation.attention_mask,
            responses=generation.responses,
            response_mask=response_mask,
            logprobs=logprobs,
            reference_logprobs=reference_logprobs,
            values=values,
            scores=scores,
            kl=kl,
            non_score_rewards=advantages.non_score_rewards,
            advantages=advantages.advantages,
            returns=advantages.returns,
            ends_with_eos=ends_with_eos,
            zero_variance_group_share=advantages.zero_variance_group_share,
        )

    def update(self, rollout: Rollout, update: int) -> dict[str, torch.Tensor]:
        """Phase 5: optimise on the rollout; per-micro-batch statistics."""
        return self.policy_update.run(rollout, update)

    def reward_scores(
        self,
        reward_prompts: list[scoring.Turns],
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        responses: torch.Tensor,
        response_mask: torch.Tensor,
    ) -> torch.Tensor:
        """The reward model's scores of the responses: each decoded to text in the context
        of its prompt (special and stop tokens dropped) and scored through ``scoring``
        exactly as the reward stage evaluates its model, so any tokenizer and pooling the
        reward model has works."""
        texts = []
        for row in range(responses.size(0)):
            text = self._continuation(
                prompt_ids[row][prompt_mask[row].bool()].tolist(),
                responses[row][response_mask[row].bool()].tolist(),
            )
            # Chat templates render a message's content without surrounding whitespace.
            texts.append(text.strip() if self.reward_scorer.form.conversational else text)
        return self.reward_scorer.score(reward_prompts, texts).to(self.accelerator.device)

    def _continuation(self, prompt: list[int], response: list[int]) -> str:
        """The response's text as it reads after the prompt. Decoded alone, a SentencePiece
        response (Mistral, Gemma, Llama-2) loses the space its first token starts with, and
        "the cat" + "sees" would be re-encoded as "the catsees"."""
        decode = self.tokenizer.decode
        head = decode(prompt, skip_special_tokens=True)
        whole = decode(prompt + response, skip_special_tokens=True)
        if whole.startswith(head):
            return whole[len(head) :]
        return decode(response, skip_special_tokens=True)

    def _metrics(
        self,
        rollout: Rollout,
        stats: dict[str, torch.Tensor],
        learning_rate: float,
        episodes_per_second: float,
    ) -> dict[str, float]:
        """TRL's metric names, averaged over processes (``val/num_eos_tokens`` is summed).
        Without a value model there are no value metrics; with the KL in the loss its term is
        ``loss/kl_avg``; the group estimators add ``objective/frac_reward_zero_std``."""
        mask = rollout.response_mask.to(rollout.logprobs.dtype)
        mean_non_score_reward = rollout.non_score_rewards.sum(1).mean()
        local = {
            "objective/kl": rollout.kl.sum(1).mean(),
            # TRL's estimate of the sequence entropy: summed -log p of the sampled tokens.
            "objective/entropy": (-rollout.logprobs * mask).sum(1).mean(),
            "objective/non_score_reward": mean_non_score_reward,
            "objective/rlhf_reward": mean_non_score_reward + rollout.scores.mean(),
            "objective/scores": rollout.scores.mean(),
            "policy/approxkl_avg": stats["approxkl"].mean(),
            "policy/clipfrac_avg": stats["policy_clipfrac"].mean(),
            "loss/policy_avg": stats["policy_loss"].mean(),
            "policy/entropy_avg": stats["entropy"].mean(),
            "val/ratio": stats["ratio"].mean(),
            # The loss the optimizer minimises and the gradient norm before clipping, under
            # the names Trainer logs them by.
            "loss": stats["loss"].mean(),
            "grad_norm": stats["grad_norm"].mean(),
        }
        if "value_loss" in stats:
            local["loss/value_avg"] = stats["value_loss"].mean()
            local["val/clipfrac_avg"] = stats["value_clipfrac"].mean()
        if "kl_loss" in stats:
            local["loss/kl_avg"] = stats["kl_loss"].mean()
        if rollout.zero_variance_group_share is not None:
            # Every process holds the same number of groups: the mean of shares is the share.
            local["objective/frac_reward_zero_std"] = rollout.zero_variance_group_share
        names = list(local)
        gathered = self.accelerator.gather(
            torch.stack([local[n].float() for n in names]).unsqueeze(0)
        )
        means = gathered.reshape(-1, len(names)).mean(dim=0).tolist()
        metrics = dict(zip(names, means, strict=True))
        all_ratios = self.accelerator.gather(stats["ratio"].reshape(1, -1))
        metrics["val/ratio_var"] = all_ratios.var().item() if all_ratios.numel() > 1 else 0.0
        metrics["val/num_eos_tokens"] = float(
            self.accelerator.reduce(rollout.ends_with_eos.sum().reshape(1), reduction="sum").item()
        )
        metrics["lr"] = float(learning_rate)
        metrics["episode"] = float(self.step * self.global_batch_size)
        metrics["eps"] = float(episodes_per_second)
        return metrics

    # ----- public API -------------------------------------------------------------------

    def train(
        self,
        checkpoint_dir: Path | None = None,
        checkpoint_interval: int = 0,
        checkpoints_to_keep: int = 2,
        should_stop: Callable[[], bool] | None = None,
        checkpoint_minutes: float = 0.0,
    ) -> dict[str, float]:
        """Runs until total_updates; if checkpoint_dir holds checkpoints, resumes from the
        latest (trained weights, optimizer, RNG states, step; the LR schedule is re-derived at
        that step) so the step count and LR schedule continue. Saves a checkpoint every
        checkpoint_interval updates into checkpoint_dir/checkpoint-<step>/ (written to a temp
        folder then renamed, keep the last checkpoints_to_keep), or sooner once
        checkpoint_minutes have passed since the last save (checkpointing.py). Calls
        on_log(step, total_updates, metrics) on the main process every logging_steps updates
        and after the last. Returns the last metrics.

        ``should_stop`` is asked after every update (SIGTERM, Ctrl-C): when any process says
        yes, a checkpoint is saved and train() returns early with ``self.stopped`` set."""
        checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        last_metrics: dict[str, float] = {}
        resume_from = latest_checkpoint(checkpoint_dir)
        if resume_from is not None:
            last_metrics = self._load_checkpoint(resume_from)
        else:
            accelerate.utils.set_seed(
                self.hyperparameters.seed + PROCESS_SEED_STRIDE * self.accelerator.process_index
            )

        start_time, start_step = time.time(), self.step
        schedule = CheckpointSchedule(
            checkpoint_interval, checkpoint_minutes, agree=self._anyone_stops
        )
        while self.step < self.total_updates:
            update = self.step
            rollout = self.rollout(update)
            stats = self.update(rollout, update)
            learning_rate = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            self.step += 1
            elapsed = max(time.time() - start_time, 1e-9)
            episodes_per_second = (self.step - start_step) * self.global_batch_size / elapsed
            last_metrics = self._metrics(rollout, stats, learning_rate, episodes_per_second)
            del rollout, stats
            saved = checkpoint_dir is not None and schedule.due(self.step)
            if saved:
                self._save_checkpoint(checkpoint_dir, last_metrics, checkpoints_to_keep)
                schedule.saved()
            should_log = self.step % self.logging_steps == 0 or self.step == self.total_updates
            if should_log and self.on_log is not None and self.accelerator.is_main_process:
                self.on_log(self.step, self.total_updates, dict(last_metrics))
            if should_stop is not None and self._anyone_stops(should_stop()):
                if checkpoint_dir is not None and not saved:
                    self._save_checkpoint(checkpoint_dir, last_metrics, checkpoints_to_keep)
                self.stopped = True
                break
        return last_metrics

    def _anyone_stops(self, mine: bool) -> bool:
        """Every process must stop at the same update, or the collectives would hang."""
        flag = torch.tensor([1.0 if mine else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    @torch.no_grad()
    def evaluate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int | None = None,
        reward_prompts: list[scoring.Turns] | None = None,
    ) -> dict[str, Any]:
        """Sampled (temperature from hyperparameters, seeded) responses of the policy AND of
        the reference policy to the same prompts, scored by the reward model:
        returns {"eval/reward_policy": mean, "eval/reward_reference": mean,
                 "eval/win_rate": fraction where policy score > reference score (ties count 0.5),
                 "eval/kl": mean summed per-token KL policy||reference on the policy's responses
                            (with the configured estimator),
                 "samples": [{"prompt", "policy", "reference", "policy_score",
                              "reference_score"}, ...]}

        One response per prompt whatever samples_per_prompt is. ``reward_prompts`` are the
        prompts as the reward model sees them (default: decoded). Scores are the reward
        model's raw scores (no missing_eos_penalty). Both models sample from the same seed,
        so identical models give identical responses (win rate 0.5). Under DDP each process
        evaluates a contiguous share of the prompts; every process returns the full result.
        The training RNG state is left untouched.
        """
        if not prompts:
            raise ValueError("evaluate() needs at least one prompt")
        max_new_tokens = max_new_tokens or self.hyperparameters.response_length
        if reward_prompts is None:
            reward_prompts = [self._decode_prompt(prompt) for prompt in prompts]
        share = math.ceil(len(prompts) / self.accelerator.num_processes)
        mine = slice(
            self.accelerator.process_index * share, (self.accelerator.process_index + 1) * share
        )
        my_prompts, my_reward_prompts = prompts[mine], reward_prompts[mine]
        rows: list[dict[str, Any]] = []
        batch = self.hyperparameters.rollout_batch_size
        for start in range(0, len(my_prompts), batch):
            rows.extend(
                self._evaluate_batch(
                    my_prompts[start : start + batch],
                    max_new_tokens,
                    start,
                    my_reward_prompts[start : start + batch],
                )
            )
        rows = gather_object(rows) if self.accelerator.num_processes > 1 else rows

        policy_scores = torch.tensor([row["policy_score"] for row in rows])
        reference_scores = torch.tensor([row["reference_score"] for row in rows])
        wins = (policy_scores > reference_scores).float() + 0.5 * (
            policy_scores == reference_scores
        ).float()
        return {
            "eval/reward_policy": policy_scores.mean().item(),
            "eval/reward_reference": reference_scores.mean().item(),
            "eval/win_rate": wins.mean().item(),
            "eval/kl": float(np.mean([row.pop("kl") for row in rows])),
            "samples": rows,
        }

    def _evaluate_batch(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        offset: int,
        reward_prompts: list[scoring.Turns],
    ) -> list[dict[str, Any]]:
        prompt_ids, prompt_mask = self._left_padded(prompts)
        seed = (
            self.hyperparameters.seed
            + PROCESS_SEED_STRIDE * self.accelerator.process_index
            + offset
        )
        devices = [self.accelerator.device] if self.accelerator.device.type == "cuda" else []
        generations: dict[str, Generation] = {}
        with torch.random.fork_rng(devices=devices):
            for name, model in (("policy", self._policy), ("reference", self.reference_policy)):
                torch.manual_seed(seed)
                responses, mask = self.sampler.sample(
                    model, prompt_ids, prompt_mask, max_new_tokens
                )
                generations[name] = Generation([], prompt_ids, prompt_mask, responses, mask)
        policy_scores = self.score(generations["policy"], reward_prompts)
        reference_scores = self.score(generations["reference"], reward_prompts)
        logprobs, _ = self.policy_logprobs(generations["policy"], with_values=False)
        reference_logprobs = self.reference_logprobs(generations["policy"])
        policy_mask = generations["policy"].response_mask.to(logprobs.dtype)
        kl = (
            kl_estimate(logprobs, reference_logprobs, self.hyperparameters.kl_estimator)
            * policy_mask
        ).sum(1)
        return [
            {
                "prompt": self.tokenizer.decode(prompt, skip_special_tokens=True),
                "policy": self._decode_response(generations["policy"], i),
                "reference": self._decode_response(generations["reference"], i),
                "policy_score": policy_scores[i].item(),
                "reference_score": reference_scores[i].item(),
                "kl": kl[i].item(),
            }
            for i, prompt in enumerate(prompts)
        ]

    def _decode_response(self, generation: Generation, row: int) -> str:
        tokens = generation.responses[row][generation.response_mask[row]]
        return self.tokenizer.decode(tokens.tolist(), skip_special_tokens=True)

    def save_policy(self, path: Path) -> None:
        """Main process only, after unwrapping (accelerator.unwrap_model): policy.save_pretrained
        + tokenizer.save_pretrained; the saved config has use_cache=True so the model generates
        with a KV cache when loaded. Other ranks wait at a barrier."""
        if self.accelerator.is_main_process:
            policy = self._policy
            path = Path(path)
            path.mkdir(parents=True, exist_ok=True)
            policy.config.use_cache = True
            policy.save_pretrained(path)
            self.tokenizer.save_pretrained(path)
        self.accelerator.wait_for_everyone()

    # ----- checkpoints ------------------------------------------------------------------

    def _save_checkpoint(self, checkpoint_dir: Path, metrics: dict[str, float], keep: int) -> None:
        state = {
            "step": self.step,
            "total_updates": self.total_updates,
            "episode": self.step * self.global_batch_size,
            "num_processes": self.accelerator.num_processes,
            "hyperparameters": asdict(self.hyperparameters),
            "metrics": metrics,
        }
        save_checkpoint(
            self.accelerator,
            checkpoint_dir,
            self.step,
            self._trained_models(),
            self.optimizer,
            state,
            keep,
        )

    def _load_checkpoint(self, folder: Path) -> dict[str, float]:
        """Restore weights, optimizer, RNG and step from ``folder``; returns its saved metrics."""
        saved_step = int(folder.name.removeprefix(CHECKPOINT_PREFIX))
        saved = json.loads((folder / TRAINER_STATE_FILE).read_text()).get("hyperparameters", {})
        saved_estimator = saved.get("advantage_estimator", "gae")
        if saved_estimator != self.hyperparameters.advantage_estimator:
            raise ValueError(
                f"{folder} was saved by a {saved_estimator} run; it cannot resume as"
                f" {self.hyperparameters.advantage_estimator} (the trained models differ):"
                " resume with that estimator or start afresh"
            )
        state = load_checkpoint(
            self.accelerator,
            folder,
            self._trained_models(),
            self.optimizer,
            # resumed with more processes than were saved: a fresh but deterministic seed
            fallback_seed=self.hyperparameters.seed
            + PROCESS_SEED_STRIDE * self.accelerator.process_index
            + saved_step,
        )
        self.step = int(state["step"])
        self.scheduler = self._build_scheduler(completed_updates=self.step)
        return dict(state.get("metrics", {}))


@contextlib.contextmanager
def _quiet_scheduler_warnings() -> Iterator[None]:
    """Fast-forwarding a scheduler before any optimizer.step() makes torch warn about call order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
