"""Reward model: pairwise Bradley-Terry loss with TRL's RewardTrainer on preferences and
rankings (expanded to pairs), or regression (MSE) on ratings.

Every shape TRL accepts is accepted: ``chosen``/``rejected`` (or ``text``/``response``) as
strings or message lists, with or without a separate ``prompt``. The rows are encoded by
``scoring.encode`` (TRL's own recipe, see scoring.py) before the trainer sees them, so the
form the model is trained on, the form it is evaluated on and the form PPO feeds it are one;
that form is written next to the model as ``scoring.json``.
"""

from __future__ import annotations

from typing import Any

from . import hf, scoring
from .data import Splits, load_splits, preference_pairs, rating_texts
from .errors import ConfigError, DataError
from .evaluation import pairwise_metrics, regression_metrics
from .held_out import evaluate_held_out
from .lifecycle import Context, StageResult, publish_model
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


def check_turns(value: Any, column: str, origin: str, row: int) -> None:
    """A prompt or response must be text or a list of {role, content} messages."""
    if isinstance(value, str) or scoring.is_conversation(value):
        return
    raise DataError(
        f"row {row + 1}: {column!r} must be a string or a list of messages with 'role' and"
        f" 'content'; found {type(value).__name__} {str(value)[:60]!r}",
        where=origin,
        field=column,
    )


def training_format(
    context: Context, tokenizer: Any, first_row: dict[str, Any], ratings: bool, origin: str
) -> scoring.ScoringFormat:
    """The form this dataset trains the reward model on: conversational when its responses
    are message lists (TRL decides the same way)."""
    response_column = next(name for name in ("chosen", "response", "text") if name in first_row)
    conversational = scoring.is_conversation(first_row[response_column])
    if conversational and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"the dataset's {response_column!r} column holds messages but the model's tokenizer"
            " has no chat template; use a model with one, or give the data as plain text",
            where=origin,
            field="spec.model",
        )
    return scoring.format_for_training(
        tokenizer, conversational, ratings, context.spec.training.max_length
    )


def encode_pairs(dataset: Any, tokenizer: Any, form: scoring.ScoringFormat, origin: str) -> Any:
    """Pairs as TRL's pre-tokenized columns ``chosen_ids`` and ``rejected_ids``."""
    has_prompt = "prompt" in dataset.column_names

    def encode_row(row: dict[str, Any], index: int) -> dict[str, Any]:
        prompt = row["prompt"] if has_prompt else None
        if has_prompt:
            check_turns(prompt, "prompt", origin, index)
        encoded = {}
        for column in ("chosen", "rejected"):
            check_turns(row[column], column, origin, index)
            encoded[f"{column}_ids"] = scoring.encode(tokenizer, form, prompt, row[column])
        return encoded

    return dataset.map(encode_row, with_indices=True, remove_columns=dataset.column_names)


def _train_pairwise(context: Context, tokenizer: Any, model: Any, splits: Splits) -> StageResult:
    from trl import RewardConfig, RewardTrainer

    spec = context.spec
    train_pairs = preference_pairs(splits.train, splits.format, splits.origin)
    eval_pairs = (
        preference_pairs(splits.eval, splits.format, splits.origin)
        if splits.eval is not None
        else None
    )
    form = training_format(context, tokenizer, train_pairs[0], False, splits.origin)
    train_set = encode_pairs(train_pairs, tokenizer, form, splits.origin)
    eval_set = (
        encode_pairs(eval_pairs, tokenizer, form, splits.origin) if eval_pairs is not None else None
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
    scorer = scoring.RewardScorer(model, tokenizer, form, batch_size=spec.training.batch_size)
    details: dict[str, Any] = {}
    # Evaluation pairs steered training (early stopping, best checkpoint); test pairs were
    # held out of all of it and give the final figures, reported apart.
    test_pairs = (
        preference_pairs(splits.test, splits.format, splits.origin)
        if splits.test is not None
        else None
    )
    for prefix, pairs in (("eval", eval_pairs), ("test", test_pairs)):
        if pairs is None:
            continue
        context.telemetry.set_state("testing" if prefix == "test" else "evaluating")
        figures, samples = _pairwise_evaluation(scorer, pairs)
        metrics.update({f"{prefix}_{name}": value for name, value in figures.items()})
        context.telemetry.record_metrics(metrics)
        if prefix == "eval" or "samples" not in details:
            details["samples"] = samples
    key = "test_accuracy" if test_pairs is not None else "eval_accuracy"
    return _finish(context, tokenizer, trainer, form, metrics, details, key)


def _pairwise_evaluation(
    scorer: scoring.RewardScorer, pairs: Any
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Pairwise accuracy and margins of held-out pairs, and the first few pairs scored."""
    prompts = pairs["prompt"] if "prompt" in pairs.column_names else [None] * len(pairs)
    chosen = scorer.score(prompts, pairs["chosen"]).tolist()
    rejected = scorer.score(prompts, pairs["rejected"]).tolist()
    samples = [
        {"prompt": p, "chosen": c, "rejected": r, "chosen_score": cs, "rejected_score": rs}
        for p, c, r, cs, rs in list(
            zip(prompts, pairs["chosen"], pairs["rejected"], chosen, rejected, strict=True)
        )[:8]
    ]
    return pairwise_metrics(chosen, rejected), samples


def encode_ratings(dataset: Any, tokenizer: Any, form: scoring.ScoringFormat, origin: str) -> Any:
    """Ratings as ``input_ids`` + float ``labels`` (prompt + response, or text)."""
    has_prompt = "prompt" in dataset.column_names
    response_column = "response" if "response" in dataset.column_names else "text"

    def encode_row(row: dict[str, Any], index: int) -> dict[str, Any]:
        prompt = row["prompt"] if has_prompt else None
        if has_prompt:
            check_turns(prompt, "prompt", origin, index)
        check_turns(row[response_column], response_column, origin, index)
        ids = scoring.encode(tokenizer, form, prompt, row[response_column])
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": float(row["score"])}

    return dataset.map(encode_row, with_indices=True, remove_columns=dataset.column_names)


def _train_regression(context: Context, tokenizer: Any, model: Any, splits: Splits) -> StageResult:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    spec = context.spec
    train_rows = rating_texts(splits.train, splits.origin)
    eval_rows = rating_texts(splits.eval, splits.origin) if splits.eval is not None else None
    form = training_format(context, tokenizer, train_rows[0], True, splits.origin)

    if spec.lora:
        from peft import get_peft_model

        model = get_peft_model(model, hf.lora_config(spec.lora, "SEQ_CLS"))
    model.config.problem_type = "regression"
    train_set = encode_ratings(train_rows, tokenizer, form, splits.origin)
    eval_set = (
        encode_ratings(eval_rows, tokenizer, form, splits.origin) if eval_rows is not None else None
    )
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
    key = "eval_spearman"
    if splits.test is not None:
        context.telemetry.set_state("testing")
        test_set = encode_ratings(
            rating_texts(splits.test, splits.origin), tokenizer, form, splits.origin
        )
        figures = evaluate_held_out(trainer, test_set)
        metrics.update({name: float(value) for name, value in figures.items()})
        context.telemetry.record_metrics(metrics)
        key = "test_spearman"
    return _finish(context, tokenizer, trainer, form, metrics, {}, key)


def _finish(
    context: Context,
    tokenizer: Any,
    trainer: Any,
    form: scoring.ScoringFormat,
    metrics: dict[str, float],
    details: dict[str, Any],
    key: str,
) -> StageResult:
    lora = context.spec.lora
    model = hf.trained_model(context, trainer, merge_lora=lora.merge if lora else True)
    if model is None:  # not the main process: it took part in gathering the model
        return StageResult(metrics, "")

    def save(folder: Any) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        form.save(folder)

    context.telemetry.set_state("saving")
    publish_model(context.output_dir, save)
    key_metric = (
        f"{key}={metrics[key]:.3f}" if key in metrics else f"train_loss={metrics['train_loss']:.4g}"
    )
    return StageResult(metrics, key_metric, details)
