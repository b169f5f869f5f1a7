"""rlhf_trainer.estimators: every advantage estimator against hand-computed values, and GRPO's
and RLOO's against TRL's own formulas (TRL has them inline in its trainers, not as functions:
the lines are replicated below with their source; TRL's ``nanstd`` is imported)."""

from __future__ import annotations

import math

import pytest
import torch
from rlhf_trainer.estimators import (
    AdvantageSettings,
    batch_normalised,
    compute_advantages,
    cumulative_returns,
    group_relative_advantages,
    kl_estimate,
    leave_one_out_advantages,
    zero_variance_group_share,
)
from trl.trainer.utils import nanstd

# --------------------------------------------------------------------------------------
# TRL 1.16's formulas, replicated line for line
# --------------------------------------------------------------------------------------


def trl_grpo_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str):
    """trl/trainer/grpo_trainer.py (1.16.0), GRPOTrainer._generate_and_score_completions,
    multi_objective_aggregation == "sum_then_normalize", one reward function."""
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    elif scale_rewards == "batch":
        std_rewards = nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))
    return advantages, is_std_zero.float().mean()


def trl_rloo_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    normalize_advantages: bool,
    beta: float = 0.0,
    per_token_kl: torch.Tensor | None = None,
    completion_mask: torch.Tensor | None = None,
):
    """trl/trainer/rloo_trainer.py (1.16.0), RLOOTrainer._generate_and_score_completions: the
    sequence-level k1 KL penalty in the reward, then the leave-one-out baseline."""
    if beta != 0.0:
        kl = (per_token_kl * completion_mask).sum(-1)
        rewards = rewards - beta * kl
    grouped_rewards = rewards.view(-1, num_generations)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
    baselines = baselines.view(-1)
    advantages = rewards - baselines
    if normalize_advantages:
        advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)
    return advantages


# --------------------------------------------------------------------------------------
# Hand-computed values
# --------------------------------------------------------------------------------------


def test_grpo_normalises_within_each_group_by_hand() -> None:
    rewards = torch.tensor([1.0, 3.0, 2.0, 2.0])  # two prompts, two answers each
    # group 1: mean 2, unbiased std sqrt(2); group 2: mean 2, std 0 (no signal: advantage 0)
    expected = torch.tensor([-1 / (math.sqrt(2) + 1e-4), 1 / (math.sqrt(2) + 1e-4), 0.0, 0.0])
    torch.testing.assert_close(group_relative_advantages(rewards, 2, "group"), expected)
    torch.testing.assert_close(
        group_relative_advantages(rewards, 2, "none"), torch.tensor([-1.0, 1.0, 0.0, 0.0])
    )
    # batch std: mean 2, deviations -1, 1, 0, 0 -> unbiased variance 2/3
    batch_std = math.sqrt(2 / 3) + 1e-4
    torch.testing.assert_close(
        group_relative_advantages(rewards, 2, "batch"),
        torch.tensor([-1 / batch_std, 1 / batch_std, 0.0, 0.0]),
    )
    assert zero_variance_group_share(rewards, 2).item() == 0.5


def test_rloo_baseline_is_the_mean_of_the_other_answers_by_hand() -> None:
    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])  # two prompts, three answers each
    # 1 - (2+6)/2 = -3 ; 2 - (1+6)/2 = -1.5 ; 6 - (1+2)/2 = 4.5 ; 0 - 1.5 ; 0 - 1.5 ; 3 - 0
    expected = torch.tensor([-3.0, -1.5, 4.5, -1.5, -1.5, 3.0])
    torch.testing.assert_close(leave_one_out_advantages(rewards, 3), expected)
    normalised = leave_one_out_advantages(rewards, 3, normalize=True)
    torch.testing.assert_close(normalised, (expected - expected.mean()) / (expected.std() + 1e-4))


def test_group_estimators_refuse_rewards_that_do_not_split_into_groups() -> None:
    with pytest.raises(ValueError, match="groups of 2"):
        group_relative_advantages(torch.ones(3), 2)
    with pytest.raises(ValueError, match="need >= 2"):
        leave_one_out_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="scale_rewards"):
        group_relative_advantages(torch.ones(4), 2, "token")


def test_cumulative_returns_by_hand() -> None:
    rewards = torch.tensor([[1.0, 0.0, 2.0], [1.0, 5.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the 9 is padding
    # gamma 0.5: row 0: G2 = 2, G1 = 0 + 1 = 1, G0 = 1 + 0.5 = 1.5 ; row 1: G1 = 5, G0 = 3.5
    torch.testing.assert_close(
        cumulative_returns(rewards, mask, 0.5), torch.tensor([[1.5, 1.0, 2.0], [3.5, 5.0, 0.0]])
    )


def test_batch_normalisation_counts_real_tokens_of_every_process() -> None:
    values = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # alone: mean 2, plain variance 1
    torch.testing.assert_close(batch_normalised(values, mask), torch.tensor([[-1.0, 1.0, 0.0]]))
    # with a second process holding tokens 5 and 7: mean 4, plain variance 5
    other = torch.tensor([5.0 + 7.0, 25.0 + 49.0, 2.0])
    both = batch_normalised(values, mask, sum_over_processes=lambda mine: mine + other)
    torch.testing.assert_close(both, torch.tensor([[-3.0, -1.0, 0.0]]) / math.sqrt(5.0))


def test_k2_is_half_the_squared_log_ratio() -> None:
    logprobs = torch.log(torch.tensor([0.5, 0.3]))
    reference = torch.log(torch.tensor([0.25, 0.3]))
    torch.testing.assert_close(
        kl_estimate(logprobs, reference, "k2"), torch.tensor([0.5 * math.log(2.0) ** 2, 0.0])
    )


def test_reinforce_plus_plus_puts_the_kl_on_every_token_and_normalises_the_returns() -> None:
    scores = torch.tensor([1.0, 0.0])
    kl = torch.tensor([[0.2, 0.2], [0.4, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    settings = AdvantageSettings(estimator="reinforce++", kl_coef=0.5, gamma=1.0)
    result = compute_advantages(settings, scores, kl, mask)
    # per-token rewards: [-0.1, -0.1 + 1] and [-0.2 + 0]; returns-to-go: [0.8, 0.9] and [-0.2]
    returns = torch.tensor([0.8, 0.9, -0.2])
    normalised = (returns - returns.mean()) / returns.var(unbiased=False).sqrt()
    torch.testing.assert_close(result.advantages[mask.bool()], normalised)
    assert result.advantages[1, 1] == 0.0
    torch.testing.assert_close(result.non_score_rewards, torch.tensor([[-0.1, -0.1], [-0.2, 0.0]]))
    assert result.returns is None and result.zero_variance_group_share is None


def test_group_estimators_give_every_token_of_a_response_its_advantage() -> None:
    scores = torch.tensor([1.0, 3.0])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    kl = torch.full((2, 3), 0.5)
    in_loss = AdvantageSettings(estimator="grpo", samples_per_prompt=2, kl_penalty="loss")
    result = compute_advantages(in_loss, scores, kl, mask)
    a = 1 / (math.sqrt(2) + 1e-4)
    torch.testing.assert_close(result.advantages, torch.tensor([[-a, -a, 0.0], [a, 0.0, 0.0]]))
    assert result.non_score_rewards.abs().sum() == 0  # the KL is in the loss, not the reward
    assert result.zero_variance_group_share.item() == 0.0

    # KL in the reward, summed per response: 1 - 0.1 * 1.0 = 0.9 and 3 - 0.1 * 0.5 = 2.95
    in_reward = AdvantageSettings(estimator="rloo", samples_per_prompt=2, kl_coef=0.1)
    result = compute_advantages(in_reward, scores, kl, mask)
    torch.testing.assert_close(
        result.advantages, torch.tensor([[-2.05, -2.05, 0.0], [2.05, 0.0, 0.0]])
    )


def test_gae_path_is_todays_ppo() -> None:
    scores, kl = torch.tensor([1.0]), torch.tensor([[0.1, 0.1, 0.1]])
    mask, values = torch.ones(1, 3), torch.tensor([[0.5, 1.0, 1.5]])
    result = compute_advantages(AdvantageSettings(kl_coef=0.0, lam=1.0), scores, kl, mask, values)
    torch.testing.assert_close(result.returns, torch.tensor([[1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="value model"):
        compute_advantages(AdvantageSettings(), scores, kl, mask)


# --------------------------------------------------------------------------------------
# Against TRL
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
@pytest.mark.parametrize("group_size", [2, 4, 8])
def test_grpo_matches_trl(scale_rewards: str, group_size: int) -> None:
    generator = torch.Generator().manual_seed(group_size)
    rewards = torch.randn(8 * group_size, generator=generator)
    rewards[:group_size] = 0.25  # one group without any variance
    ours = group_relative_advantages(rewards, group_size, scale_rewards)
    theirs, zero_std_share = trl_grpo_advantages(rewards, group_size, scale_rewards)
    torch.testing.assert_close(ours, theirs)
    if scale_rewards != "batch":  # TRL then checks the batch's std, not the groups'
        torch.testing.assert_close(zero_variance_group_share(rewards, group_size), zero_std_share)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("group_size", [2, 3, 8])
def test_rloo_matches_trl_with_its_kl_in_the_reward(normalize: bool, group_size: int) -> None:
    generator = torch.Generator().manual_seed(group_size)
    count, width = 6 * group_size, 5
    scores = torch.randn(count, generator=generator)
    logprobs = -torch.rand(count, width, generator=generator)
    reference = -torch.rand(count, width, generator=generator)
    mask = (torch.rand(count, width, generator=generator) < 0.8).float()
    mask[:, 0] = 1.0
    settings = AdvantageSettings(
        estimator="rloo",
        samples_per_prompt=group_size,
        kl_coef=0.05,
        normalize_advantages=normalize,
    )
    kl = kl_estimate(logprobs, reference, "k1") * mask  # RLOO's first-order log ratio
    ours = compute_advantages(settings, scores, kl, mask)
    theirs = trl_rloo_advantages(
        scores, group_size, normalize, beta=0.05, per_token_kl=logprobs - reference,
        completion_mask=mask,
    )  # fmt: skip
    torch.testing.assert_close(ours.advantages, theirs.unsqueeze(1) * mask)


def test_k3_is_trls_grpo_kl_term() -> None:
    """trl/trainer/grpo_trainer.py (1.16.0), GRPOTrainer._compute_loss: per_token_kl."""
    generator = torch.Generator().manual_seed(0)
    per_token_logps = -torch.rand(4, 6, generator=generator)
    ref_per_token_logps = -torch.rand(4, 6, generator=generator)
    per_token_kl = (
        torch.exp(ref_per_token_logps - per_token_logps)
        - (ref_per_token_logps - per_token_logps)
        - 1
    )
    torch.testing.assert_close(
        kl_estimate(per_token_logps, ref_per_token_logps, "k3"), per_token_kl
    )
