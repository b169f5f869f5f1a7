"""SFT: causal-LM fine-tuning with TRL's SFTTrainer, or sequence classification with
transformers' Trainer (cross-entropy, early stopping, full classification report)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import hf
from .chat import (
    assistant_masks_supported,
    is_conversation,
    prompt_turns,
    render_prompt,
    require_chat_template,
    template_refusal,
)
from .data import Splits, label_ids, load_splits, sft_prompt_completion
from .errors import ConfigError
from .evaluation import classification_metrics, perplexity
from .generation import generate
from .held_out import TEST_PREFIX, evaluate_held_out
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
    conversational = _is_conversational(splits)
    if conversational:
        require_chat_template(tokenizer, "spec.model")
    masking = _loss_masking(splits, tokenizer, spec.completion_only_loss)
    if masking.notice and context.is_main:
        print(f"rlhf-trainer: notice: {masking.notice}", flush=True)
    train_set, eval_set = splits.train, splits.eval
    if masking.to_prompt_completion:
        train_set = sft_prompt_completion(train_set, splits.origin)
        if eval_set is not None:
            eval_set = sft_prompt_completion(eval_set, splits.origin + " (evaluation)")
    model = load_causal_lm(spec.model, "model", context.config, context.master_dtype())
    has_eval = eval_set is not None
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
        assistant_only_loss=masking.assistant_only,
        eos_token=tokenizer.eos_token,
    )
    try:
        trainer = SFTTrainer(
            model=model,
            args=arguments,
            train_dataset=train_set,
            eval_dataset=eval_set,
            processing_class=tokenizer,
            peft_config=hf.lora_config(spec.lora, "CAUSAL_LM") if spec.lora else None,
            callbacks=hf.callbacks(
                context, spec.early_stopping, hf.samples_per_step(context, spec.training)
            ),
        )
    except Exception as error:
        refusal = _template_refusal(tokenizer, splits) if conversational else None
        if refusal is not None:
            raise refusal from error
        raise
    for part, given, kept in (
        ("training", train_set, trainer.train_dataset),
        ("evaluation", eval_set, trainer.eval_dataset),
    ):
        if given is not None:
            notice = _truncation_notice(part, len(given), len(kept), spec.training.max_length)
            if notice and context.is_main:
                print(f"rlhf-trainer: notice: {notice}", flush=True)
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
    if splits.test is not None:
        context.telemetry.set_state("testing")
        metrics.update(evaluate_held_out(trainer, splits.test))
        metrics["test_perplexity"] = perplexity(metrics["test_loss"])
        context.telemetry.record_metrics(metrics)
    model = hf.trained_model(context, trainer, merge_lora=spec.lora.merge if spec.lora else True)
    if model is None:  # not the main process: it took part in gathering the model
        return StageResult(metrics, "")
    samples = _samples(context, model, tokenizer, splits)
    candidates = _candidates(context, model, tokenizer, splits)

    publish_pretrained(context, model, tokenizer, {"samples.jsonl": samples})
    if candidates:
        _write_jsonl(context.output_dir / "candidates.jsonl", candidates)
    key = _key_metric(metrics, ("test_loss", "eval_loss", "train_loss"))
    return StageResult(metrics, key, {"samples": samples})


@dataclass(frozen=True)
class LossMasking:
    """How SFT keeps the loss off the prompt."""

    assistant_only: bool
    """TRL masks every token outside the assistant turns (needs template support)."""
    to_prompt_completion: bool
    """Conversations become prompt (earlier turns) + completion (last assistant turn)."""
    notice: str = ""


def _loss_masking(splits: Splits, tokenizer: Any, completion_only_loss: bool) -> LossMasking:
    """Assistant-only loss where TRL can mask assistant turns with this chat template;
    otherwise, for conversations, TRL's conversational prompt-completion masking."""
    if splits.format != "messages" or not completion_only_loss:
        return LossMasking(assistant_only=False, to_prompt_completion=False)
    if assistant_masks_supported(tokenizer):
        return LossMasking(assistant_only=True, to_prompt_completion=False)
    return LossMasking(
        assistant_only=False,
        to_prompt_completion=True,
        notice=(
            "the model's chat template cannot mark assistant turns for the loss (no"
            " {% generation %} markers, and TRL has no training version of it), so each"
            " conversation trains on its last assistant turn, with the turns before it as"
            " the prompt (completionOnlyLoss: false trains on every token instead)"
        ),
    )


def _truncation_notice(part: str, given: int, kept: int, max_length: int) -> str:
    """TRL drops examples that truncation to maxLength leaves without a token to learn:
    a notice when some go, a ConfigError when all of them do."""
    if kept == given:
        return ""
    if kept == 0:
        raise ConfigError(
            f"maxLength {max_length} cuts every {part} example before its first token to"
            " learn (the prompt, with the chat template's header, fills it); raise"
            " training.maxLength or shorten the prompts",
            field="spec.training.maxLength",
        )
    return (
        f"maxLength {max_length} leaves no token to learn in {given - kept} of {given}"
        f" {part} examples; they are skipped (raise training.maxLength to keep them)"
    )


def _is_conversational(splits: Splits) -> bool:
    if splits.format == "messages":
        return True
    if splits.format == "prompt-completion":
        return is_conversation(splits.train[0]["prompt"])
    return False


def _template_refusal(tokenizer: Any, splits: Splits) -> Any:
    """The first conversation the chat template refuses, as a DataError, or None."""
    evaluation = splits.origin + " (evaluation)"
    for dataset, where in ((splits.train, splits.origin), (splits.eval, evaluation)):
        if dataset is None:
            continue
        if splits.format == "messages":
            conversations: Any = dataset["messages"]
            column = "messages"
        else:
            conversations = (
                p + c for p, c in zip(dataset["prompt"], dataset["completion"], strict=True)
            )
            column = "prompt"
        refusal = template_refusal(tokenizer, conversations, where=where, column=column)
        if refusal is not None:
            return refusal
    return None


def _prompts(splits: Splits, tokenizer: Any, limit: int) -> list[Any]:
    """Prompts from the evaluation data (or training data), as the data holds them: text, or
    the conversation up to (not including) its last assistant turn."""
    source = splits.eval if splits.eval is not None else splits.train
    rows = source.select(range(min(limit, len(source))))
    if splits.format == "prompt-completion":
        return list(rows["prompt"])
    if splits.format == "messages":
        return [prompt_turns(messages) for messages in rows["messages"]]
    return [text[: max(1, len(text) // 3)] for text in rows["text"]]


def _model_input(tokenizer: Any, prompt: Any) -> str:
    """The text the model continues: a conversation rendered by the chat template."""
    return render_prompt(tokenizer, prompt) if is_conversation(prompt) else str(prompt)


def _generate_for(
    context: Context, model: Any, tokenizer: Any, prompts: list[Any], **options: Any
) -> list[list[str]]:
    settings = context.spec.generation
    conversational = bool(prompts) and is_conversation(prompts[0])
    return generate(
        model,
        tokenizer,
        [_model_input(tokenizer, prompt) for prompt in prompts],
        max_new_tokens=settings.max_new_tokens,
        top_p=settings.top_p,
        # A chat template writes its own BOS; plain text gets the tokenizer's, as in training.
        add_special_tokens=not conversational,
        **options,
    )


def _samples(context: Context, model: Any, tokenizer: Any, splits: Splits) -> list[dict[str, Any]]:
    settings = context.spec.generation
    if settings.samples == 0:
        return []
    prompts = _prompts(splits, tokenizer, settings.samples)
    completions = _generate_for(
        context,
        model,
        tokenizer,
        prompts,
        temperature=settings.temperature,
        seed=context.spec.training.seed,
    )
    return [
        {"prompt": _model_input(tokenizer, p), "completion": c[0]}
        for p, c in zip(prompts, completions, strict=True)
    ]


def _candidates(
    context: Context, model: Any, tokenizer: Any, splits: Splits
) -> list[dict[str, Any]]:
    """Responses for people to rank: rows of the ranking format RewardModelJob reads
    ({"prompt", "responses"}), to be reordered best first by the labelers. Conversational
    data gives conversational rankings: the prompt's messages, each response one
    assistant message in a list."""
    settings = context.spec.generation
    if settings.candidates is None:
        return []
    context.telemetry.set_state("generating candidates")
    prompts = _prompts(splits, tokenizer, settings.candidates.max_prompts)
    responses = _generate_for(
        context,
        model,
        tokenizer,
        prompts,
        temperature=max(settings.temperature, 0.7),
        per_prompt=settings.candidates.per_prompt,
        seed=context.spec.training.seed + 1,
    )
    return [
        {"prompt": p, "responses": [_as_answer(p, text) for text in r]}
        for p, r in zip(prompts, responses, strict=True)
    ]


def _as_answer(prompt: Any, text: str) -> Any:
    return [{"role": "assistant", "content": text}] if is_conversation(prompt) else text


# --- sequence classification ---------------------------------------------------------


def _train_classifier(context: Context, tokenizer: Any, splits: Splits) -> StageResult:
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
    weights = class_weights(spec.class_weights, labels, train_set["label"])

    def compute_metrics(prediction: Any) -> dict[str, float]:
        figures = classification_metrics(prediction.label_ids, _argmax(prediction), labels)
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
        compute_loss_func=weighted_cross_entropy(weights) if weights is not None else None,
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
    # Evaluation data steered training (early stopping, best checkpoint); test data, held
    # out from the Trainer until now, gives the final figures, reported apart.
    held_out = [("eval", splits.eval, eval_set)]
    if splits.test is not None:
        held_out.append((TEST_PREFIX, splits.test, tokenize(splits.test)))
    for prefix, rows, dataset in held_out:
        if dataset is None:
            continue
        context.telemetry.set_state("testing" if prefix == TEST_PREFIX else "evaluating")
        prediction = trainer.predict(dataset, metric_key_prefix=prefix)
        predicted = _argmax(prediction)
        report = classification_metrics(prediction.label_ids, predicted, labels)
        metrics.update(
            {
                f"{prefix}_{name}": value
                for name, value in report.items()
                if isinstance(value, float)
            }
        )
        metrics[f"{prefix}_loss"] = float(prediction.metrics[f"{prefix}_loss"])
        context.telemetry.record_metrics(metrics)
        details[CLASSIFICATION_DETAILS[prefix]] = report
        if context.is_main:
            _write_classification(context, prefix, rows["text"], prediction, predicted, labels)
            name = "eval.json" if prefix == "eval" else f"{prefix}.json"
            (context.output_dir / name).write_text(json.dumps(report, indent=2))
    model = hf.trained_model(context, trainer, merge_lora=spec.lora.merge if spec.lora else True)
    if model is None:  # not the main process: it took part in gathering the model
        return StageResult(metrics, "")
    publish_pretrained(context, model, tokenizer)
    key = _key_metric(metrics, ("test_accuracy", "eval_accuracy", "train_loss"))
    return StageResult(metrics, key, details)


CLASSIFICATION_DETAILS = {"eval": "classification", TEST_PREFIX: "test_classification"}
"""Where each held-out report goes in StageResult.details (report.html draws both)."""


def class_weights(
    setting: Any | None, labels: list[str], label_ids: list[int]
) -> list[float] | None:
    """The loss weight of each class, in label-id order; None for plain cross-entropy.

    balanced: n / (k * count), as scikit-learn's compute_class_weight("balanced") (a class
    absent from the training data gets weight 1: nothing to rebalance); explicit: the
    weights named, 1 for labels left out.
    """
    if setting is None:
        return None
    if not setting.balanced:
        return [float(setting.weights.get(label, 1.0)) for label in labels]
    counts = [0] * len(labels)
    for label in label_ids:
        counts[label] += 1
    total, present = len(label_ids), sum(1 for count in counts if count)
    return [total / (present * count) if count else 1.0 for count in counts]


def weighted_cross_entropy(weights: list[float]) -> Any:
    """A Trainer compute_loss_func: class-weighted cross-entropy.

    The Trainer expects such a loss already normalised over the whole accumulated batch:
    the weighted sum is divided by the number of examples (num_items_in_batch) when
    training, by the batch size when evaluating.
    """
    import torch

    weight_tensor = torch.tensor(weights, dtype=torch.float32)

    def loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        total = torch.nn.functional.cross_entropy(
            logits.float(),
            labels.to(logits.device),
            weight=weight_tensor.to(logits.device),
            reduction="sum",
        )
        count = num_items_in_batch if num_items_in_batch is not None else labels.numel()
        return total / count

    return loss


def _argmax(prediction: Any) -> Any:
    import numpy as np

    return np.argmax(prediction.predictions, axis=-1)


def _write_classification(
    context: Context,
    prefix: str,
    texts: list[str],
    prediction: Any,
    predicted: Any,
    labels: list[str],
) -> None:
    """predictions.jsonl (evaluation data) or test_predictions.jsonl: one row per text."""
    probabilities = _softmax(prediction.predictions)
    name = "predictions.jsonl" if prefix == "eval" else f"{prefix}_predictions.jsonl"
    _write_jsonl(
        context.output_dir / name,
        [
            {
                "text": text,
                "label": labels[int(truth)],
                "prediction": labels[int(guess)],
                "probabilities": [round(float(p), 6) for p in row],
            }
            for text, truth, guess, row in zip(
                texts, prediction.label_ids, predicted, probabilities, strict=True
            )
        ],
    )


def _key_metric(metrics: dict[str, float], preferred: tuple[str, ...]) -> str:
    """The first of ``preferred`` that was measured: held-out test figures first."""
    name = next(name for name in preferred if name in metrics)
    return f"{name}={metrics[name]:.4g}" if "loss" in name else f"{name}={metrics[name]:.3f}"


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
