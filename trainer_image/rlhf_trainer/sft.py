"""SFT: causal-LM fine-tuning with TRL's SFTTrainer, or sequence classification with
transformers' Trainer (cross-entropy, early stopping, full classification report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import hf
from .data import Splits, label_ids, load_splits
from .evaluation import classification_metrics, perplexity
from .generation import generate
from .lifecycle import Context, StageResult, publish_pretrained
from .models import load_causal_lm, load_classifier, load_tokenizer

HIGHER_IS_BETTER = ("accuracy", "f1", "precision", "recall")


def train(context: Context) -> StageResult:
    spec = context.spec
    tokenizer = load_tokenizer(spec.model, "model", context.config)
    splits = load_splits(spec.dataset, "sft", context.config, spec.training.seed)
    if spec.task == "sequence-classification":
        return _train_classifier(context, tokenizer, splits)
    return _train_causal_lm(context, tokenizer, splits)


# --- causal LM -----------------------------------------------------------------------


def _train_causal_lm(context: Context, tokenizer: Any, splits: Splits) -> StageResult:
    from trl import SFTConfig, SFTTrainer

    spec = context.spec
    model = load_causal_lm(spec.model, "model", context.config, context.master_dtype())
    has_eval = splits.eval is not None
    template = tokenizer.chat_template or ""
    arguments = SFTConfig(
        **hf.training_arguments(
            context,
            spec.training,
            has_eval=has_eval,
            early_stopping=spec.early_stopping,
            greater_is_better=_greater_is_better(spec.early_stopping),
        ),
        max_length=spec.training.max_length,
        packing=spec.packing,
        completion_only_loss=spec.completion_only_loss,
        assistant_only_loss=spec.completion_only_loss
        and splits.format == "messages"
        and "generation" in template,
        eos_token=tokenizer.eos_token,
    )
    trainer = SFTTrainer(
        model=model,
        args=arguments,
        train_dataset=splits.train,
        eval_dataset=splits.eval,
        processing_class=tokenizer,
        peft_config=hf.lora_config(spec.lora, "CAUSAL_LM") if spec.lora else None,
        callbacks=hf.callbacks(
            context, spec.early_stopping, hf.samples_per_step(context, spec.training)
        ),
    )
    train_output = hf.train_resumably(context, trainer)
    metrics: dict[str, float] = {"train_loss": float(train_output.training_loss)}
    if has_eval:
        context.telemetry.set_state("evaluating")
        evaluation = trainer.evaluate()
        metrics["eval_loss"] = float(evaluation["eval_loss"])
        metrics["eval_perplexity"] = perplexity(metrics["eval_loss"])
        if "eval_mean_token_accuracy" in evaluation:
            metrics["eval_mean_token_accuracy"] = float(evaluation["eval_mean_token_accuracy"])
        context.telemetry.record_metrics(metrics)
    model = hf.trained_model(context, trainer, merge_lora=spec.lora.merge if spec.lora else True)
    if model is None:  # not the main process: it took part in gathering the model
        return StageResult(metrics, "")
    samples = _samples(context, model, tokenizer, splits)
    candidates = _candidates(context, model, tokenizer, splits)

    publish_pretrained(context, model, tokenizer, {"samples.jsonl": samples})
    if candidates:
        _write_jsonl(context.output_dir / "candidates.jsonl", candidates)
    key = (
        f"eval_loss={metrics['eval_loss']:.4g}"
        if has_eval
        else f"train_loss={metrics['train_loss']:.4g}"
    )
    return StageResult(metrics, key, {"samples": samples})


def _prompts(splits: Splits, tokenizer: Any, limit: int) -> list[str]:
    """Prompts from the evaluation data (or training data), the way the model sees them."""
    source = splits.eval if splits.eval is not None else splits.train
    rows = source.select(range(min(limit, len(source))))
    if splits.format == "prompt-completion":
        return [
            prompt if isinstance(prompt, str) else _chat(tokenizer, prompt)
            for prompt in rows["prompt"]
        ]
    if splits.format == "messages":
        prompts = []
        for messages in rows["messages"]:
            turns = (
                messages[: max(1, len(messages) - 1)]
                if messages[-1]["role"] == "assistant"
                else messages
            )
            prompts.append(_chat(tokenizer, turns))
        return prompts
    return [text[: max(1, len(text) // 3)] for text in rows["text"]]


def _chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def _samples(context: Context, model: Any, tokenizer: Any, splits: Splits) -> list[dict[str, Any]]:
    settings = context.spec.generation
    if settings.samples == 0:
        return []
    prompts = _prompts(splits, tokenizer, settings.samples)
    completions = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=context.spec.training.seed,
    )
    return [{"prompt": p, "completion": c[0]} for p, c in zip(prompts, completions, strict=True)]


def _candidates(
    context: Context, model: Any, tokenizer: Any, splits: Splits
) -> list[dict[str, Any]]:
    """Responses for people to rank: rows of the ranking format RewardModelJob reads
    ({"prompt", "responses"}), to be reordered best first by the labelers."""
    settings = context.spec.generation
    if settings.candidates is None:
        return []
    context.telemetry.set_state("generating candidates")
    prompts = _prompts(splits, tokenizer, settings.candidates.max_prompts)
    responses = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=settings.max_new_tokens,
        temperature=max(settings.temperature, 0.7),
        top_p=settings.top_p,
        per_prompt=settings.candidates.per_prompt,
        seed=context.spec.training.seed + 1,
    )
    return [{"prompt": p, "responses": r} for p, r in zip(prompts, responses, strict=True)]


# --- sequence classification ---------------------------------------------------------


def _train_classifier(context: Context, tokenizer: Any, splits: Splits) -> StageResult:
    import numpy as np
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    spec = context.spec
    labels = list(spec.labels)
    model = load_classifier(
        spec.model, "model", context.config, context.master_dtype(), labels, tokenizer.pad_token_id
    )
    if spec.lora:
        from peft import get_peft_model

        model = get_peft_model(model, hf.lora_config(spec.lora, "SEQ_CLS"))

    def tokenize(dataset: Any) -> Any:
        dataset = label_ids(dataset, labels, splits.origin)
        return dataset.map(
            lambda rows: tokenizer(
                rows["text"], truncation=True, max_length=spec.training.max_length
            ),
            batched=True,
        )

    train_set = tokenize(splits.train)
    eval_set = tokenize(splits.eval) if splits.eval is not None else None

    def compute_metrics(prediction: Any) -> dict[str, float]:
        figures = classification_metrics(
            prediction.label_ids, np.argmax(prediction.predictions, axis=-1), labels
        )
        return {name: value for name, value in figures.items() if isinstance(value, float)}

    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            **hf.training_arguments(
                context,
                spec.training,
                has_eval=eval_set is not None,
                early_stopping=spec.early_stopping,
                greater_is_better=_greater_is_better(spec.early_stopping),
            )
        ),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=hf.callbacks(
            context, spec.early_stopping, hf.samples_per_step(context, spec.training)
        ),
    )
    train_output = hf.train_resumably(context, trainer)
    metrics: dict[str, float] = {
        "train_loss": float(train_output.training_loss),
        "steps": float(trainer.state.global_step),
    }
    details: dict[str, Any] = {}
    if eval_set is not None:
        context.telemetry.set_state("evaluating")
        prediction = trainer.predict(eval_set)
        predicted = np.argmax(prediction.predictions, axis=-1)
        report = classification_metrics(prediction.label_ids, predicted, labels)
        metrics.update(
            {f"eval_{name}": value for name, value in report.items() if isinstance(value, float)}
        )
        metrics["eval_loss"] = float(prediction.metrics["test_loss"])
        context.telemetry.record_metrics(metrics)
        details["classification"] = report
        if context.is_main:
            probabilities = _softmax(prediction.predictions)
            _write_jsonl(
                context.output_dir / "predictions.jsonl",
                [
                    {
                        "text": text,
                        "label": labels[int(truth)],
                        "prediction": labels[int(guess)],
                        "probabilities": [round(float(p), 6) for p in row],
                    }
                    for text, truth, guess, row in zip(
                        splits.eval["text"],
                        prediction.label_ids,
                        predicted,
                        probabilities,
                        strict=True,
                    )
                ],
            )
            (context.output_dir / "eval.json").write_text(json.dumps(report, indent=2))
    model = hf.trained_model(context, trainer, merge_lora=spec.lora.merge if spec.lora else True)
    if model is None:  # not the main process: it took part in gathering the model
        return StageResult(metrics, "")
    publish_pretrained(context, model, tokenizer)
    key = (
        f"eval_accuracy={metrics['eval_accuracy']:.3f}"
        if "eval_accuracy" in metrics
        else f"train_loss={metrics['train_loss']:.4g}"
    )
    return StageResult(metrics, key, details)


def _greater_is_better(early_stopping: Any | None) -> bool | None:
    if early_stopping is None:
        return None
    return any(word in early_stopping.metric for word in HIGHER_IS_BETTER)


def _softmax(logits: Any) -> Any:
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponent = np.exp(shifted)
    return exponent / exponent.sum(axis=-1, keepdims=True)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
