"""PPO for language models: the loop we own since TRL dropped its PPOTrainer (last in trl 1.12).

The algorithm follows TRL's PPOTrainer (``trl/experimental/ppo/ppo_trainer.py`` in trl 1.12,
``trl/trainer/ppo_trainer.py`` in trl 0.12-0.2x), itself a port of OpenAI's
lm-human-preferences. One PPO *update* is:

1. Rollout. Sample a response to each prompt of the batch (temperature, at most
   ``response_length`` tokens). Generation stops at any stop token (every EOS id of the
   model plus the chat template's end-of-turn); everything after it becomes padding.
2. Score. Log-probabilities of the sampled tokens under the policy and the frozen
   reference policy, a value for every response position (value head over the value
   model's backbone), and one reward-model score per response: the response is decoded to
   text and re-encoded with the reward model's own tokenizer in the form the reward model
   was trained on (``scoring.py``), then scored by the reward model's own forward.
3. Rewards. Per token: ``-kl_coef * KL estimate``; the score is added on the last real
   token. Optionally whitened.
4. Advantages. Generalised advantage estimation (gamma, lam), then whitened.
5. Optimise. ``epochs`` passes over the rollout in shuffled mini-batches (each split into
   ``gradient_accumulation_steps`` micro-batches): clipped policy loss plus ``value_coef``
   times the clipped value loss, one AdamW over policy and value parameters, gradient
   clipping, one optimizer step per mini-batch. The learning-rate scheduler steps once per
   update, as in TRL.

The math lives in small pure functions at the top of this module so that it can be unit
tested; ``PPOLoop`` strings them together with models, accelerate and checkpoints.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import accelerate
import numpy as np
import safetensors.torch
import torch
from accelerate.utils import gather_object
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from transformers import GenerationConfig, PreTrainedTokenizerBase, get_scheduler
from trl.trainer.utils import (
    disable_dropout_in_model,
    entropy_from_logits,
    pad,
    selective_log_softmax,
)

from . import scoring
from .checkpointing import CheckpointSchedule
from .estimators import (
    generalized_advantage_estimation,
    kl_estimate,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
)

__all__ = [
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

CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_CHECKPOINT_PREFIX = "tmp-checkpoint-"
TRAINER_STATE_FILE = "trainer_state.json"
# Distinct seeds per process (so ranks sample different responses), as TRL does.
PROCESS_SEED_STRIDE = 100003


@dataclass
class PPOHyperparameters:
    """Knobs of the PPO loop. Names differ from TRL's PPOConfig where TRL's were abbreviations:
    num_ppo_epochs -> epochs, num_mini_batches -> mini_batches, cliprange -> clip_range,
    cliprange_value -> clip_range_value, vf_coef -> value_coef."""

    total_episodes: int = 10000  # prompts answered over the run (all processes)
    rollout_batch_size: int = 64  # prompts per rollout per process
    mini_batches: int = 1  # each rollout split into this many mini-batches per PPO epoch
    gradient_accumulation_steps: int = 1  # micro-batches per mini-batch
    epochs: int = 4  # PPO epochs over each rollout
    learning_rate: float = 3e-6
    lr_scheduler: str = "linear"  # transformers get_scheduler name
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    kl_coef: float = 0.05
    kl_estimator: str = "k1"  # "k1" or "k3"
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

    @property
    def mini_batch_size(self) -> int:
        """Rollout samples per optimizer step on one process."""
        return self.rollout_batch_size // self.mini_batches

    @property
    def micro_batch_size(self) -> int:
        """Samples per forward/backward pass on one process (memory is sized by this)."""
        return self.mini_batch_size // self.gradient_accumulation_steps

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
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(
                "kl_estimator must be 'k1' (plain log-ratio, unbiased) or 'k3' (lower variance, "
                "unbiased, never negative); see http://joschu.net/blog/kl-approx.html"
            )
        if self.temperature <= 0:
            raise ValueError(
                "temperature must be > 0: PPO needs the sampling distribution's log-probabilities"
            )
        if self.response_length < 1:
            raise ValueError("response_length must be at least 1")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError("warmup_ratio must be within [0, 1]")


# --------------------------------------------------------------------------------------
# Pure math. Tensors are (batch, response positions) unless said otherwise; `mask` is 1
# (or True) on real response tokens and 0 on padding.
# --------------------------------------------------------------------------------------


def first_true_indices(flags: torch.Tensor) -> torch.Tensor:
    """Index of the first True in each row of a 2-D bool tensor (the row length if none)."""
    row_length = flags.size(-1)
    positions = torch.arange(row_length, device=flags.device)
    return torch.where(flags, positions, row_length).min(dim=-1).values


def truncate_after_stop_token(
    responses: torch.Tensor, stop_token_id: int | list[int], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace every token after the first stop token (any of ``stop_token_id``) with padding.

    Returns ``(truncated responses, mask)``; the mask is True up to and including the stop
    token (a response without one keeps all its tokens). The mask, not the pad id, is what
    marks a response's end afterwards: when the tokenizer pads with its EOS token, a real
    EOS and padding look the same.
    """
    stop_index = first_true_indices(is_stop_token(responses, stop_token_id))
    positions = torch.arange(responses.size(1), device=responses.device)
    mask = positions.unsqueeze(0) <= stop_index.unsqueeze(1)
    return responses.masked_fill(~mask, pad_token_id), mask


def is_stop_token(tokens: torch.Tensor, stop_token_ids: int | list[int]) -> torch.Tensor:
    """True where a token is one of the stop tokens."""
    ids = [stop_token_ids] if isinstance(stop_token_ids, int) else list(stop_token_ids)
    return torch.isin(tokens, torch.tensor(ids, dtype=tokens.dtype, device=tokens.device))


def clipped_policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate objective, as a loss averaged over real tokens.

    Taking the max of the unclipped and clipped losses means moving the probability ratio
    beyond 1 +/- clip_range earns nothing, which keeps each update near the rollout policy.
    Returns ``(loss, fraction of tokens where clipping was active)``.
    """
    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).to(new_logprobs.dtype), mask)
    return loss, clip_fraction


def clipped_value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Half the squared error to the returns, pessimistic over a clipped prediction.

    The prediction may move at most clip_range_value from the rollout's value before the
    larger (clipped) error takes over, mirroring the policy clip. Returns
    ``(loss, fraction of tokens where the clipped error was the larger)``.
    """
    clipped_values = torch.clamp(
        new_values, old_values - clip_range_value, old_values + clip_range_value
    )
    unclipped_error = (new_values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    clip_fraction = masked_mean((clipped_error > unclipped_error).to(new_values.dtype), mask)
    return loss, clip_fraction


def latest_checkpoint(checkpoint_dir: Path | None) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step, or None. Temporary folders
    (a save interrupted before its rename) are ignored."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    steps = _checkpoint_steps(Path(checkpoint_dir))
    return Path(checkpoint_dir) / f"{CHECKPOINT_PREFIX}{max(steps)}" if steps else None


def _checkpoint_steps(checkpoint_dir: Path) -> list[int]:
    pattern = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
    steps = []
    for child in checkpoint_dir.iterdir():
        match = pattern.match(child.name)
        if match and child.is_dir() and (child / TRAINER_STATE_FILE).is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


# --------------------------------------------------------------------------------------
# Model plumbing
# --------------------------------------------------------------------------------------


def _backbone(model: nn.Module) -> nn.Module:
    """The transformer under a ...ForSequenceClassification head (``model.model`` for Llama)."""
    return getattr(model, model.base_model_prefix)


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded prompt starts at 0 exactly as
    in ``generate`` (padding positions get 0; they are masked anyway)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def _response_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_width: int,
    logits_to_keep: bool,
) -> torch.Tensor:
    """Logits predicting each response token (those at the positions just before it).

    With ``logits_to_keep`` the LM head runs on the response positions only, which saves a
    (prompt length x vocabulary) logits tensor per sample.
    """
    kwargs = {"logits_to_keep": response_width + 1} if logits_to_keep else {}
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=_position_ids(attention_mask),
        use_cache=False,
        **kwargs,
    )
    return output.logits[:, -(response_width + 1) : -1]


def _per_token_scores(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """A sequence-classification model's scalar head applied at every position (batch, length):
    the value model's value of every state. (The reward is not read this way: see
    ``scoring.py``; a reward model is scored by its own forward and pooling.)"""
    hidden = _backbone(model)(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=_position_ids(attention_mask),
        use_cache=False,
    ).last_hidden_state
    return model.score(hidden).squeeze(-1)


class PolicyAndValue(nn.Module):
    """Policy and value model as one module, so one ``accelerator.prepare`` (one DDP wrapper,
    one gradient all-reduce) and one optimizer cover both (as TRL's PolicyAndValueWrapper)."""

    def __init__(self, policy: nn.Module, value_model: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.policy_accepts_logits_to_keep = _accepts_logits_to_keep(policy)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logits predicting each response token, value of the state before each
        response token)."""
        logits = _response_logits(
            self.policy,
            input_ids,
            attention_mask,
            response_width,
            self.policy_accepts_logits_to_keep,
        )
        values = _per_token_scores(self.value_model, input_ids, attention_mask)
        return logits, values[:, -(response_width + 1) : -1]


@dataclass
class Rollout:
    """One PPO batch: sampled responses and everything computed from them before optimising."""

    input_ids: torch.Tensor  # (batch, prompt + response), prompt left-padded, response right-padded
    attention_mask: torch.Tensor  # 1 on real prompt and response tokens
    responses: torch.Tensor  # (batch, response width), padded after the first EOS
    response_mask: torch.Tensor  # True on real response tokens (EOS included)
    logprobs: torch.Tensor  # policy log-probabilities at sampling time
    values: torch.Tensor
    scores: torch.Tensor  # (batch,) reward-model score, after missing_eos_penalty
    kl: torch.Tensor
    non_score_rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    ends_with_eos: torch.Tensor  # (batch,) bool: ends with a stop token


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


class PPOLoop:
    """Runs PPO updates over a list of prompts; see the module docstring for the algorithm.

    The models are used in place: the policy and value model are trained, dropout is switched
    off in all four (as TRL does: dropout would make the rollout's log-probabilities differ
    from the ones recomputed for the loss), the reference policy and reward model are frozen.
    On CPU all models are converted to fp32 (half precision is slower or unsupported there).
    """

    def __init__(
        self,
        policy: nn.Module,
        reference_policy: nn.Module,
        value_model: nn.Module,
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
        """``reward_tokenizer`` and ``reward_format`` say how the reward model reads a
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
        prefix = str(getattr(value_model, "base_model_prefix", ""))
        if not hasattr(value_model, "score") or not prefix or not hasattr(value_model, prefix):
            raise ValueError(
                "value_model must be an AutoModelForSequenceClassification-style model with a "
                "`score` head over a backbone named by `base_model_prefix`"
            )
        if reward_prompts is not None and len(reward_prompts) != len(train_prompts):
            raise ValueError("reward_prompts must hold one prompt per train prompt")

        self.hyperparameters = hyperparameters
        self.tokenizer = tokenizer
        self.train_prompts = [list(prompt) for prompt in train_prompts]
        self.on_log = on_log
        self.logging_steps = max(1, int(logging_steps))
        self._cached_permutation: tuple[int, list[int]] | None = None
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
        device = self.accelerator.device
        for model in (policy, reference_policy, value_model, reward_model):
            disable_dropout_in_model(model)
            if device.type == "cpu":
                model.float()
        for frozen in (reference_policy, reward_model):
            frozen.eval()
            frozen.requires_grad_(False)
        self.reference_policy = reference_policy.to(device)
        self.reward_model = reward_model.to(device)
        self.reference_accepts_logits_to_keep = _accepts_logits_to_keep(reference_policy)
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
            for trained in (policy, value_model):
                trained.gradient_checkpointing_enable(
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

    # ----- sizes -----------------------------------------------------------------------

    @property
    def global_batch_size(self) -> int:
        """Prompts per update over all processes."""
        return self.hyperparameters.rollout_batch_size * self.accelerator.num_processes

    @property
    def total_updates(self) -> int:
        """PPO updates (rollouts) of the whole run. Rounded up, so the run may answer a few more
        than total_episodes prompts (as TRL)."""
        return math.ceil(self.hyperparameters.total_episodes / self.global_batch_size)

    @property
    def _policy(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model).policy

    @property
    def _value_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model).value_model

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

    # ----- prompts ----------------------------------------------------------------------

    def _prompt_indices(self, update: int) -> list[int]:
        """This process's prompts for update ``update`` (0-based).

        The prompts are read as an endless stream of seeded permutations of the dataset and
        each update takes the next global batch, this process its own slice. Being a pure
        function of the update number, the order survives a resume without saving any state.
        """
        count = len(self.train_prompts)
        start = (
            update * self.global_batch_size
            + self.accelerator.process_index * self.hyperparameters.rollout_batch_size
        )
        indices: list[int] = []
        position = start
        while len(indices) < self.hyperparameters.rollout_batch_size:
            epoch, offset = divmod(position, count)
            permutation = self._permutation(epoch)
            take = min(count - offset, self.hyperparameters.rollout_batch_size - len(indices))
            indices.extend(permutation[offset : offset + take])
            position += take
        return indices

    def _permutation(self, epoch: int) -> list[int]:
        """The seeded shuffle of the prompts for one pass over them (the latest one is cached)."""
        cached = self._cached_permutation
        if cached is None or cached[0] != epoch:
            generator = torch.Generator().manual_seed(self.hyperparameters.seed * 1_000_003 + epoch)
            cached = (epoch, torch.randperm(len(self.train_prompts), generator=generator).tolist())
            self._cached_permutation = cached
        return cached[1]

    def _left_padded(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts as one left-padded batch: generation appends to the right, so every
        prompt must end at the same column."""
        device = self.accelerator.device
        ids = [torch.tensor(prompt, dtype=torch.long) for prompt in prompts]
        input_ids = pad(ids, padding_value=self.pad_token_id, padding_side="left").to(device)
        attention_mask = pad(
            [torch.ones_like(t) for t in ids], padding_value=0, padding_side="left"
        ).to(device)
        return input_ids, attention_mask

    # ----- generation and scoring -------------------------------------------------------

    def _generation_config(self, max_new_tokens: int) -> GenerationConfig:
        """Pure temperature sampling: PPO's log-probabilities are those of softmax(logits / T),
        so no top-k / top-p / repetition penalty may reshape what is sampled (TRL sets top_k=0,
        top_p=1 likewise)."""
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            min_new_tokens=0,
            do_sample=True,
            temperature=self.hyperparameters.temperature + 1e-7,
            top_k=0,
            top_p=1.0,
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            use_cache=True,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.pad_token_id,
        )

    @contextlib.contextmanager
    def _generation_mode(self, model: nn.Module) -> Iterator[None]:
        """Generate in eval mode with a blank default generation config, then restore both.

        Eval mode keeps gradient checkpointing (active only when training) from turning the
        KV cache off, which would make generation quadratic. The blank config stops a model's
        generation_config.json (top_k=50, repetition penalty, several EOS ids...) from
        silently changing the sampling distribution.
        """
        was_training = model.training
        saved_generation_config = getattr(model, "generation_config", None)
        model.eval()
        model.generation_config = GenerationConfig()
        try:
            yield
        finally:
            model.generation_config = saved_generation_config
            model.train(was_training)

    @torch.no_grad()
    def _generate(
        self,
        model: nn.Module,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        max_new_tokens: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample responses; returns ``(responses, response_mask)``, cut after the first stop
        token."""
        with self._generation_mode(model):
            sequences = model.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                generation_config=self._generation_config(max_new_tokens),
            )
        return truncate_after_stop_token(
            sequences[:, prompt_ids.size(1) :], self.stop_token_ids, self.pad_token_id
        )

    def _logprobs(self, logits: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the sampled tokens under the *tempered* distribution, which is
        the one sampled from (TRL divides by temperature + 1e-7 likewise)."""
        return selective_log_softmax(
            logits.float() / (self.hyperparameters.temperature + 1e-7), responses
        )

    @torch.no_grad()
    def _score_responses(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        responses: torch.Tensor,
        response_mask: torch.Tensor,
        with_values: bool,
        reward_prompts: list[scoring.Turns],
    ) -> dict[str, torch.Tensor]:
        """Policy and reference log-probabilities, values (optional) and reward-model scores
        of given responses, in micro-batch chunks to bound memory."""
        input_ids = torch.cat([prompt_ids, responses], dim=1)
        attention_mask = torch.cat([prompt_mask, response_mask.long()], dim=1)
        width = responses.size(1)
        policy_and_value = self.accelerator.unwrap_model(self.model)
        chunk = self.hyperparameters.micro_batch_size
        pieces: dict[str, list[torch.Tensor]] = {
            "logprobs": [],
            "reference_logprobs": [],
            "values": [],
            "scores": [],
        }
        for start in range(0, input_ids.size(0), chunk):
            rows = slice(start, start + chunk)
            ids, mask, response = input_ids[rows], attention_mask[rows], responses[rows]
            if with_values:
                logits, values = policy_and_value(
                    input_ids=ids, attention_mask=mask, response_width=width
                )
                pieces["values"].append(values.float())
            else:
                logits = _response_logits(
                    policy_and_value.policy,
                    ids,
                    mask,
                    width,
                    policy_and_value.policy_accepts_logits_to_keep,
                )
            pieces["logprobs"].append(self._logprobs(logits, response))
            del logits
            reference_logits = _response_logits(
                self.reference_policy, ids, mask, width, self.reference_accepts_logits_to_keep
            )
            pieces["reference_logprobs"].append(self._logprobs(reference_logits, response))
            del reference_logits
        pieces["scores"].append(
            self.reward_scores(reward_prompts, prompt_ids, prompt_mask, responses, response_mask)
        )
        return {name: torch.cat(parts) for name, parts in pieces.items() if parts}

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

    def _decode_prompt(self, prompt: list[int]) -> str:
        return self.tokenizer.decode(prompt, skip_special_tokens=True)

    def _rollout(self, update: int) -> Rollout:
        """Steps 1-4 of the module docstring for one batch of prompts."""
        hp = self.hyperparameters
        indices = self._prompt_indices(update)
        prompt_ids, prompt_mask = self._left_padded([self.train_prompts[i] for i in indices])
        responses, response_mask = self._generate(
            self._policy, prompt_ids, prompt_mask, hp.response_length
        )
        scored = self._score_responses(
            prompt_ids,
            prompt_mask,
            responses,
            response_mask,
            with_values=True,
            reward_prompts=[self.reward_prompts[i] for i in indices],
        )

        mask = response_mask.to(scored["logprobs"].dtype)
        ends_with_eos = (
            is_stop_token(responses, self.stop_token_ids).logical_and(response_mask).any(dim=1)
        )
        scores = scored["scores"]
        if hp.missing_eos_penalty is not None:
            scores = scores - hp.missing_eos_penalty * (~ends_with_eos).to(scores.dtype)
        logprobs = scored["logprobs"] * mask
        kl = kl_estimate(logprobs, scored["reference_logprobs"] * mask, hp.kl_estimator) * mask
        values = scored["values"] * mask
        rewards, non_score_rewards = per_token_rewards(kl, scores, mask, hp.kl_coef)
        if hp.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
        advantages, returns = generalized_advantage_estimation(
            rewards, values, mask, hp.gamma, hp.lam
        )
        advantages = masked_whiten(advantages, mask) * mask
        return Rollout(
            input_ids=torch.cat([prompt_ids, responses], dim=1),
            attention_mask=torch.cat([prompt_mask, response_mask.long()], dim=1),
            responses=responses,
            response_mask=response_mask,
            logprobs=logprobs,
            values=values,
            scores=scores,
            kl=kl,
            non_score_rewards=non_score_rewards,
            advantages=advantages,
            returns=returns,
            ends_with_eos=ends_with_eos,
        )

    # ----- optimisation -----------------------------------------------------------------

    def _optimise(self, rollout: Rollout, update: int) -> dict[str, torch.Tensor]:
        """Step 5: ``epochs`` shuffled passes over the rollout; returns per-micro-batch statistics
        shaped (epochs, mini_batches, gradient_accumulation_steps), as TRL records them."""
        hp = self.hyperparameters
        shape = (hp.epochs, hp.mini_batches, hp.gradient_accumulation_steps)
        device = self.accelerator.device
        names = (
            "approxkl",
            "policy_clipfrac",
            "policy_loss",
            "value_loss",
            "value_clipfrac",
            "entropy",
            "ratio",
            "loss",
        )
        stats = {name: torch.zeros(shape, device=device) for name in names}
        stats["grad_norm"] = torch.zeros(shape[:2], device=device)  # one per optimizer step
        width = rollout.responses.size(1)
        # The shuffle is a pure function of (seed, update, process) so a resumed run repeats it.
        generator = torch.Generator().manual_seed(
            hp.seed + 7919 * (update + 1) + PROCESS_SEED_STRIDE * self.accelerator.process_index
        )
        for epoch in range(hp.epochs):
            order = torch.randperm(hp.rollout_batch_size, generator=generator).to(device)
            for mini_batch in range(hp.mini_batches):
                mini_rows = order[
                    mini_batch * hp.mini_batch_size : (mini_batch + 1) * hp.mini_batch_size
                ]
                for micro_batch in range(hp.gradient_accumulation_steps):
                    rows = mini_rows[
                        micro_batch * hp.micro_batch_size : (micro_batch + 1) * hp.micro_batch_size
                    ]
                    is_last_micro_batch = micro_batch == hp.gradient_accumulation_steps - 1
                    # Gradients are all-reduced once per mini-batch, on its last micro-batch.
                    sync_context = (
                        contextlib.nullcontext()
                        if is_last_micro_batch
                        else self.accelerator.no_sync(self.model)
                    )
                    with sync_context:
                        logits, new_values = self.model(
                            input_ids=rollout.input_ids[rows],
                            attention_mask=rollout.attention_mask[rows],
                            response_width=width,
                        )
                        logits = logits.float() / (hp.temperature + 1e-7)
                        mask = rollout.response_mask[rows]
                        new_logprobs = selective_log_softmax(logits, rollout.responses[rows])
                        policy_loss, policy_clipfrac = clipped_policy_loss(
                            new_logprobs,
                            rollout.logprobs[rows],
                            rollout.advantages[rows],
                            mask,
                            hp.clip_range,
                        )
                        value_loss, value_clipfrac = clipped_value_loss(
                            new_values.float(),
                            rollout.values[rows],
                            rollout.returns[rows],
                            mask,
                            hp.clip_range_value,
                        )
                        loss = policy_loss + hp.value_coef * value_loss
                        self.accelerator.backward(loss / hp.gradient_accumulation_steps)
                    with torch.no_grad():
                        log_ratio = (new_logprobs - rollout.logprobs[rows]) * mask
                        index = (epoch, mini_batch, micro_batch)
                        stats["approxkl"][index] = 0.5 * masked_mean(log_ratio**2, mask)
                        stats["policy_clipfrac"][index] = policy_clipfrac
                        stats["policy_loss"][index] = policy_loss
                        stats["value_loss"][index] = value_loss
                        stats["value_clipfrac"][index] = value_clipfrac
                        stats["entropy"][index] = masked_mean(entropy_from_logits(logits), mask)
                        stats["ratio"][index] = masked_mean(torch.exp(log_ratio), mask)
                        stats["loss"][index] = loss
                    del logits, new_values, new_logprobs, loss
                clipping = hp.max_grad_norm is not None and hp.max_grad_norm > 0
                # Clipping to infinity only measures: the norm before clipping is logged.
                grad_norm = self.accelerator.clip_grad_norm_(
                    self.model.parameters(), hp.max_grad_norm if clipping else math.inf
                )
                if grad_norm is not None:
                    stats["grad_norm"][epoch, mini_batch] = grad_norm
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        return stats

    def _metrics(
        self,
        rollout: Rollout,
        stats: dict[str, torch.Tensor],
        learning_rate: float,
        episodes_per_second: float,
    ) -> dict[str, float]:
        """TRL's metric names, averaged over processes (``val/num_eos_tokens`` is summed)."""
        mask = rollout.response_mask.to(rollout.logprobs.dtype)
        mean_kl = rollout.kl.sum(1).mean()
        mean_non_score_reward = rollout.non_score_rewards.sum(1).mean()
        local = {
            "objective/kl": mean_kl,
            # TRL's estimate of the sequence entropy: summed -log p of the sampled tokens.
            "objective/entropy": (-rollout.logprobs * mask).sum(1).mean(),
            "objective/non_score_reward": mean_non_score_reward,
            "objective/rlhf_reward": mean_non_score_reward + rollout.scores.mean(),
            "objective/scores": rollout.scores.mean(),
            "policy/approxkl_avg": stats["approxkl"].mean(),
            "policy/clipfrac_avg": stats["policy_clipfrac"].mean(),
            "loss/policy_avg": stats["policy_loss"].mean(),
            "loss/value_avg": stats["value_loss"].mean(),
            "val/clipfrac_avg": stats["value_clipfrac"].mean(),
            "policy/entropy_avg": stats["entropy"].mean(),
            "val/ratio": stats["ratio"].mean(),
            # The loss the optimizer minimises (policy + value_coef * value) and the gradient
            # norm before clipping, under the names Trainer logs them by.
            "loss": stats["loss"].mean(),
            "grad_norm": stats["grad_norm"].mean(),
        }
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
        latest (policy + value weights, optimizer, RNG states, step; the LR schedule is
        re-derived at that step) so the step count and LR schedule continue. Saves a
        checkpoint every checkpoint_interval updates into checkpoint_dir/checkpoint-<step>/
        (written to a temp folder then renamed, keep the last checkpoints_to_keep), or sooner
        once checkpoint_minutes have passed since the last save (checkpointing.py). Calls
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
            rollout = self._rollout(update)
            stats = self._optimise(rollout, update)
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

        ``reward_prompts`` are the prompts as the reward model sees them (default: decoded).
        Scores are the reward model's raw scores (no missing_eos_penalty). Both models sample
        from the same seed, so identical models give identical responses (win rate 0.5). Under
        DDP each process evaluates a contiguous share of the prompts; every process returns the
        full result. The training RNG state is left untouched.
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
        responses: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.random.fork_rng(devices=devices):
            for name, model in (("policy", self._policy), ("reference", self.reference_policy)):
                torch.manual_seed(seed)
                responses[name] = self._generate(model, prompt_ids, prompt_mask, max_new_tokens)
        policy_side = self._score_responses(
            prompt_ids, prompt_mask, *responses["policy"], False, reward_prompts
        )
        reference_side = self._score_responses(
            prompt_ids, prompt_mask, *responses["reference"], False, reward_prompts
        )
        policy_mask = responses["policy"][1].to(policy_side["logprobs"].dtype)
        kl = (
            kl_estimate(
                policy_side["logprobs"],
                policy_side["reference_logprobs"],
                self.hyperparameters.kl_estimator,
            )
            * policy_mask
        ).sum(1)
        rows = []
        for i, prompt in enumerate(prompts):
            rows.append(
                {
                    "prompt": self.tokenizer.decode(prompt, skip_special_tokens=True),
                    "policy": self._decode_response(*(t[i] for t in responses["policy"])),
                    "reference": self._decode_response(*(t[i] for t in responses["reference"])),
                    "policy_score": policy_side["scores"][i].item(),
                    "reference_score": reference_side["scores"][i].item(),
                    "kl": kl[i].item(),
                }
            )
        return rows

    def _decode_response(self, response: torch.Tensor, mask: torch.Tensor) -> str:
        return self.tokenizer.decode(response[mask].tolist(), skip_special_tokens=True)

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
        """Everything a resume needs, into a temporary folder renamed into place once complete,
        so a crash mid-save never leaves a checkpoint that looks valid but is not. Every process
        writes its RNG state; the main process writes the rest (DDP replicas are identical)."""
        temporary = checkpoint_dir / f"{TEMPORARY_CHECKPOINT_PREFIX}{self.step}"
        final = checkpoint_dir / f"{CHECKPOINT_PREFIX}{self.step}"
        if self.accelerator.is_main_process:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            for leftover in checkpoint_dir.glob(f"{TEMPORARY_CHECKPOINT_PREFIX}*"):
                shutil.rmtree(leftover, ignore_errors=True)  # from a save cut short earlier
            temporary.mkdir()
        self.accelerator.wait_for_everyone()
        torch.save(
            _rng_state(self.accelerator.device),
            temporary / f"rng_state_{self.accelerator.process_index}.pt",
        )
        if self.accelerator.is_main_process:
            safetensors.torch.save_model(self._policy, str(temporary / "policy.safetensors"))
            safetensors.torch.save_model(
                self._value_model, str(temporary / "value_model.safetensors")
            )
            torch.save(self.optimizer.state_dict(), temporary / "optimizer.pt")
            state = {
                "step": self.step,
                "total_updates": self.total_updates,
                "episode": self.step * self.global_batch_size,
                "num_processes": self.accelerator.num_processes,
                "hyperparameters": asdict(self.hyperparameters),
                "metrics": metrics,
            }
            (temporary / TRAINER_STATE_FILE).write_text(json.dumps(state, indent=2))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            temporary.rename(final)
            if keep > 0:
                for old_step in _checkpoint_steps(checkpoint_dir)[:-keep]:
                    shutil.rmtree(
                        checkpoint_dir / f"{CHECKPOINT_PREFIX}{old_step}", ignore_errors=True
                    )
        self.accelerator.wait_for_everyone()

    def _load_checkpoint(self, folder: Path) -> dict[str, float]:
        """Restore weights, optimizer, RNG and step from ``folder``; returns its saved metrics."""
        state = json.loads((folder / TRAINER_STATE_FILE).read_text())
        # Read to CPU; load_state_dict copies into the parameters wherever they live.
        for model, file_name in (
            (self._policy, "policy.safetensors"),
            (self._value_model, "value_model.safetensors"),
        ):
            safetensors.torch.load_model(model, str(folder / file_name), device="cpu")
        self.optimizer.load_state_dict(
            torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        )
        self.step = int(state["step"])
        self.scheduler = self._build_scheduler(completed_updates=self.step)
        rng_file = folder / f"rng_state_{self.accelerator.process_index}.pt"
        if rng_file.is_file():
            _set_rng_state(torch.load(rng_file, weights_only=True), self.accelerator.device)
        else:  # resumed with more processes than were saved: a fresh but deterministic seed
            accelerate.utils.set_seed(
                self.hyperparameters.seed
                + PROCESS_SEED_STRIDE * self.accelerator.process_index
                + self.step
            )
        self.accelerator.wait_for_everyone()
        return dict(state.get("metrics", {}))


@contextlib.contextmanager
def _quiet_scheduler_warnings() -> Iterator[None]:
    """Fast-forwarding a scheduler before any optimizer.step() makes torch warn about call order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG the loop can draw from (on this process's accelerator only: touching the
    others would open a CUDA context on every GPU), in types ``torch.load(weights_only=True)``
    accepts."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            *numpy_state[2:],
        ],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
