"""The loop's phases one at a time, and real (tiny) runs of the estimators without a value
model (grpo, rloo, reinforce++): they must learn on held-out prompts, load and save no value
model, and resume. CPU only, no model hub; the tiny models are test_ppo_core's."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from rlhf_trainer.ppo_core import PPOHyperparameters, PPOLoop, latest_checkpoint
from rlhf_trainer.rollout import PromptSchedule

from tests.trainer.test_ppo_core import (
    OBJECTS,
    SUBJECTS,
    VERBS,
    fresh_models,
    make_loop,
    small_hyperparameters,
    tiny_setup,
)


@pytest.fixture(autouse=True, scope="module")
def single_cpu_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def held_out_prompts(count: int = 32) -> list[list[int]]:
    """Prompts made like the training prompts (a sentence's start) that are none of them."""
    rng = random.Random(999)
    tokenizer = tiny_setup(0)["tokenizer"]
    training = {tuple(prompt) for prompt in tiny_setup(0)["prompts"]}
    prompts: list[list[int]] = []
    while len(prompts) < count:
        sentence = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
        ids = tokenizer(sentence.rsplit(" ", 2)[0])["input_ids"]
        if tuple(ids) not in training:
            prompts.append(ids)
    return prompts


def small(estimator: str, updates: int = 1, **overrides) -> PPOHyperparameters:
    """test_ppo_core's small settings with ``estimator``: 4 samples per prompt for the
    group estimators, one for the others."""
    samples = 1 if estimator in ("gae", "reinforce++") else 4
    return small_hyperparameters(
        updates, **{"advantage_estimator": estimator, "samples_per_prompt": samples, **overrides}
    )


# --------------------------------------------------------------------------------------
# Phases alone
# --------------------------------------------------------------------------------------


def test_prompt_schedule_keeps_each_group_together_on_one_process() -> None:
    schedules = [PromptSchedule(10, 3, 4, seed=5, process_index=p, process_count=2) for p in (0, 1)]
    first, second = (schedule.indices(0) for schedule in schedules)
    assert len(first) == len(second) == 12
    for rows in (first, second):  # 3 groups of 4 identical, consecutive prompts
        groups = [rows[i : i + 4] for i in range(0, 12, 4)]
        assert all(len(set(group)) == 1 for group in groups)
        assert len({group[0] for group in groups}) == 3
    assert not set(first) & set(second)  # the processes answer different prompts
    # one sample per prompt reads the stream as before: 3 consecutive prompts per process
    assert PromptSchedule(10, 3, 1, seed=5).indices(0) == first[::4]


def test_generate_score_reference_and_advantage_phases_alone() -> None:
    loop = make_loop(small("grpo", kl_penalty="reward"))
    generation = loop.generate(0)
    assert generation.responses.size(0) == 8
    assert generation.prompt_indices[:4] == [generation.prompt_indices[0]] * 4
    scores = loop.score(generation)
    assert scores.shape == (8,) and torch.isfinite(scores).all()
    logprobs, values = loop.policy_logprobs(generation, with_values=False)
    assert values is None
    reference = loop.reference_logprobs(generation)
    mask = generation.response_mask
    # the untrained policy is its reference: identical log-probabilities
    torch.testing.assert_close(logprobs[mask], reference[mask])

    rollout = loop.rollout(0)
    assert rollout.values is None and rollout.returns is None
    group_advantages = rollout.advantages[:, 0].view(2, 4)  # first token carries the advantage
    assert group_advantages.sum(dim=1).abs().max() < 1e-4  # zero mean within each group
    stats = loop.update(rollout, 0)
    assert "value_loss" not in stats and stats["policy_loss"].shape == (2, 2, 1)


def test_grpo_puts_the_kl_in_the_loss_and_not_in_the_reward() -> None:
    loop = make_loop(small("grpo", kl_coef=0.5, kl_estimator="k3"))
    rollout = loop.rollout(0)
    assert rollout.non_score_rewards.abs().sum() == 0
    stats = loop.update(rollout, 0)
    torch.testing.assert_close(stats["loss"], stats["policy_loss"] + 0.5 * stats["kl_loss"])
    assert stats["kl_loss"][-1].max() > 0  # the policy has moved from the reference by then


def test_estimators_without_a_critic_refuse_a_value_model_and_gae_needs_one() -> None:
    with pytest.raises(ValueError, match="uses no value model"):
        PPOLoop(hyperparameters=small("rloo"), **fresh_models())
    models = fresh_models()
    models["value_model"] = None
    with pytest.raises(ValueError, match="needs a value model"):
        PPOLoop(hyperparameters=small("gae"), **models)


# --------------------------------------------------------------------------------------
# Real runs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimator", "overrides"),
    [
        ("grpo", {}),
        ("rloo", {}),
        ("reinforce++", {"kl_estimator": "k2"}),
    ],
)
def test_estimator_raises_the_reward_on_held_out_prompts(estimator: str, overrides: dict) -> None:
    """Like test_ppo_core's PPO run, without a value model: the score rises over training and
    the policy's reward on prompts it never trained on beats its frozen reference's. (The group
    estimators see 8 prompts per update, so they get 20 updates; ~10 s each.)"""
    hyperparameters = small(
        estimator,
        updates=20,
        total_episodes=32 * 20,
        rollout_batch_size=32,
        epochs=4,
        learning_rate=3e-3,
        lr_scheduler="constant",
        kl_coef=0.01,
        response_length=8,
        **overrides,
    )
    logged: list[dict[str, float]] = []
    loop = make_loop(hyperparameters, on_log=lambda step, total, metrics: logged.append(metrics))
    assert loop._value_model is None
    assert all("value_model" not in name for name, _ in loop.model.named_parameters())

    final = loop.train()

    assert len(logged) == 20
    assert all(math.isfinite(value) for value in final.values()), final
    assert "loss/value_avg" not in final and "val/clipfrac_avg" not in final
    if estimator in ("grpo", "rloo"):
        shares = [metrics["objective/frac_reward_zero_std"] for metrics in logged]
        assert all(0.0 <= share <= 1.0 for share in shares)
    else:
        assert "objective/frac_reward_zero_std" not in final
    assert ("loss/kl_avg" in final) == (estimator == "grpo")  # grpo's KL sits in the loss
    scores = [metrics["objective/scores"] for metrics in logged]
    first, last = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert last > first + 0.1, f"{estimator} did not raise the score: {first:.3f} -> {last:.3f}"

    evaluation = loop.evaluate(held_out_prompts())
    assert evaluation["eval/reward_policy"] > evaluation["eval/reward_reference"] + 0.1, evaluation
    assert evaluation["eval/win_rate"] > 0.8


def test_grpo_checkpoints_hold_no_value_model_and_resume_exactly(tmp_path: Path) -> None:
    hyperparameters = small("grpo", updates=4)
    straight = make_loop(hyperparameters)
    straight.train()

    checkpoints = tmp_path / "checkpoints"
    first = make_loop(hyperparameters)  # stopped (as by SIGTERM) after 2 of its 4 updates
    first.train(checkpoint_dir=checkpoints, should_stop=lambda: first.step >= 2)
    assert first.stopped and first.step == 2
    saved = latest_checkpoint(checkpoints)
    assert saved is not None and (saved / "policy.safetensors").is_file()
    assert not (saved / "value_model.safetensors").exists()

    torch.manual_seed(12345)
    resumed = make_loop(hyperparameters)
    resumed.train(checkpoint_dir=checkpoints, checkpoint_interval=1)
    assert resumed.step == 4
    for name, parameter in straight._policy.named_parameters():
        torch.testing.assert_close(
            dict(resumed._policy.named_parameters())[name], parameter, rtol=0, atol=1e-6
        )

    with pytest.raises(ValueError, match="saved by a grpo run"):
        make_loop(small("gae", updates=8)).train(checkpoint_dir=checkpoints)
