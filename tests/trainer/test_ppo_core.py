"""rlhf_trainer.ppo_core: the PPO math against hand-computed values, and real (tiny) PPO runs
that must learn, evaluate, checkpoint and resume. CPU only, no model hub."""

from __future__ import annotations

import copy
import functools
import math
import random
from pathlib import Path

import pytest
import torch
from rlhf_trainer.ppo_core import (
    PPOHyperparameters,
    PPOLoop,
    clipped_policy_loss,
    clipped_value_loss,
    first_true_indices,
    generalized_advantage_estimation,
    kl_estimate,
    latest_checkpoint,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
    truncate_after_stop_token,
)
from rlhf_trainer.presets import bpe_tokenizer, tiny_llama_config
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

# --------------------------------------------------------------------------------------
# Pure math
# --------------------------------------------------------------------------------------


def test_gae_matches_hand_computation() -> None:
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    mask = torch.ones(1, 3)
    advantages, returns = generalized_advantage_estimation(
        rewards, values, mask, gamma=0.9, lam=0.8
    )
    # t=2: delta = 2 - 1.5 = 0.5                          A2 = 0.5
    # t=1: delta = 0 + 0.9 * 1.5 - 1.0 = 0.35             A1 = 0.35 + 0.72 * 0.5 = 0.71
    # t=0: delta = 1 + 0.9 * 1.0 - 0.5 = 1.4              A0 = 1.4 + 0.72 * 0.71 = 1.9112
    torch.testing.assert_close(advantages, torch.tensor([[1.9112, 0.71, 0.5]]))
    torch.testing.assert_close(returns, torch.tensor([[2.4112, 1.71, 2.0]]))


def test_gae_treats_the_state_after_the_last_real_token_as_terminal() -> None:
    rewards = torch.tensor([[1.0, 3.0, 9.0]])
    values = torch.tensor([[0.5, 2.0, 7.0]])  # the 9 and 7 sit on padding and must be ignored
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    advantages, returns = generalized_advantage_estimation(
        rewards, values, mask, gamma=1.0, lam=1.0
    )
    # t=1: delta = 3 + 0 - 2 = 1 ; t=0: delta = 1 + 2 - 0.5 = 2.5, A0 = 2.5 + 1 = 3.5
    torch.testing.assert_close(advantages, torch.tensor([[3.5, 1.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[4.0, 3.0, 0.0]]))


def test_masked_statistics_and_whitening_ignore_padding() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    assert masked_mean(values, mask).item() == pytest.approx(2.5)
    assert masked_var(values, mask).item() == pytest.approx(5.0 / 3.0)  # unbiased, like TRL
    assert masked_var(values, mask, unbiased=False).item() == pytest.approx(1.25)

    whitened = masked_whiten(values, mask)
    real = whitened[mask]
    torch.testing.assert_close(
        real, (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / math.sqrt(5.0 / 3.0)
    )
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert real.std().item() == pytest.approx(1.0, abs=1e-6)

    kept_mean = masked_whiten(values, mask, shift_mean=False)[mask]
    assert kept_mean.mean().item() == pytest.approx(2.5, abs=1e-6)
    assert kept_mean.std().item() == pytest.approx(1.0, abs=1e-6)


def test_kl_estimators_known_values() -> None:
    logprobs = torch.log(torch.tensor([0.5, 0.3]))
    reference = torch.log(torch.tensor([0.25, 0.3]))
    k1 = kl_estimate(logprobs, reference, "k1")
    k3 = kl_estimate(logprobs, reference, "k3")
    torch.testing.assert_close(k1, torch.tensor([math.log(2.0), 0.0]))
    torch.testing.assert_close(k3, torch.tensor([(0.5 - 1.0) + math.log(2.0), 0.0]))
    with pytest.raises(ValueError):
        kl_estimate(logprobs, reference, "k4")


def test_kl_estimators_average_to_the_true_kl() -> None:
    """Both are unbiased: their expectation under the policy is exactly KL(policy || reference)."""
    policy = torch.tensor([0.6, 0.3, 0.1])
    reference = torch.tensor([0.2, 0.5, 0.3])
    true_kl = (policy * (policy / reference).log()).sum()
    for estimator in ("k1", "k3"):
        estimates = kl_estimate(policy.log(), reference.log(), estimator)
        torch.testing.assert_close((policy * estimates).sum(), true_kl)
    assert (kl_estimate(policy.log(), reference.log(), "k3") >= 0).all()


def test_truncation_after_stop_token() -> None:
    responses = torch.tensor([[5, 2, 7, 2, 9], [5, 6, 7, 8, 9], [2, 4, 4, 4, 4]])
    truncated, mask = truncate_after_stop_token(responses, stop_token_id=2, pad_token_id=0)
    assert truncated.tolist() == [[5, 2, 0, 0, 0], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]]
    assert mask.tolist() == [
        [True, True, False, False, False],
        [True, True, True, True, True],
        [True, False, False, False, False],
    ]
    assert first_true_indices(responses == 2).tolist() == [1, 5, 0]


def test_truncation_when_padding_is_the_eos_token() -> None:
    """With pad == EOS the mask, not the pad id, must say where a response ends."""
    responses = torch.tensor([[5, 6, 2, 8], [5, 6, 7, 8]])
    truncated, mask = truncate_after_stop_token(responses, stop_token_id=2, pad_token_id=2)
    assert truncated.tolist() == [[5, 6, 2, 2], [5, 6, 7, 8]]
    assert mask.sum(1).tolist() == [3, 4]


def test_per_token_rewards_put_the_score_on_the_last_real_token() -> None:
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, non_score = per_token_rewards(kl, torch.tensor([1.0, 2.0]), mask, kl_coef=0.5)
    torch.testing.assert_close(non_score, torch.tensor([[-0.05, -0.1, -0.15], [-0.05, -0.1, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, -0.1, 0.85], [-0.05, 1.9, 0.0]]))


def test_clipped_policy_loss_at_known_values() -> None:
    new_logprobs = torch.log(torch.tensor([[1.5, 0.5, 1.1]])).requires_grad_()
    old_logprobs = torch.zeros(1, 3)
    advantages = torch.tensor([[1.0, 1.0, -1.0]])
    loss, clip_fraction = clipped_policy_loss(
        new_logprobs, old_logprobs, advantages, torch.ones(1, 3), 0.2
    )
    # ratio 1.5, A=+1: max(-1.5, -1.2) = -1.2 (clipped) ; ratio 0.5, A=+1: max(-0.5, -0.8) = -0.5
    # ratio 1.1, A=-1: max(1.1, 1.1) = 1.1
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1) / 3)
    assert clip_fraction.item() == pytest.approx(1 / 3)
    loss.backward()
    # No gradient through the clipped token; d(-A * ratio)/d(logprob) = -A * ratio elsewhere.
    torch.testing.assert_close(new_logprobs.grad, torch.tensor([[0.0, -0.5 / 3, 1.1 / 3]]))

    masked_loss, masked_fraction = clipped_policy_loss(
        new_logprobs.detach(), old_logprobs, advantages, torch.tensor([[1.0, 1.0, 0.0]]), 0.2
    )
    assert masked_loss.item() == pytest.approx((-1.2 - 0.5) / 2)
    assert masked_fraction.item() == pytest.approx(0.5)


def test_clipped_value_loss_at_known_values() -> None:
    new_values = torch.tensor([[0.5, -0.1, 0.3]])
    old_values = torch.zeros(1, 3)
    returns = torch.tensor([[1.0, 1.0, -1.0]])
    loss, clip_fraction = clipped_value_loss(new_values, old_values, returns, torch.ones(1, 3), 0.2)
    # 0.5 -> clipped 0.2: max(0.25, 0.64) = 0.64 (clipped) ; -0.1 inside the range: 1.21
    # 0.3 -> clipped 0.2: max(1.69, 1.44) = 1.69
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.21 + 1.69) / 3)
    assert clip_fraction.item() == pytest.approx(1 / 3)


def test_hyperparameters_are_validated() -> None:
    with pytest.raises(ValueError, match="mini_batches"):
        PPOHyperparameters(rollout_batch_size=6, mini_batches=4).validate()
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        PPOHyperparameters(
            rollout_batch_size=8, mini_batches=2, gradient_accumulation_steps=3
        ).validate()
    with pytest.raises(ValueError, match="kl_estimator"):
        PPOHyperparameters(kl_estimator="k4").validate()
    with pytest.raises(ValueError, match="samples_per_prompt must be at least 2"):
        PPOHyperparameters(advantage_estimator="grpo").validate()
    with pytest.raises(ValueError, match="multiple of samples_per_prompt"):
        PPOHyperparameters(
            advantage_estimator="rloo", rollout_batch_size=6, samples_per_prompt=4
        ).validate()
    with pytest.raises(ValueError, match="advantage_estimator"):
        PPOHyperparameters(advantage_estimator="ppo").validate()
    assert PPOHyperparameters(advantage_estimator="grpo", samples_per_prompt=2).kl_in_loss
    assert not PPOHyperparameters(advantage_estimator="rloo", samples_per_prompt=2).kl_in_loss


# --------------------------------------------------------------------------------------
# Tiny models built locally (the product has its own tiny preset; these stay test-local)
# --------------------------------------------------------------------------------------

SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "a bird", "the child"]
VERBS = ["sees", "likes", "finds", "paints", "follows", "hears"]
OBJECTS = ["the sun", "a red ball", "the river", "a small house", "the green tree", "a song"]
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]


@pytest.fixture(autouse=True, scope="module")
def single_cpu_thread():
    """Tiny matrices on a small shared CPU: waking a second OpenMP thread costs more than the
    work (measured ~20x slower per call), so these runs use one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build_tokenizer(sentences: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the given sentences, with <pad>, <s> and </s>."""
    return bpe_tokenizer(sentences, vocab_size=320, chat=False)


def llama_config(tokenizer: PreTrainedTokenizerFast, **extra) -> LlamaConfig:
    return tiny_llama_config(tokenizer, max_position_embeddings=64, **extra)


def train_reward_model(
    model: LlamaForSequenceClassification, liked: torch.Tensor, seed: int, steps: int = 50
) -> float:
    """Teach the reward model the share of 'liked' tokens in a sequence (a plain regression loop).

    Training sequences mix liked and other tokens in random proportions, so the score is a
    smooth, learnable function of which tokens a response uses. Returns the last loss.
    """
    generator = torch.Generator().manual_seed(seed)
    vocabulary = liked.numel()
    ordinary = ~liked
    ordinary[: len(SPECIAL_TOKENS)] = False
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch, length = 64, 12
    for _ in range(steps):
        share = torch.rand(batch, 1, generator=generator)
        liked_tokens = torch.multinomial(
            liked.float().expand(batch, vocabulary), length, True, generator=generator
        )
        other_tokens = torch.multinomial(
            ordinary.float().expand(batch, vocabulary), length, True, generator=generator
        )
        ids = torch.where(
            torch.rand(batch, length, generator=generator) < share, liked_tokens, other_tokens
        )
        target = liked[ids].float().mean(dim=1)
        loss = ((model(input_ids=ids).logits.squeeze(-1) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return loss.item()


@functools.cache
def tiny_setup(seed: int = 0) -> dict:
    """Tokenizer, prompts, an untrained policy and a trained reward model (built once per seed;
    tests take copies through `fresh_models`)."""
    rng = random.Random(seed)
    sentences = [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(300)
    ]
    tokenizer = build_tokenizer(sentences)
    prompts = [tokenizer(sentence.rsplit(" ", 2)[0])["input_ids"] for sentence in sentences[:64]]

    torch.manual_seed(seed)
    policy = LlamaForCausalLM(llama_config(tokenizer))
    reward_model = LlamaForSequenceClassification(llama_config(tokenizer, num_labels=1))
    generator = torch.Generator().manual_seed(seed + 1)
    liked = torch.zeros(len(tokenizer), dtype=torch.bool)
    liked[torch.randperm(len(tokenizer), generator=generator)[: len(tokenizer) // 2]] = True
    liked[: len(SPECIAL_TOKENS)] = False
    reward_loss = train_reward_model(reward_model, liked, seed)
    assert reward_loss < 0.01, (
        f"the tiny reward model did not learn its target (loss {reward_loss})"
    )
    return {
        "tokenizer": tokenizer,
        "prompts": prompts,
        "policy": policy,
        "reward_model": reward_model,
    }


def fresh_models(seed: int = 0) -> dict:
    """Independent copies: PPOLoop trains the policy and value model in place. The value model
    starts from the reward model, as is usual for PPO."""
    setup = tiny_setup(seed)
    policy = copy.deepcopy(setup["policy"])
    return {
        "policy": policy,
        "reference_policy": copy.deepcopy(policy),
        "value_model": copy.deepcopy(setup["reward_model"]),
        "reward_model": copy.deepcopy(setup["reward_model"]),
        "tokenizer": copy.deepcopy(setup["tokenizer"]),
        "train_prompts": setup["prompts"],
    }


def make_loop(hyperparameters: PPOHyperparameters, seed: int = 0, **kwargs) -> PPOLoop:
    """A loop on fresh tiny models; no value model for the estimators that use none."""
    models = fresh_models(seed)
    if not hyperparameters.uses_value_model:
        models["value_model"] = None
    return PPOLoop(hyperparameters=hyperparameters, **models, **kwargs)


def small_hyperparameters(updates: int, **overrides) -> PPOHyperparameters:
    settings = {
        "total_episodes": 8 * updates,
        "rollout_batch_size": 8,
        "mini_batches": 2,
        "epochs": 2,
        "learning_rate": 1e-3,
        "response_length": 6,
        "temperature": 1.0,
        "seed": 0,
        **overrides,
    }
    return PPOHyperparameters(**settings)


# --------------------------------------------------------------------------------------
# Real runs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_ppo_raises_the_reward_and_beats_the_reference(seed: int) -> None:
    hyperparameters = PPOHyperparameters(
        total_episodes=32 * 12,
        rollout_batch_size=32,
        mini_batches=2,
        epochs=4,
        learning_rate=3e-3,
        lr_scheduler="constant",
        kl_coef=0.01,
        response_length=8,
        temperature=1.0,
        seed=seed,
    )
    logged: list[tuple[int, int, dict[str, float]]] = []
    loop = make_loop(
        hyperparameters,
        seed,
        on_log=lambda step, total, metrics: logged.append((step, total, metrics)),
    )
    assert loop.total_updates == 12

    final = loop.train()

    assert [step for step, _, _ in logged] == list(range(1, 13))
    assert all(total == 12 for _, total, _ in logged)
    assert final == logged[-1][2]
    scores = [metrics["objective/scores"] for _, _, metrics in logged]
    first, last = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert last > first + 0.08, (
        f"PPO did not raise the reward model's score: {first:.3f} -> {last:.3f}"
    )
    kls = [metrics["objective/kl"] for _, _, metrics in logged]
    assert all(math.isfinite(kl) for kl in kls) and kls[-1] < 20
    expected_metrics = {
        "objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward",
        "objective/scores", "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg",
        "loss/value_avg", "val/clipfrac_avg", "policy/entropy_avg", "val/ratio", "val/ratio_var",
        "val/num_eos_tokens", "lr", "episode", "eps", "loss", "grad_norm",
        # where the update's time went (phase_timing.py; no GPU memory peaks on CPU)
        "time/generation", "time/scoring", "time/policy_logprobs", "time/reference_logprobs",
        "time/advantages", "time/update", "time/total", "generation/tokens_per_second",
        "completions/mean_length", "completions/clipped_ratio",
    }  # fmt: skip
    assert set(final) == expected_metrics
    assert all(math.isfinite(value) for value in final.values()), final
    assert final["episode"] == 32 * 12
    assert final["lr"] == pytest.approx(3e-3)

    evaluation = loop.evaluate(tiny_setup(seed)["prompts"][:32])
    assert evaluation["eval/reward_policy"] > evaluation["eval/reward_reference"] + 0.05
    assert evaluation["eval/win_rate"] > 0.7
    assert math.isfinite(evaluation["eval/kl"]) and evaluation["eval/kl"] > 0
    assert len(evaluation["samples"]) == 32
    sample = evaluation["samples"][0]
    assert set(sample) == {"prompt", "policy", "reference", "policy_score", "reference_score"}
    assert sample["prompt"] == tiny_setup(seed)["tokenizer"].decode(tiny_setup(seed)["prompts"][0])


@pytest.mark.parametrize("max_grad_norm", [1e-4, 0.0])
def test_logs_the_loss_it_minimises_and_the_gradient_norm_before_clipping(
    max_grad_norm: float,
) -> None:
    """`loss` and `grad_norm` (the names Trainer logs, exported as rlhf_training_loss and
    rlhf_training_gradient_norm): the loss is policy + value_coef x value loss, and the norm
    is measured before clipping (far above a tiny max_grad_norm), also without clipping."""
    hyperparameters = small_hyperparameters(1, max_grad_norm=max_grad_norm, value_coef=0.3)
    metrics = make_loop(hyperparameters).train()
    assert metrics["loss"] == pytest.approx(
        metrics["loss/policy_avg"] + 0.3 * metrics["loss/value_avg"], rel=1e-5, abs=1e-7
    )
    assert math.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 100 * 1e-4


def test_untrained_policy_ties_with_its_reference_and_rollouts_match_the_training_forward() -> None:
    """With one epoch and one mini-batch the loss sees the rollout policy itself: the probability
    ratio must be 1 (rollout log-probs and the training forward agree) and nothing is clipped.
    Evaluating identical models from the same seed gives identical responses: a 0.5 win rate."""
    loop = make_loop(
        small_hyperparameters(1, mini_batches=1, epochs=1, rollout_batch_size=16, total_episodes=16)
    )
    evaluation = loop.evaluate(tiny_setup(0)["prompts"][:8])
    assert evaluation["eval/win_rate"] == 0.5
    assert evaluation["eval/kl"] == pytest.approx(0.0, abs=1e-5)
    assert [s["policy"] for s in evaluation["samples"]] == [
        s["reference"] for s in evaluation["samples"]
    ]

    metrics = loop.train()
    assert metrics["val/ratio"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["policy/approxkl_avg"] == pytest.approx(0.0, abs=1e-8)
    assert metrics["policy/clipfrac_avg"] == 0.0
    assert metrics["objective/kl"] == pytest.approx(0.0, abs=1e-5)


def test_tokenizer_without_pad_token_pads_with_eos(tmp_path: Path) -> None:
    models_ = fresh_models()
    tokenizer = models_["tokenizer"]
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None
    loop = PPOLoop(
        hyperparameters=small_hyperparameters(1, kl_estimator="k3", missing_eos_penalty=1.0),
        **models_,
    )
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    metrics = loop.train()
    assert all(math.isfinite(value) for value in metrics.values())

    loop.save_policy(tmp_path / "policy")
    saved = LlamaForCausalLM.from_pretrained(tmp_path / "policy")
    assert saved.config.use_cache is True
    assert (tmp_path / "policy" / "tokenizer.json").is_file()
    torch.testing.assert_close(saved.lm_head.weight, models_["policy"].lm_head.weight)


def test_resume_continues_step_and_learning_rate(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    first = make_loop(small_hyperparameters(2))
    first.train(checkpoint_dir=checkpoints, checkpoint_interval=1, checkpoints_to_keep=2)
    assert first.step == 2
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    saved_head = first._policy.lm_head.weight.detach().clone()

    logged: list[tuple[int, int, dict[str, float]]] = []
    resumed = make_loop(small_hyperparameters(4), on_log=lambda s, t, m: logged.append((s, t, m)))
    assert resumed.total_updates == 4
    assert not torch.equal(
        resumed._policy.lm_head.weight, saved_head
    )  # starts from the initial models...
    resumed.train(checkpoint_dir=checkpoints, checkpoint_interval=1, checkpoints_to_keep=2)

    assert resumed.step == 4
    assert [step for step, _, _ in logged] == [3, 4]  # ...but continues at the saved step
    # Linear decay over the new total of 4 updates, positioned after the 2 done: 1e-3 * (1 - 2/4).
    # A restarted schedule would log the full 1e-3 here.
    assert logged[0][2]["lr"] == pytest.approx(1e-3 * 2 / 4)
    assert logged[1][2]["lr"] == pytest.approx(1e-3 * 1 / 4)
    assert logged[0][2]["episode"] == 3 * 8
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-3", "checkpoint-4"]

    # Nothing left to do: a further call returns the saved metrics without training.
    again = make_loop(small_hyperparameters(4))
    assert again.train(checkpoint_dir=checkpoints)["episode"] == 4 * 8
    assert again.step == 4


class Preempted(Exception):
    pass


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    """Weights, optimizer moments, RNG streams and prompt order all come back: a run killed
    after its step-2 checkpoint and resumed ends bit-for-bit where an uninterrupted run ends."""
    hyperparameters = small_hyperparameters(4, lr_scheduler="linear", warmup_ratio=0.25)

    straight = make_loop(hyperparameters)
    straight.train()

    def preempt_at_step_2(step: int, total: int, metrics: dict[str, float]) -> None:
        if step == 2:
            raise Preempted

    checkpoints = tmp_path / "checkpoints"
    interrupted = make_loop(hyperparameters, on_log=preempt_at_step_2)
    with pytest.raises(Preempted):
        interrupted.train(checkpoint_dir=checkpoints, checkpoint_interval=2)
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-2"
    (checkpoints / "tmp-checkpoint-3").mkdir()  # a save cut short must never be resumed from
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-2"

    torch.manual_seed(12345)  # a restarted process would not share the killed one's RNG state
    resumed = make_loop(hyperparameters)
    resumed.train(checkpoint_dir=checkpoints, checkpoint_interval=2)
    assert resumed.step == 4
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    for name, parameter in straight._policy.named_parameters():
        torch.testing.assert_close(
            dict(resumed._policy.named_parameters())[name], parameter, rtol=0, atol=1e-6
        )
    for name, parameter in straight._value_model.named_parameters():
        torch.testing.assert_close(
            dict(resumed._value_model.named_parameters())[name], parameter, rtol=0, atol=1e-6
        )


def test_gradient_checkpointing_changes_memory_not_results() -> None:
    plain = make_loop(small_hyperparameters(1))
    checkpointed = make_loop(small_hyperparameters(1), gradient_checkpointing=True)
    assert checkpointed._policy.is_gradient_checkpointing
    assert checkpointed._value_model.is_gradient_checkpointing
    assert not plain._policy.is_gradient_checkpointing
    plain_metrics, checkpointed_metrics = plain.train(), checkpointed.train()
    for name in ("objective/scores", "loss/policy_avg", "loss/value_avg"):
        assert checkpointed_metrics[name] == pytest.approx(plain_metrics[name], abs=1e-5)
    torch.testing.assert_close(
        checkpointed._policy.lm_head.weight, plain._policy.lm_head.weight, rtol=0, atol=1e-5
    )
