"""Reward model: pairwise Bradley-Terry loss with TRL's RewardTrainer on preferences and
rankings (expanded to pairs), or regression (MSE) on ratings."""

from __future__ import annotations

from typing import Any

from . import hf
from .data import Splits, load_splits, ranking_to_pairs, rating_texts
from .evaluation import pairwise_metrics, regression_metrics
from .lifecycle import Context, StageResult, publish_pretrained
from .models import load_classifier, load_tokenizer


def train(context: Context) -> StageResult:
    spec = context.spec
    tokenizer = load_tokenizer(spec.model, "model", context.config)
    splits = load_splits(spec.dataset, "rm", context.config, spec.training.seed)
    model = load_classifier(
        spec.model, "model", context.config, context.master_dtype(), None, tokenizer.pad_token_id
    )
    if splits.format == "rating":
        return _train_regression(context, tokenizer, model, splits)
    return _train_pairwise(context, tokenizer, model, splits)


def _pairs(dataset: Any, data_format: str, origin: str) -> Any:
    if data_format == "ranking":
        return ranking_to_pairs(dataset, origin)
    keep = [name for name in ("prompt", "chosen", "rejected") if name in dataset.column_names]
    return dataset.select_columns(keep)


def _train_pairwise(context: Context, tokenizer: Any, model: Any, splits: Splits) -> StageResult:
    from trl import RewardConfig, RewardTrainer

    spec = context.spec
    train_set = _pairs(splits.train, splits.format, splits.origin)
    eval_set = (
        _pairs(splits.eval, splits.format, splits.origin) if splits.eval is not None else None
    )
    arguments = RewardConfig(
        **hf.training_arguments(
            context,
            spec.training,
            has_eval=eval_set is not None,
            early_stopping=spec.early_stopping,
            greater_is_better=spec.early_stopping is not None
            and "loss" not in spec.early_stopping.metric,
        ),
        max_length=spec.training.max_length,
        center_rewards_coefficient=spec.center_rewards_coefficient,
    )
    trainer = RewardTrainer(
        model=model,
        args=arguments,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=hf.lora_config(spec.lora, "SEQ_CLS") if spec.lora else None,
        callbacks=hf.callbacks(
            context, spec.early_stopping, hf.samples_per_step(context, spec.training)
        ),
    )
    train_output = hf.train_resumably(context, trainer)
    metrics: dict[str, float] = {"train_loss": float(train_output.training_loss)}
    model = trainer.model  # every rank scores (a sharded model needs them all)
    details: dict[str, Any] = {}
    if eval_set is not None:
        context.telemetry.set_state("evaluating")
        prompts = eval_set["prompt"] if "prompt" in eval_set.column_names else [""] * len(eval_set)
        chosen = score_texts(
            model,
            tokenizer,
            [p + c for p, c in zip(prompts, eval_set["chosen"], strict=True)],
            spec.training.max_length,
        )
        rejected = score_texts(
            model,
            tokenizer,
            [p + r for p, r in zip(prompts, eval_set["rejected"], strict=True)],
            spec.training.max_length,
        )
        figures = pairwise_metrics(chosen, rejected)
        metrics.update({f"eval_{name}": value for name, value in figures.items()})
        context.telemetry.record_metrics(metrics)
        details["samples"] = [
            {"prompt": p, "chosen": c, "rejected": r, "chosen_score": cs, "rejected_score": rs}
            for p, c, r, cs, rs in list(
                zip(
                    prompts, eval_set["chosen"], eval_set["rejected"], chosen, rejected, strict=True
                )
            )[:8]
        ]
    return _finish(context, tokenizer, trainer, metrics, details, "eval_accuracy")


def _train_regression(context: Context, tokenizer: Any, model: Any, splits: Splits) -> StageResult:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    spec = context.spec

    def prepare(dataset: Any) -> Any:
        rated = rating_texts(dataset, splits.origin)
        return rated.map(
            lambda rows: {
                **tokenizer(rows["text"], truncation=True, max_length=spec.training.max_length),
                "labels": [float(score) for score in rows["score"]],
            },
            batched=True,
            remove_columns=["text", "score"],
        )

    if spec.lora:
        from peft import get_peft_model

        model = get_peft_model(model, hf.lora_config(spec.lora, "SEQ_CLS"))
    model.config.problem_type = "regression"
    train_set = prepare(splits.train)
    eval_set = prepare(splits.eval) if splits.eval is not None else None
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            **hf.training_arguments(
                context,
                spec.training,
                has_eval=eval_set is not None,
                early_stopping=spec.early_stopping,
                greater_is_better=spec.early_stopping is not None
                and "loss" not in spec.early_stopping.metric
                and "mse" not in spec.early_stopping.metric,
            )
        ),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=lambda prediction: regression_metrics(
            prediction.label_ids.reshape(-1), prediction.predictions.reshape(-1)
        ),
        callbacks=hf.callbacks(
            context, spec.early_stopping, hf.samples_per_step(context, spec.training)
        ),
    )
    train_output = hf.train_resumably(context, trainer)
    metrics: dict[str, float] = {"train_loss": float(train_output.training_loss)}
    if eval_set is not None:
        context.telemetry.set_state("evaluating")
        evaluation = trainer.evaluate()
        for name in ("mse", "pearson", "spearman", "loss"):
            metrics[f"eval_{name}"] = float(evaluation[f"eval_{name}"])
        context.telemetry.record_metrics(metrics)
    return _finish(context, tokenizer, trainer, metrics, {}, "eval_spearman")


def _finish(
    context: Context,
    tokenizer: Any,
    trainer: Any,
    metrics: dict[str, float],
    details: dict[str, Any],
    key: str,
) -> StageResult:
    lora = context.spec.lora
    model = hf.trained_model(context, trainer, merge_lora=lora.merge if lora else True)
    if model is None:  # not the main process: it took part in gathering the model
        return StageResult(metrics, "")
    publish_pretrained(context, model, tokenizer)
    key_metric = (
        f"{key}={metrics[key]:.3f}" if key in metrics else f"train_loss={metrics['train_loss']:.4g}"
    )
    return StageResult(metrics, key_metric, details)


def score_texts(
    model: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 32
) -> list[float]:
    """The reward model's score of each text (the scalar head at the last real token)."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores: list[float] = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = texts[start : start + batch_size]
                encoded = tokenizer(
                    [text + (tokenizer.eos_token or "") for text in batch],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                )
                logits = model(**{k: v.to(device) for k, v in encoded.items()}).logits
                scores.extend(float(value) for value in logits[:, 0].float().cpu())
    finally:
        model.train(was_training)
    return scores
