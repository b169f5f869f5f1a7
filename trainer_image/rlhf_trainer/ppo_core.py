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

Settings are ``ppo_settings.py``'s, logged figures ``ppo_metrics.py``'s, the end-of-training
evaluation ``ppo_evaluation.py``'s, checkpoints ``ppo_checkpoint.py``'s. ``PPOLoop`` strings
the phases together; each phase is a method that can be called (and tested) alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import accelerate
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from transformers import PreTrainedTokenizerBase, get_scheduler
from trl.trainer.utils import disable_dropout_in_model

from . import ppo_evaluation, scoring
from .checkpointing import CheckpointSchedule
from .estimators import (
    compute_advantages,
    generalized_advantage_estimation,
    kl_estimate,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
)
from .forward import (
    ModelOutput,
    PolicyAndValue,
    accepts_logits_to_keep,
    check_value_model,
    logprobs_in_chunks,
    response_logits,
)
from .phase_timing import PhaseClock
from .ppo_checkpoint import (
    CHECKPOINT_PREFIX,
    TRAINER_STATE_FILE,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .ppo_metrics import update_metrics
from .ppo_settings import PPOHyperparameters
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
        check_arguments(policy, reference_policy, value_model, train_prompts, hyperparameters)
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
        # Seconds (and GPU memory peaks) per phase of the latest update: phase_timing.py.
        self.clock = PhaseClock(self.accelerator.device)

        self.eos_token_id, self.pad_token_id = special_token_ids(tokenizer)
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
        trained = [policy] + ([value_model] if value_model is not None else [])
        prepare_models(trained, [reference_policy, reward_model], self.accelerator.device)
        self.reference_policy = reference_policy.to(self.accelerator.device)
        self.reward_model = reward_model.to(self.accelerator.device)
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
            parameter_groups(policy_and_value, hyperparameters.weight_decay),
            lr=hyperparameters.learning_rate,
        )
        self.model, self.optimizer = self.accelerator.prepare(policy_and_value, optimizer)
        self.scheduler = self._build_scheduler(0)
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

    def _build_scheduler(self, completed_updates: int) -> LRScheduler:
        return build_scheduler(
            self.optimizer, self.hyperparameters, self.total_updates, completed_updates
        )

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

    def policy_logprobs(
        self, generation: Generation, with_values: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Phase 3a: the policy's log-probabilities of the sampled tokens (the "old" ones the
        update's ratio is taken against) and, ``with_values``, the value model's values."""
        policy_and_value = self.accelerator.unwrap_model(self.model)

        def forward(ids: torch.Tensor, mask: torch.Tensor, width: int) -> ModelOutput:
            if with_values:
                return policy_and_value(input_ids=ids, attention_mask=mask, response_width=width)
            logits_to_keep = policy_and_value.policy_accepts_logits_to_keep
            return response_logits(policy_and_value.policy, ids, mask, width, logits_to_keep), None

        return self._logprobs_in_chunks(forward, generation)

    def reference_logprobs(self, generation: Generation) -> torch.Tensor:
        """Phase 3b: the frozen reference policy's log-probabilities of the sampled tokens."""
        logits_to_keep = self.reference_accepts_logits_to_keep

        def forward(ids: torch.Tensor, mask: torch.Tensor, width: int) -> ModelOutput:
            return response_logits(self.reference_policy, ids, mask, width, logits_to_keep), None

        return self._logprobs_in_chunks(forward, generation)[0]

    def _logprobs_in_chunks(
        self, forward: Callable[..., ModelOutput], generation: Generation
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return logprobs_in_chunks(
            forward,
            generation.input_ids,
            generation.attention_mask,
            generation.responses,
            self.hyperparameters.micro_batch_size,
            self.hyperparameters.temperature,
        )

    def rollout(self, update: int) -> Rollout:
        """Phases 1-4 for one batch of prompts: generate, score, log-probabilities, advantages."""
        hp = self.hyperparameters
        with self.clock.phase("generation"):
            generation = self.generate(update)
        with self.clock.phase("scoring"):
            scores = self.score(generation)
        with self.clock.phase("policy_logprobs"):
            logprobs, values = self.policy_logprobs(generation, with_values=hp.uses_value_model)
        with self.clock.phase("reference_logprobs"):
            reference_logprobs = self.reference_logprobs(generation)
        with self.clock.phase("advantages"):
            return self._advantages(generation, scores, logprobs, values, reference_logprobs)

    def _advantages(
        self,
        generation: Generation,
        scores: torch.Tensor,
        logprobs: torch.Tensor,
        values: torch.Tensor | None,
        reference_logprobs: torch.Tensor,
    ) -> Rollout:
        """Phase 4: the missing-EOS penalty, the KL estimate and the advantages."""
        hp = self.hyperparameters
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
        with self.clock.phase("update"):
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
        of its prompt (``scoring.response_texts``) and scored through ``scoring`` exactly as
        the reward stage evaluates its model, so any tokenizer and pooling the reward model
        has works."""
        texts = scoring.response_texts(
            self.tokenizer,
            prompt_ids,
            prompt_mask,
            responses,
            response_mask,
            self.reward_scorer.form.conversational,
        )
        return self.reward_scorer.score(reward_prompts, texts).to(self.accelerator.device)

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
            self.clock.start_update()
            rollout = self.rollout(update)
            stats = self.update(rollout, update)
            self.clock.end_update()
            learning_rate = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            self.step += 1
            elapsed = max(time.time() - start_time, 1e-9)
            episodes_per_second = (self.step - start_step) * self.global_batch_size / elapsed
            last_metrics = update_metrics(self, rollout, stats, learning_rate, episodes_per_second)
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

    def evaluate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int | None = None,
        reward_prompts: list[scoring.Turns] | None = None,
    ) -> dict[str, Any]:
        """The policy against the reference on ``prompts``: see ``ppo_evaluation.evaluate``."""
        return ppo_evaluation.evaluate(self, prompts, max_new_tokens, reward_prompts)

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
        self.scheduler = self._build_scheduler(self.step)
        return dict(state.get("metrics", {}))


def check_arguments(
    policy: nn.Module,
    reference_policy: nn.Module,
    value_model: nn.Module | None,
    train_prompts: list[list[int]],
    hyperparameters: PPOHyperparameters,
) -> None:
    """Refuse what the loop cannot run, before any model is touched."""
    if reference_policy is policy:
        raise ValueError(
            "reference_policy must be a separate (frozen) copy of the policy, not the same object"
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


def prepare_models(trained: list[nn.Module], frozen: list[nn.Module], device: torch.device) -> None:
    """Dropout off in every model (as TRL: dropout would make the rollout's log-probabilities
    differ from the ones recomputed for the loss), fp32 on CPU (half precision is slower or
    unsupported there), the frozen models in eval mode without gradients."""
    for model in (*trained, *frozen):
        disable_dropout_in_model(model)
        if device.type == "cpu":
            model.float()
    for model in frozen:
        model.eval()
        model.requires_grad_(False)


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """EOS ends responses; padding defaults to EOS when the tokenizer has none (a common
    case for decoder-only models). Response ends are found from masks, never by pad id."""
    if tokenizer.eos_token_id is None:
        raise ValueError(
            "the tokenizer needs an EOS token: it is the stop token that ends responses"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return int(tokenizer.eos_token_id), int(tokenizer.pad_token_id)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
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


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    hyperparameters: PPOHyperparameters,
    total_updates: int,
    completed_updates: int,
) -> LRScheduler:
    """The LR schedule over total_updates, stepped once per update (TRL's convention),
    positioned after ``completed_updates``.

    On resume the schedule is rebuilt and fast-forwarded rather than loaded: it is a pure
    function of (step, total), and the total may have grown since the checkpoint.
    """
    for group in optimizer.param_groups:
        group["lr"] = hyperparameters.learning_rate
        group["initial_lr"] = hyperparameters.learning_rate
    scheduler = get_scheduler(
        hyperparameters.lr_scheduler,
        optimizer,
        num_warmup_steps=math.ceil(hyperparameters.warmup_ratio * total_updates),
        num_training_steps=total_updates,
    )
    with _quiet_scheduler_warnings():
        for _ in range(completed_updates):
            scheduler.step()
    return scheduler


@contextlib.contextmanager
def _quiet_scheduler_warnings() -> Iterator[None]:
    """Fast-forwarding a scheduler before any optimizer.step() makes torch warn about call order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
