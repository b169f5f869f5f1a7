"""The update phase: ``epochs`` shuffled passes over a rollout in mini-batches (each
accumulated from ``gradient_accumulation_steps`` micro-batches), one optimizer step per
mini-batch. The loss is PPO's clipped policy loss, plus ``value_coef`` times the clipped
value loss when there is a value model (gae), plus ``kl_coef`` times the KL to the reference
when the KL penalty sits in the loss (GRPO's way).

Advantages are computed for the whole rollout before this phase, so a group's statistics
are over all its responses whichever mini-batch each lands in.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import accelerate
import torch
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from .estimators import kl_estimate, masked_mean
from .rollout import Rollout

# Distinct seeds per process (so ranks sample and shuffle differently), as TRL does.
PROCESS_SEED_STRIDE = 100003


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


class PolicyUpdate:
    """Optimises the policy (and value model) on rollouts. ``hyperparameters`` is the loop's
    ``PPOHyperparameters``."""

    def __init__(
        self,
        accelerator: accelerate.Accelerator,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        hyperparameters: Any,
        with_value_model: bool,
    ) -> None:
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.hyperparameters = hyperparameters
        self.with_value_model = with_value_model

    def statistic_names(self) -> tuple[str, ...]:
        names = ("approxkl", "policy_clipfrac", "policy_loss", "entropy", "ratio", "loss")
        if self.with_value_model:
            names += ("value_loss", "value_clipfrac")
        if self.hyperparameters.kl_in_loss:
            names += ("kl_loss",)
        return names

    def run(self, rollout: Rollout, update: int) -> dict[str, torch.Tensor]:
        """``epochs`` shuffled passes over the rollout; returns per-micro-batch statistics
        shaped (epochs, mini_batches, gradient_accumulation_steps), as TRL records them."""
        hp = self.hyperparameters
        shape = (hp.epochs, hp.mini_batches, hp.gradient_accumulation_steps)
        device = self.accelerator.device
        stats = {name: torch.zeros(shape, device=device) for name in self.statistic_names()}
        stats["grad_norm"] = torch.zeros(shape[:2], device=device)  # one per optimizer step
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
                        step_stats = self._micro_batch(rollout, rows)
                    for name, value in step_stats.items():
                        stats[name][epoch, mini_batch, micro_batch] = value
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

    def _micro_batch(self, rollout: Rollout, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward, loss and backward of one micro-batch; returns its statistics."""
        hp = self.hyperparameters
        logits, new_values = self.model(
            input_ids=rollout.input_ids[rows],
            attention_mask=rollout.attention_mask[rows],
            response_width=rollout.responses.size(1),
        )
        logits = logits.float() / (hp.temperature + 1e-7)  # the tempered distribution sampled
        mask = rollout.response_mask[rows]
        new_logprobs = selective_log_softmax(logits, rollout.responses[rows])
        old_logprobs = rollout.logprobs[rows]
        policy_loss, policy_clipfrac = clipped_policy_loss(
            new_logprobs, old_logprobs, rollout.advantages[rows], mask, hp.clip_range
        )
        loss = policy_loss
        stats: dict[str, torch.Tensor] = {}
        if self.with_value_model:
            assert rollout.values is not None and rollout.returns is not None
            value_loss, value_clipfrac = clipped_value_loss(
                new_values.float(),
                rollout.values[rows],
                rollout.returns[rows],
                mask,
                hp.clip_range_value,
            )
            loss = loss + hp.value_coef * value_loss
            stats.update(value_loss=value_loss, value_clipfrac=value_clipfrac)
        if hp.kl_in_loss:
            kl_loss = masked_mean(
                kl_estimate(new_logprobs, rollout.reference_logprobs[rows], hp.kl_estimator), mask
            )
            loss = loss + hp.kl_coef * kl_loss
            stats.update(kl_loss=kl_loss)
        self.accelerator.backward(loss / hp.gradient_accumulation_steps)
        with torch.no_grad():
            log_ratio = (new_logprobs - old_logprobs) * mask
            stats.update(
                approxkl=0.5 * masked_mean(log_ratio**2, mask),
                policy_clipfrac=policy_clipfrac,
                policy_loss=policy_loss,
                entropy=masked_mean(entropy_from_logits(logits), mask),
                ratio=masked_mean(torch.exp(log_ratio), mask),
                loss=loss,
            )
            return {name: value.detach() for name, value in stats.items()}
