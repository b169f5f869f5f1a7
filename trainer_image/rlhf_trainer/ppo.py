"""PPO stage: the policy (an SFT model) against the reward model, kept near a frozen
reference copy by a KL penalty; the algorithm is ppo_core.PPOLoop, with PPO's value model
(advantageEstimator gae) or without one (grpo, rloo, reinforce++: none is loaded).

The reward model may have its own tokenizer: responses are decoded to text and re-encoded
in the form the reward model was trained on (``scoring.py``). The value model is trained on
the policy's tokens, so it must share the policy's tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import scoring
from .data import load_splits, prompt_texts
from .errors import ConfigError, DataError, load_failure
from .lifecycle import Context, Interrupted, StageResult, publish_model, seed_everything
from .models import load_causal_lm, load_classifier, load_tokenizer, resolve
from .telemetry import HISTORY_FILE
from .trackers import TrackerLog

# End-of-turn tokens of the chat templates of common families (Llama-3, Qwen/ChatML, Gemma,
# Phi-3): a chat model ends its answer with one of these, not necessarily with its EOS.
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>")


def train(context: Context) -> StageResult:
    from .ppo_core import CHECKPOINT_PREFIX, PPOLoop, latest_checkpoint

    spec = context.spec
    config = context.config
    dtype, master = context.torch_dtype(), context.master_dtype()
    tokenizer = load_tokenizer(spec.policy, "policy", config)
    train_prompts, eval_prompts = _prompts(context, tokenizer)  # data errors before loading
    reward_tokenizer = load_tokenizer(spec.reward_model, "rewardModel", config)
    hyperparameters = hyperparameters_for(spec)
    uses_value_model = hyperparameters.uses_value_model
    value_source, value_slot = (
        (spec.value_model, "valueModel") if spec.value_model else (spec.reward_model, "rewardModel")
    )
    if uses_value_model:
        check_same_vocabulary(  # tokenizers are cheap: refuse before loading any model
            tokenizer,
            reward_tokenizer
            if value_slot == "rewardModel"
            else load_tokenizer(value_source, value_slot, config),
            value_slot,
        )
    reward_model = load_reward_model(context, dtype, reward_tokenizer.pad_token_id)
    reward_format = scoring.read_format(
        _local_folder(spec.reward_model, "rewardModel", context),
        reward_tokenizer,
        spec.training.max_length,
    )
    policy = load_causal_lm(spec.policy, "policy", config, master)
    reference = load_causal_lm(spec.policy, "policy", config, dtype)
    # grpo, rloo and reinforce++ have no critic: no value model is loaded (less memory).
    value_model = (
        load_classifier(value_source, value_slot, config, master, None, tokenizer.pad_token_id)
        if uses_value_model
        else None
    )

    tracked = (
        TrackerLog(
            list(spec.trackers),
            context.output_dir,
            config.job.metadata.name,
            config.job.spec.to_manifest(),
        )
        if spec.trackers and context.is_main
        else None
    )

    def on_log(step: int, total: int, metrics: dict[str, float]) -> None:
        if tracked is not None:
            tracked.log(metrics, step)
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
        [ids for ids, _ in train_prompts],
        hyperparameters,
        accelerator=accelerator,
        on_log=on_log,
        logging_steps=spec.training.logging_steps,
        reward_tokenizer=reward_tokenizer,
        reward_format=reward_format,
        reward_prompts=[prompt for _, prompt in train_prompts],
        stop_token_ids=stop_token_ids(tokenizer, policy.generation_config, spec.ppo.stop_tokens),
        gradient_checkpointing=spec.training.gradient_checkpointing,
    )
    context.telemetry.set_total(loop.total_updates)
    # The step train() resumes from: the counters count only this process's updates.
    resumed = latest_checkpoint(context.checkpoint_dir)
    start_step = int(resumed.name.removeprefix(CHECKPOINT_PREFIX)) if resumed else 0
    if context.is_main:  # the curves of a resumed run keep their start
        context.telemetry.keep_history(
            context.output_dir / HISTORY_FILE, start_step if resumed else None
        )
    context.telemetry.start_counting(start_step, episodes_seen=start_step * loop.global_batch_size)
    context.telemetry.record_step(start_step)
    context.telemetry.set_state("training")
    run_policy = spec.run_policy
    last = loop.train(
        checkpoint_dir=context.checkpoint_dir,
        checkpoint_interval=run_policy.checkpoint_interval,
        checkpoints_to_keep=run_policy.checkpoints_to_keep,
        checkpoint_minutes=run_policy.checkpoint_interval_minutes,
        should_stop=lambda: context.stop.requested,
    )
    if loop.stopped:
        raise Interrupted()

    context.telemetry.set_state("evaluating")
    evaluation = (
        loop.evaluate(
            [ids for ids, _ in eval_prompts], reward_prompts=[prompt for _, prompt in eval_prompts]
        )
        if eval_prompts
        else {}
    )
    samples = evaluation.pop("samples", [])
    metrics = {name: float(value) for name, value in last.items()}
    metrics.update({name: float(value) for name, value in evaluation.items()})
    context.telemetry.record_metrics(evaluation)
    if tracked is not None:
        tracked.log(
            {k: float(v) for k, v in evaluation.items() if isinstance(v, int | float)}, loop.step
        )
        tracked.close()

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


def hyperparameters_for(spec: Any) -> Any:
    """The loop's settings from a PPOJob spec. ``training.batchSize`` is the micro-batch (one
    forward/backward, and one chunk of the scoring passes); each mini-batch accumulates
    mini-batch / micro-batch of them."""
    from .ppo_core import PPOHyperparameters

    settings = spec.ppo
    mini_batch = settings.rollout_batch_size // settings.mini_batches
    micro_batch = min(spec.training.batch_size, mini_batch)
    return PPOHyperparameters(
        total_episodes=settings.total_episodes,
        rollout_batch_size=settings.rollout_batch_size,
        mini_batches=settings.mini_batches,
        gradient_accumulation_steps=mini_batch // micro_batch,
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
        advantage_estimator=settings.advantage_estimator,
        samples_per_prompt=settings.samples_per_prompt,
        kl_penalty=settings.kl_penalty,
        scale_rewards=settings.scale_rewards,
        normalize_advantages=settings.normalize_advantages,
    )


def _save(loop: Any, folder: Any, samples: list[dict[str, Any]]) -> None:
    loop.save_policy(folder)
    (folder / "samples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in samples))


def _local_folder(source: Any, slot: Any, context: Context) -> str | None:
    """The folder a model is read from, when it is one (a claim, a job's output, the preset)."""
    where = resolve(source, slot, context.config)["pretrained_model_name_or_path"]
    return where if Path(where).is_dir() else None


def load_reward_model(context: Context, dtype: Any, pad_token_id: int) -> Any:
    """The reward model, refused when its checkpoint has no trained score head (a causal LM
    or a bare encoder given as rewardModel would score with random weights)."""
    from transformers import AutoModelForSequenceClassification

    source = context.spec.reward_model
    arguments = resolve(source, "rewardModel", context.config)
    seed_everything(context.spec.training.seed)  # the preset's head is made here: seeded
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            **arguments, dtype=dtype, num_labels=1, output_loading_info=True
        )
    except OSError as error:
        where = arguments["pretrained_model_name_or_path"]
        raise load_failure(error, where, "spec.rewardModel") from error
    head = untrained_head_weights(model, info.get("missing_keys", []))
    if head and source.preset is not None:
        # Documented as a randomly initialised reward model for smoke tests of a cluster.
        print("rlhf-trainer: notice: rewardModel preset tiny scores with a random head", flush=True)
    elif head:
        raise ConfigError(
            f"{arguments['pretrained_model_name_or_path']} has no trained score head (missing"
            f" {', '.join(sorted(head)[:3])}); give a reward model (a RewardModelJob's output"
            " or a sequence-classification checkpoint with one score)",
            field="spec.rewardModel",
        )
    model.config.pad_token_id = pad_token_id
    return model


def untrained_head_weights(model: Any, missing_keys: Any) -> list[str]:
    """Weights the checkpoint lacks outside the model's backbone: a freshly made head."""
    prefix = str(getattr(model, "base_model_prefix", "")) + "."
    return [key for key in missing_keys if not key.startswith(prefix)]


def check_same_vocabulary(policy_tokenizer: Any, value_tokenizer: Any, value_slot: str) -> None:
    """The value model reads the policy's token ids, so it needs the policy's vocabulary."""
    if value_tokenizer.get_vocab() == policy_tokenizer.get_vocab():
        return
    hint = (
        "the value model starts from the reward model unless spec.valueModel is set; set it to"
        " a model with the policy's tokenizer (the policy itself works)"
        if value_slot == "rewardModel"
        else "use a value model with the policy's tokenizer (the policy itself works)"
    )
    raise ConfigError(
        f"the value model's tokenizer differs from the policy's; {hint}",
        field=f"spec.{'valueModel' if value_slot == 'valueModel' else 'rewardModel'}",
    )


def stop_token_ids(tokenizer: Any, generation_config: Any, names: list[str] | None) -> list[int]:
    """Token ids that end a response.

    ``names`` (spec.ppo.stopTokens) replaces the default, which is every EOS id of the
    model's generation config, the tokenizer's EOS, and the chat template's end-of-turn token
    (Qwen's ``<|im_end|>`` is not its EOS).
    """
    vocabulary = tokenizer.get_vocab()
    if names:
        unknown = [name for name in names if name not in vocabulary]
        if unknown:
            raise ConfigError(
                f"{unknown[0]!r} is not a token of the policy's tokenizer; give single tokens"
                " such as its EOS or end-of-turn token",
                field="spec.ppo.stopTokens",
            )
        return [int(vocabulary[name]) for name in dict.fromkeys(names)]
    configured = getattr(generation_config, "eos_token_id", None) if generation_config else None
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    template = getattr(tokenizer, "chat_template", None) or ""
    ids.extend(
        vocabulary[name] for name in END_OF_TURN_TOKENS if name in template and name in vocabulary
    )
    return [int(token_id) for token_id in dict.fromkeys(ids)]


def encode_prompt(tokenizer: Any, prompt: scoring.Turns, limit: int) -> list[int]:
    """A prompt's token ids as the policy expects them: messages through the chat template
    with the generation prompt (the template writes BOS itself), text with the tokenizer's
    own special tokens (BOS for Llama, Mistral, Gemma; an EOS a tokenizer appends is
    dropped: the prompt is not finished). Long prompts lose tokens from the left, so the
    end (the assistant header) stays."""
    if isinstance(prompt, list):
        ids = list(
            tokenizer.apply_chat_template(
                prompt, tokenize=True, add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )
    else:
        ids = list(tokenizer(prompt)["input_ids"])
        eos = tokenizer.eos_token
        if ids and ids[-1] == tokenizer.eos_token_id and not (eos and prompt.endswith(eos)):
            ids = ids[:-1]
    return scoring.truncate_left(ids, limit, tokenizer)


Prompt = tuple[list[int], scoring.Turns]


def _prompts(context: Context, tokenizer: Any) -> tuple[list[Prompt], list[Prompt]]:
    """(token ids, prompt as the data gave it) of training prompts and of held-out
    evaluation prompts.

    Evaluation prompts come from the dataset's evaluation split or fraction; without one,
    ppo.evalPrompts prompts are held out of the training set.
    """
    spec = context.spec
    splits = load_splits(spec.dataset, "ppo", context.config, spec.training.seed)
    prompts = prompt_texts(splits.train, splits.format, splits.origin)
    held_out = (
        prompt_texts(splits.eval, splits.format, splits.origin) if splits.eval is not None else []
    )
    wanted = spec.ppo.eval_prompts
    if not held_out and wanted and len(prompts) > wanted:
        held_out, prompts = prompts[-wanted:], prompts[:-wanted]
    if any(isinstance(prompt, list) for prompt in prompts) and not tokenizer.chat_template:
        raise ConfigError(
            "the prompts are chat messages but the policy's tokenizer has no chat template;"
            " use a chat model (or give prompts as text)",
            where=splits.origin,
            field="spec.policy",
        )
    limit = spec.training.max_length

    def encode(batch: list[scoring.Turns]) -> list[Prompt]:
        encoded = [(encode_prompt(tokenizer, prompt, limit), prompt) for prompt in batch]
        return [(ids, prompt) for ids, prompt in encoded if ids]

    train = encode(prompts)
    if not train:
        raise DataError("no usable prompts (all empty after tokenization)", where=splits.origin)
    return train, encode(held_out[:wanted] if wanted else [])
