"""Advantage estimators and the reward shaping around them, as pure tensor functions.

One RL update turns scored responses into a per-token advantage the policy loss weighs
each token's log-probability by. Four estimators are offered, under OpenRLHF's and TRL's
names:

``gae``
    PPO with a value model (critic): a KL penalty on every token plus the score on the last
    one, generalised advantage estimation (gamma, lambda) against the value model's values,
    then whitened over the rollout. TRL's old PPOTrainer, OpenRLHF ``gae``.
``grpo``
    Group-relative (DeepSeekMath's GRPO): every prompt is answered ``samples_per_prompt``
    times and a response's advantage is its score minus its group's mean, divided by the
    group's standard deviation (``scale_rewards="group"``), the whole rollout's
    (``"batch"``) or nothing (``"none"``, Dr. GRPO). One advantage per response, on every
    token. No value model. TRL ``GRPOTrainer``, OpenRLHF ``group_norm`` / ``dr_grpo``.
``rloo``
    REINFORCE leave-one-out: the baseline of a response is the mean score of the *other*
    responses to its prompt. Optionally normalised over the rollout afterwards. No value
    model. TRL ``RLOOTrainer``, OpenRLHF ``rloo``.
``reinforce++``
    REINFORCE++: the per-token rewards of PPO (KL on every token, score on the last) summed
    into returns-to-go, then normalised over the whole batch (every process) instead of
    against a critic. No value model, one sample per prompt is enough. OpenRLHF
    ``reinforce``.

The KL penalty to the reference policy sits either in the reward (PPO, RLOO, REINFORCE++:
``kl_coef`` times the per-token estimate, summed per response for the group estimators as in
TRL's RLOO) or in the loss (GRPO's ``use_kl_loss`` / TRL's ``beta``; see ``losses``), and is
estimated per token by k1, k2 or k3 (http://joschu.net/blog/kl-approx.html).

Tensors are (batch, response positions) unless said otherwise; ``mask`` is 1 (or True) on
real response tokens and 0 on padding. Groups are contiguous: rows ``[g * n, (g + 1) * n)``
answer the same prompt (how the rollout lays them out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

ESTIMATORS = ("gae", "grpo", "rloo", "reinforce++")
GROUP_ESTIMATORS = ("grpo", "rloo")  # need several samples per prompt
KL_ESTIMATORS = ("k1", "k2", "k3")
KL_PENALTIES = ("reward", "loss")
REWARD_SCALINGS = ("group", "batch", "none")
# TRL's GRPOTrainer/RLOOTrainer add this to the standard deviation they divide by.
STD_EPSILON = 1e-4

SumOverProcesses = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over real tokens only, so padding never dilutes losses or statistics."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over real tokens. Unbiased (Bessel-corrected) by default, like TRL; with a
    single real token the correction is undefined, so the plain variance (0) is returned."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    count = mask.to(values.dtype).sum()
    if unbiased and count > 1:
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True
) -> torch.Tensor:
    """Scale to unit variance (and zero mean unless ``shift_mean`` is False) using real tokens'
    statistics. Keeping the mean (shift_mean=False) is how TRL whitens rewards: it changes
    their scale but not whether a response was good or bad on average."""
    mean, variance = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


# --------------------------------------------------------------------------------------
# KL and per-token rewards
# --------------------------------------------------------------------------------------


def kl_estimate(
    logprobs: torch.Tensor, reference_logprobs: torch.Tensor, estimator: str
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probabilities of tokens sampled
    from the policy (http://joschu.net/blog/kl-approx.html; OpenRLHF's compute_approx_kl).

    k1 is the log-ratio log p - log q: unbiased but can be negative per token.
    k2 is half its square: biased, never negative, its gradient is the true KL's gradient
    (the estimator to put in the loss).
    k3 is (r - 1) - log r with r = q / p: unbiased, never negative, lower variance (GRPO's).
    """
    log_ratio = reference_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; use one of {', '.join(KL_ESTIMATORS)}")


def per_token_rewards(
    kl: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reward PPO maximises: a KL penalty on every real token plus the reward model's
    score on the last real token (where the response is complete).

    Returns ``(rewards, non_score_rewards)``, both zero on padding.
    """
    non_score_rewards = (-kl_coef * kl) * mask
    last_index = (mask.long().sum(dim=1) - 1).clamp(min=0)
    rewards = non_score_rewards.clone()
    rewards[torch.arange(rewards.size(0), device=rewards.device), last_index] += scores
    return rewards * mask, non_score_rewards


# --------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------


def generalized_advantage_estimation(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2015) over response tokens; returns ``(advantages, returns)``.

    ``values[:, t]`` is the value of the state before token t. Padding has zero reward and
    zero value, so the state after the last real token counts as terminal (value 0).
    Returns are advantages + values: the value function's regression target.
    """
    rewards = rewards * mask
    values = values * mask
    length = rewards.size(1)
    running = torch.zeros_like(rewards[:, 0])
    advantages_reversed = []
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t < length - 1 else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages_reversed.append(running)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    return advantages, advantages + values


def cumulative_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted reward-to-go of every token: ``G_t = r_t + gamma * G_{t+1}`` (REINFORCE's
    return; OpenRLHF's get_cumulative_returns). Padding contributes nothing."""
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError("group estimators take one reward per response (a 1-D tensor)")
    if group_size < 2 or rewards.numel() % group_size:
        raise ValueError(
            f"{rewards.numel()} rewards do not split into groups of {group_size} (need >= 2)"
        )
    return rewards.view(-1, group_size)


def _unbiased_std(values: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return values.std() if dim is None else values.std(dim=dim)


def group_relative_advantages(
    rewards: torch.Tensor, group_size: int, scale_rewards: str = "group"
) -> torch.Tensor:
    """GRPO: each response's reward minus its group's mean, divided by the group's standard
    deviation (``"group"``), the whole batch's (``"batch"``) or nothing (``"none"``, Dr. GRPO),
    plus 1e-4 so a group of equal rewards gets advantage 0, not a division by zero. Standard
    deviations are unbiased, as TRL's GRPOTrainer computes them. ``rewards``: (responses,)."""
    grouped = _groups(rewards, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if scale_rewards == "group":
        std = _unbiased_std(grouped, dim=1).repeat_interleave(group_size)
    elif scale_rewards == "batch":
        std = _unbiased_std(rewards).expand_as(rewards)
    elif scale_rewards == "none":
        return centred
    else:
        raise ValueError(
            f"unknown scale_rewards {scale_rewards!r}; use one of {', '.join(REWARD_SCALINGS)}"
        )
    return centred / (std + STD_EPSILON)


def leave_one_out_advantages(
    rewards: torch.Tensor, group_size: int, normalize: bool = False
) -> torch.Tensor:
    """RLOO: each response's reward minus the mean reward of the other responses to the same
    prompt (an unbiased baseline: it does not depend on the response itself). With
    ``normalize`` the advantages are then standardised over the batch (TRL's
    ``normalize_advantages``: mean 0, divided by the unbiased std + 1e-4)."""
    grouped = _groups(rewards, group_size)
    baselines = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    advantages = (grouped - baselines).reshape(-1)
    if normalize:
        advantages = (advantages - advantages.mean()) / (_unbiased_std(advantages) + STD_EPSILON)
    return advantages


def zero_variance_group_share(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """The share of groups whose responses all got the same reward: such a group teaches
    nothing (every advantage is 0). TRL logs it as ``frac_reward_zero_std``."""
    std = _unbiased_std(_groups(rewards, group_size), dim=1)
    return torch.isclose(std, torch.zeros_like(std)).to(rewards.dtype).mean()


def batch_normalised(
    values: torch.Tensor,
    mask: torch.Tensor,
    sum_over_processes: SumOverProcesses | None = None,
) -> torch.Tensor:
    """Zero mean, unit variance over every real token of the batch; with
    ``sum_over_processes`` (an all-reduce sum) over the batch of *all* processes. REINFORCE++'s
    global advantage normalisation (OpenRLHF: plain variance, clamped at 1e-8). Zero on
    padding."""
    mask = mask.to(values.dtype)
    totals = torch.stack([(values * mask).sum(), (values**2 * mask).sum(), mask.sum()])
    if sum_over_processes is not None:
        totals = sum_over_processes(totals)
    total, squares, count = totals[0], totals[1], totals[2].clamp(min=1)
    mean = total / count
    variance = squares / count - mean**2
    return (values - mean) * variance.clamp(min=1e-8).rsqrt() * mask


# --------------------------------------------------------------------------------------
# One rollout's advantages, for any estimator
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdvantageSettings:
    """The knobs of ``compute_advantages`` (a subset of the loop's hyperparameters)."""

    estimator: str = "gae"
    samples_per_prompt: int = 1
    kl_coef: float = 0.05
    kl_penalty: str = "reward"  # "reward" or "loss"
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False  # gae only
    scale_rewards: str = "group"  # grpo only
    normalize_advantages: bool = False  # rloo only

    @property
    def uses_value_model(self) -> bool:
        return self.estimator == "gae"


@dataclass
class Advantages:
    """What an estimator hands the update: per-token advantages, the value model's targets
    (gae only), the KL part of the reward (zero when the KL sits in the loss) and, for the
    group estimators, the share of groups with zero reward variance."""

    advantages: torch.Tensor
    returns: torch.Tensor | None
    non_score_rewards: torch.Tensor
    zero_variance_group_share: torch.Tensor | None = None


def compute_advantages(
    settings: AdvantageSettings,
    scores: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    values: torch.Tensor | None = None,
    sum_over_processes: SumOverProcesses | None = None,
) -> Advantages:
    """Advantages of one rollout: ``scores`` (responses,) from the reward model, ``kl``
    per-token estimates, ``values`` the value model's (gae only). Pure apart from the optional
    all-reduce REINFORCE++ normalises with."""
    mask = mask.to(kl.dtype)
    kl_coef_in_reward = settings.kl_coef if settings.kl_penalty == "reward" else 0.0
    estimator = settings.estimator
    if estimator in ("gae", "reinforce++"):
        rewards, non_score_rewards = per_token_rewards(kl, scores, mask, kl_coef_in_reward)
        if estimator == "gae":
            if values is None:
                raise ValueError("gae needs the value model's values")
            if settings.whiten_rewards:
                rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
            advantages, returns = generalized_advantage_estimation(
                rewards, values * mask, mask, settings.gamma, settings.lam
            )
            return Advantages(masked_whiten(advantages, mask) * mask, returns, non_score_rewards)
        returns = cumulative_returns(rewards, mask, settings.gamma)
        return Advantages(
            batch_normalised(returns, mask, sum_over_processes), None, non_score_rewards
        )
    if estimator not in GROUP_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; use {', '.join(ESTIMATORS)}")
    non_score_rewards = -kl_coef_in_reward * kl * mask
    sequence_rewards = scores + non_score_rewards.sum(dim=1)
    group_size = settings.samples_per_prompt
    if estimator == "grpo":
        sequence_advantages = group_relative_advantages(
            sequence_rewards, group_size, settings.scale_rewards
        )
    else:
        sequence_advantages = leave_one_out_advantages(
            sequence_rewards, group_size, settings.normalize_advantages
        )
    return Advantages(
        sequence_advantages.unsqueeze(1) * mask,
        None,
        non_score_rewards,
        zero_variance_group_share(scores, group_size),
    )
