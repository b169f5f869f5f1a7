"""DPO: the policy learns from preference pairs with TRL's DPOTrainer, kept near a frozen
reference copy of itself (or reference-free).

The pairs come through the same loading and checks as a reward model's (``data.py``):
preferences or rankings expanded to pairs, text or conversations, with or without an
explicit prompt (TRL takes the turns both answers share as the prompt). Held-out pairs
give the implicit reward's accuracy and margins (TRL's ``rewards/*`` figures, beta times
the policy's log-ratio to the reference); with spec.rewardModel set, the trained policy
and the reference answer held-out prompts and the reward model judges them (win rate).
"""

from __future__ import annotations

import json
from typing import Any

from . import hf, scoring
from .chat import is_conversation, render_prompt, require_chat_template
from .data import load_splits, preference_pairs
from .evaluation import win_rate_figures
from .generation import generate
from .held_out import NOT_TEST_FIGURES, evaluate_held_out
from .lifecycle import Context, StageResult, publish_pretrained
from .models import load_causal_lm, load_tokenizer

KEY_FIGURES = ("test_rewards/accuracies", "eval_rewards/accuracies", "train_loss")


def train(context: Context) -> StageResult:
    from trl import DPOConfig

    spec = context.spec
    config = context.config
    tokenizer = load_tokenizer(spec.policy, "policy", config)
    pairs = load_pairs(context)
    if is_conversation(pairs["train"][0]["chosen"]):
        require_chat_template(tokenizer, "spec.policy")
    judge_tokenizer = (  # refused before any model is loaded when it cannot be read
        load_tokenizer(spec.reward_model, "rewardModel", config) if spec.reward_model else None
    )
    policy = load_causal_lm(spec.policy, "policy", config, context.master_dtype())
    # With LoRA the reference is the base model with the adapters off; reference-free has
    # none: neither needs a second copy.
    reference = (
        load_causal_lm(spec.policy, "policy", config, context.torch_dtype())
        if not spec.dpo.reference_free and spec.lora is None
        else None
    )
    arguments = DPOConfig(
        **hf.training_arguments(
            context,
            spec.training,
            has_eval="eval" in pairs,
            early_stopping=spec.early_stopping,
            greater_is_better=spec.early_stopping is not None
            and "loss" not in spec.early_stopping.metric,
        ),
        max_length=spec.training.max_length,
        loss_type=[spec.dpo.loss_type],
        beta=spec.dpo.beta,
        label_smoothing=spec.dpo.label_smoothing,
        precompute_ref_log_probs=spec.dpo.reference_free,
    )
    trainer_class = reference_free_trainer() if spec.dpo.reference_free else _dpo_trainer()
    trainer = trainer_class(
        model=policy,
        ref_model=reference,
        args=arguments,
        train_dataset=pairs["train"],
        eval_dataset=pairs.get("eval"),
        processing_class=tokenizer,
        peft_config=hf.lora_config(spec.lora, "CAUSAL_LM") if spec.lora else None,
        callbacks=hf.callbacks(
            context, spec.early_stopping, hf.samples_per_step(context, spec.training)
        ),
    )
    train_output = hf.train_resumably(context, trainer)
    metrics: dict[str, float] = {"train_loss": float(train_output.training_loss)}
    if "eval" in pairs:
        context.telemetry.set_state("evaluating")
        metrics.update(evaluation_figures(trainer.evaluate()))
        context.telemetry.record_metrics(metrics)
    if "test" in pairs:
        context.telemetry.set_state("testing")
        metrics.update(evaluate_held_out(trainer, pairs["test"]))
        context.telemetry.record_metrics(metrics)
    del reference
    model = hf.trained_model(context, trainer, merge_lora=spec.lora.merge if spec.lora else True)
    if model is None:  # not the main process: it took part in gathering the model
        return StageResult(metrics, "")
    samples: list[dict[str, Any]] = []
    if judge_tokenizer is not None and spec.dpo.eval_prompts:
        context.telemetry.set_state("judging")
        prompts = judged_prompts(pairs, spec.dpo.eval_prompts)
        figures, samples = judged_comparison(context, model, tokenizer, judge_tokenizer, prompts)
        metrics.update(figures)
        context.telemetry.record_metrics(figures)
    publish_pretrained(context, model, tokenizer, {"samples.jsonl": samples})
    return StageResult(metrics, key_metric(metrics), {"samples": samples[:16]})


def load_pairs(context: Context) -> dict[str, Any]:
    """Training pairs, and evaluation and test pairs when the dataset holds some out."""
    spec = context.spec
    splits = load_splits(spec.dataset, "dpo", context.config, spec.training.seed)
    parts = {"train": splits.train, "eval": splits.eval, "test": splits.test}
    where = {"train": splits.origin, "eval": f"{splits.origin} (evaluation)"}
    where["test"] = f"{splits.origin} (test)"
    return {
        name: preference_pairs(part, splits.format, where[name])
        for name, part in parts.items()
        if part is not None
    }


def evaluation_figures(figures: dict[str, Any]) -> dict[str, float]:
    """The numeric eval_* figures of DPOTrainer.evaluate(), without timings and counts."""
    return {
        name: float(value)
        for name, value in figures.items()
        if name.startswith("eval_")
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not name.endswith(NOT_TEST_FIGURES)
    }


def key_metric(metrics: dict[str, float]) -> str:
    name = next(name for name in KEY_FIGURES if name in metrics)
    return f"{name}={metrics[name]:.3f}" if "accuracies" in name else f"{name}={metrics[name]:.4g}"


def _dpo_trainer() -> Any:
    from trl import DPOTrainer

    return DPOTrainer


def reference_free_trainer() -> Any:
    """DPOTrainer with the reference's log-probabilities fixed at 0.

    TRL 1.16 has no reference-free switch; its precompute_ref_log_probs path reads the
    reference's log-probabilities from dataset columns and keeps no reference model in
    memory. Filling those columns with zeros (instead of running a reference) makes the
    implicit reward beta * log pi(response): reference-free DPO. Held-out data given to
    evaluate() later gets the same zero columns (TRL refuses to precompute a reference
    once training has moved the policy).
    """
    from transformers import Trainer
    from trl import DPOTrainer

    class ReferenceFreeDPOTrainer(DPOTrainer):  # type: ignore[misc]
        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            zeros = [0.0] * len(dataset)
            return dataset.add_column("ref_chosen_logps", zeros).add_column(
                "ref_rejected_logps", zeros
            )

        def evaluate(
            self,
            eval_dataset: Any = None,
            ignore_keys: Any = None,
            metric_key_prefix: str = "eval",
        ) -> dict[str, float]:
            if eval_dataset is not None and not isinstance(eval_dataset, (str, dict)):
                prepared = self._prepare_dataset(
                    eval_dataset, self.processing_class, self.args, metric_key_prefix
                )
                eval_dataset = self._precompute_ref_logps(prepared, metric_key_prefix, 0)
            result: dict[str, float] = Trainer.evaluate(
                self,
                eval_dataset=eval_dataset,
                ignore_keys=ignore_keys,
                metric_key_prefix=metric_key_prefix,
            )
            return result

    return ReferenceFreeDPOTrainer


# --- the judged comparison -----------------------------------------------------------


def judged_prompts(pairs: dict[str, Any], limit: int) -> list[Any]:
    """Distinct prompts of held-out pairs (evaluation, else test, else the last training
    pairs), as the data gives them: text or messages. Pairs without a prompt column give
    the turns their two answers share (TRL's extract_prompt)."""
    from trl.data_utils import extract_prompt

    held_out = [pairs[name] for name in ("eval", "test") if name in pairs]
    rows = list(held_out[0]) if held_out else list(pairs["train"])[::-1]
    prompts: dict[str, Any] = {}
    for row in rows:
        prompt = row["prompt"] if "prompt" in row else extract_prompt(row)["prompt"]
        if not prompt:
            continue
        prompts.setdefault(json.dumps(prompt, sort_keys=True), prompt)
        if len(prompts) == limit:
            break
    return list(prompts.values())


def judged_comparison(
    context: Context, policy: Any, tokenizer: Any, judge_tokenizer: Any, prompts: list[Any]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The trained policy and the reference (the policy as it started) answer the same
    prompts from the same seed; the reward model scores both. Returns eval/reward_policy,
    eval/reward_reference, eval/win_rate (ties count half) and the answers scored."""
    from .ppo import _local_folder, load_reward_model

    spec = context.spec
    if not prompts:
        return {}, []
    conversational = is_conversation(prompts[0])
    texts = [render_prompt(tokenizer, p) if is_conversation(p) else str(p) for p in prompts]
    options: dict[str, Any] = {
        "max_new_tokens": spec.dpo.response_length,
        "temperature": spec.dpo.temperature,
        "seed": spec.training.seed,
        "batch_size": spec.training.batch_size,
        # A chat template writes its own BOS; plain text gets the tokenizer's, as in training.
        "add_special_tokens": not conversational,
    }
    device = next(policy.parameters()).device
    policy_answers = [answers[0] for answers in generate(policy, tokenizer, texts, **options)]
    reference = load_causal_lm(spec.policy, "policy", context.config, context.torch_dtype())
    reference_answers = [
        answers[0] for answers in generate(reference.to(device), tokenizer, texts, **options)
    ]
    del reference
    judge = load_reward_model(context, context.torch_dtype(), judge_tokenizer.pad_token_id)
    form = scoring.read_format(
        _local_folder(spec.reward_model, "rewardModel", context),
        judge_tokenizer,
        spec.training.max_length,
    )
    scorer = scoring.RewardScorer(
        judge.to(device), judge_tokenizer, form, batch_size=spec.training.batch_size
    )

    def as_answer(prompt: Any, text: str) -> Any:
        return [{"role": "assistant", "content": text}] if is_conversation(prompt) else text

    policy_scores = scorer.score(
        prompts, [as_answer(p, a) for p, a in zip(prompts, policy_answers, strict=True)]
    ).tolist()
    reference_scores = scorer.score(
        prompts, [as_answer(p, a) for p, a in zip(prompts, reference_answers, strict=True)]
    ).tolist()
    samples = [
        {
            "prompt": text,
            "policy": policy_answer,
            "reference": reference_answer,
            "policy_score": policy_score,
            "reference_score": reference_score,
        }
        for text, policy_answer, reference_answer, policy_score, reference_score in zip(
            texts, policy_answers, reference_answers, policy_scores, reference_scores, strict=True
        )
    ]
    return win_rate_figures(policy_scores, reference_scores), samples
