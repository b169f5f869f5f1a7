"""PPO stage: the policy (an SFT model) against the reward model, kept near a frozen
reference copy by a KL penalty; the algorithm is ppo_core.PPOLoop."""

from __future__ import annotations

import json
from typing import Any

from .data import load_splits, prompt_texts
from .errors import DataError
from .lifecycle import Context, Interrupted, StageResult, publish_model
from .models import load_causal_lm, load_classifier, load_tokenizer


def train(context: Context) -> StageResult:
    from .ppo_core import CHECKPOINT_PREFIX, PPOHyperparameters, PPOLoop, latest_checkpoint

    spec = context.spec
    config = context.config
    dtype, master = context.torch_dtype(), context.master_dtype()
    tokenizer = load_tokenizer(spec.policy, "policy", config)
    policy = load_causal_lm(spec.policy, "policy", config, master)
    reference = load_causal_lm(spec.policy, "policy", config, dtype)
    reward_model = load_classifier(
        spec.reward_model, "rewardModel", config, dtype, None, tokenizer.pad_token_id
    )
    value_source, value_slot = (
        (spec.value_model, "valueModel") if spec.value_model else (spec.reward_model, "rewardModel")
    )
    value_model = load_classifier(
        value_source, value_slot, config, master, None, tokenizer.pad_token_id
    )
    train_prompts, eval_prompts = _prompts(context, tokenizer)

    settings = spec.ppo
    hyperparameters = PPOHyperparameters(
        total_episodes=settings.total_episodes,
        rollout_batch_size=settings.rollout_batch_size,
        mini_batches=settings.mini_batches,
        gradient_accumulation_steps=spec.training.gradient_accumulation_steps,
        epochs=settings.epochs,
        learning_rate=spec.training.learning_rate,
        lr_scheduler=spec.training.lr_scheduler,
        warmup_ratio=spec.training.warmup_ratio,
        weight_decay=spec.training.weight_decay,
        max_grad_norm=spec.training.max_grad_norm,
        kl_coef=settings.kl_coef,
        kl_estimator=settings.kl_estimator,
        clip_range=settings.clip_range,
        clip_range_value=settings.clip_range_value,
        value_coef=settings.value_coef,
        gamma=settings.gamma,
        lam=settings.lambda_,
        response_length=settings.response_length,
        temperature=settings.temperature,
        missing_eos_penalty=settings.missing_eos_penalty,
        whiten_rewards=settings.whiten_rewards,
        seed=spec.training.seed,
    )

    def on_log(step: int, total: int, metrics: dict[str, float]) -> None:
        context.telemetry.record_step(step)
        context.telemetry.record_episodes(metrics["episode"])
        context.telemetry.record_metrics(
            {**metrics, "samples_per_second": metrics.get("eps", 0.0)}, step
        )

    import accelerate

    # bf16 autocast over fp32 weights on GPUs; plain fp32 on CPU.
    accelerator = accelerate.Accelerator(
        cpu=context.device == "cpu",
        mixed_precision="bf16" if context.precision == "bf16" else "no",
    )
    loop = PPOLoop(
        policy,
        reference,
        value_model,
        reward_model,
        tokenizer,
        train_prompts,
        hyperparameters,
        accelerator=accelerator,
        on_log=on_log,
        logging_steps=spec.training.logging_steps,
    )
    context.telemetry.set_total(loop.total_updates)
    # The step train() resumes from: the counters count only this process's updates.
    resumed = latest_checkpoint(context.checkpoint_dir)
    start_step = int(resumed.name.removeprefix(CHECKPOINT_PREFIX)) if resumed else 0
    context.telemetry.start_counting(start_step, episodes_seen=start_step * loop.global_batch_size)
    context.telemetry.record_step(start_step)
    context.telemetry.set_state("training")
    run_policy = spec.run_policy
    last = loop.train(
        checkpoint_dir=context.checkpoint_dir,
        checkpoint_interval=run_policy.checkpoint_interval,
        checkpoints_to_keep=run_policy.checkpoints_to_keep,
        should_stop=lambda: context.stop.requested,
    )
    if loop.stopped:
        raise Interrupted()

    context.telemetry.set_state("evaluating")
    evaluation = loop.evaluate(eval_prompts) if eval_prompts else {}
    samples = evaluation.pop("samples", [])
    metrics = {name: float(value) for name, value in last.items()}
    metrics.update({name: float(value) for name, value in evaluation.items()})
    context.telemetry.record_metrics(evaluation)

    context.telemetry.set_state("saving")
    if context.is_main:
        publish_model(context.output_dir, lambda folder: _save(loop, folder, samples))
    else:
        loop.save_policy(context.output_dir / ".unused")  # joins the main process's barrier
    key = (
        f"eval/reward_policy={metrics['eval/reward_policy']:.3g}"
        if "eval/reward_policy" in metrics
        else f"objective/scores={metrics.get('objective/scores', float('nan')):.3g}"
    )
    return StageResult(metrics, key, {"samples": samples[:16]})


def _save(loop: Any, folder: Any, samples: list[dict[str, Any]]) -> None:
    loop.save_policy(folder)
    (folder / "samples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in samples))


def _prompts(context: Context, tokenizer: Any) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of training prompts and of held-out evaluation prompts.

    Evaluation prompts come from the dataset's evaluation split or fraction; without one,
    ppo.evalPrompts prompts are held out of the training set.
    """
    spec = context.spec
    splits = load_splits(spec.dataset, "ppo", context.config, spec.training.seed)
    texts = prompt_texts(splits.train, splits.format, tokenizer)
    held_out = (
        prompt_texts(splits.eval, splits.format, tokenizer) if splits.eval is not None else []
    )
    wanted = spec.ppo.eval_prompts
    if not held_out and wanted and len(texts) > wanted:
        held_out, texts = texts[-wanted:], texts[:-wanted]
    limit = spec.training.max_length

    def encode(batch: list[str]) -> list[list[int]]:
        ids = tokenizer(batch, add_special_tokens=False, truncation=True, max_length=limit)[
            "input_ids"
        ]
        return [row for row in ids if row]

    train_ids = encode(texts)
    if not train_ids:
        raise DataError("no usable prompts (all empty after tokenization)", where=splits.origin)
    return train_ids, encode(held_out[:wanted] if wanted else [])
