"""The figures the RL loop logs after each update, under TRL's names, averaged over processes."""

from __future__ import annotations

from typing import Any

import torch

from .phase_timing import response_lengths, tokens_per_second, truncated_share
from .rollout import Rollout


def update_metrics(
    loop: Any,
    rollout: Rollout,
    stats: dict[str, torch.Tensor],
    learning_rate: float,
    episodes_per_second: float,
) -> dict[str, float]:
    """TRL's metric names, averaged over processes (``val/num_eos_tokens`` is summed).
    Without a value model there are no value metrics; with the KL in the loss its term is
    ``loss/kl_avg``; the group estimators add ``objective/frac_reward_zero_std``.

    Where the update's time went (``phase_timing.py``): ``time/PHASE`` seconds per phase and
    ``time/total`` for the whole update (this process's clock: the main one's is logged),
    ``gpu_memory_peak_bytes/PHASE`` on a GPU; ``completions/mean_length`` (tokens) and
    ``completions/clipped_ratio`` (share of responses cut at the length limit), TRL's GRPO
    names; ``generation/tokens_per_second``: response tokens of all processes over this
    process's generation seconds."""
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
        "completions/mean_length": response_lengths(rollout.response_mask).mean(),
        "completions/clipped_ratio": truncated_share(rollout.ends_with_eos),
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
    gathered = loop.accelerator.gather(torch.stack([local[n].float() for n in names]).unsqueeze(0))
    means = gathered.reshape(-1, len(names)).mean(dim=0).tolist()
    metrics = dict(zip(names, means, strict=True))
    all_ratios = loop.accelerator.gather(stats["ratio"].reshape(1, -1))
    metrics["val/ratio_var"] = all_ratios.var().item() if all_ratios.numel() > 1 else 0.0
    metrics["val/num_eos_tokens"] = float(
        loop.accelerator.reduce(rollout.ends_with_eos.sum().reshape(1), reduction="sum").item()
    )
    generated = loop.accelerator.reduce(
        response_lengths(rollout.response_mask).sum().reshape(1), reduction="sum"
    )
    timing = loop.clock.metrics()
    metrics.update(timing)
    if "time/generation" in timing:
        metrics["generation/tokens_per_second"] = tokens_per_second(
            float(generated.item()), timing["time/generation"]
        )
    metrics["lr"] = float(learning_rate)
    metrics["episode"] = float(loop.step * loop.global_batch_size)
    metrics["eps"] = float(episodes_per_second)
    return metrics
