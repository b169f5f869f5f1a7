"""End-of-training evaluation of the RL loop's policy against its frozen reference."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object

from . import scoring
from .estimators import kl_estimate
from .ppo_update import PROCESS_SEED_STRIDE
from .rollout import Generation


@torch.no_grad()
def evaluate(
    loop: Any,
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
    max_new_tokens = max_new_tokens or loop.hyperparameters.response_length
    if reward_prompts is None:
        reward_prompts = [loop._decode_prompt(prompt) for prompt in prompts]
    share = math.ceil(len(prompts) / loop.accelerator.num_processes)
    mine = slice(
        loop.accelerator.process_index * share, (loop.accelerator.process_index + 1) * share
    )
    my_prompts, my_reward_prompts = prompts[mine], reward_prompts[mine]
    rows: list[dict[str, Any]] = []
    batch = loop.hyperparameters.rollout_batch_size
    for start in range(0, len(my_prompts), batch):
        rows.extend(
            _evaluate_batch(
                loop,
                my_prompts[start : start + batch],
                max_new_tokens,
                start,
                my_reward_prompts[start : start + batch],
            )
        )
    rows = gather_object(rows) if loop.accelerator.num_processes > 1 else rows

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
    loop: Any,
    prompts: list[list[int]],
    max_new_tokens: int,
    offset: int,
    reward_prompts: list[scoring.Turns],
) -> list[dict[str, Any]]:
    prompt_ids, prompt_mask = loop._left_padded(prompts)
    seed = loop.hyperparameters.seed + PROCESS_SEED_STRIDE * loop.accelerator.process_index + offset
    devices = [loop.accelerator.device] if loop.accelerator.device.type == "cuda" else []
    generations: dict[str, Generation] = {}
    with torch.random.fork_rng(devices=devices):
        for name, model in (("policy", loop._policy), ("reference", loop.reference_policy)):
            torch.manual_seed(seed)
            responses, mask = loop.sampler.sample(model, prompt_ids, prompt_mask, max_new_tokens)
            generations[name] = Generation([], prompt_ids, prompt_mask, responses, mask)
    policy_scores = loop.score(generations["policy"], reward_prompts)
    reference_scores = loop.score(generations["reference"], reward_prompts)
    logprobs, _ = loop.policy_logprobs(generations["policy"], with_values=False)
    reference_logprobs = loop.reference_logprobs(generations["policy"])
    policy_mask = generations["policy"].response_mask.to(logprobs.dtype)
    kl = (
        kl_estimate(logprobs, reference_logprobs, loop.hyperparameters.kl_estimator) * policy_mask
    ).sum(1)
    return [
        {
            "prompt": loop.tokenizer.decode(prompt, skip_special_tokens=True),
            "policy": _decode_response(loop, generations["policy"], i),
            "reference": _decode_response(loop, generations["reference"], i),
            "policy_score": policy_scores[i].item(),
            "reference_score": reference_scores[i].item(),
            "kl": kl[i].item(),
        }
        for i, prompt in enumerate(prompts)
    ]


def _decode_response(loop: Any, generation: Generation, row: int) -> str:
    tokens = generation.responses[row][generation.response_mask[row]]
    return loop.tokenizer.decode(tokens.tolist(), skip_special_tokens=True)
