"""Loading datasets and putting them into the shape each stage trains on.

Every source (Hub, files on a claim, the tiny preset) becomes a ``datasets.Dataset``
through the same path; columns are renamed, the format is detected or checked, and
problems are reported as DataError naming the file and the column.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_operator.api import DatasetSource
from rlhf_operator.api.trainer_config import TrainerConfig, hub_token_variable

from .errors import DataError
from .presets import tiny_records

# The columns that identify each format, in the order "auto" tries them.
FORMAT_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "sft": {
        "messages": ("messages",),
        "prompt-completion": ("prompt", "completion"),
        "classification": ("text", "label"),
        "text": ("text",),
    },
    "rm": {
        "preference": ("chosen", "rejected"),
        "ranking": ("responses",),
        "rating": ("score",),
    },
    "ppo": {"messages": ("messages",), "prompt": ("prompt",)},
}
PRESET_SIZES = {"sft": 512, "rm": 512, "ppo": 256}


@dataclass
class Splits:
    """Training data, optional evaluation data, the detected format and where it came from."""

    train: Any
    eval: Any | None
    format: str
    origin: str


def load_splits(source: DatasetSource, stage: str, config: TrainerConfig, seed: int) -> Splits:
    """Load, rename, check and split a stage's dataset."""
    requested = getattr(source, "format", "auto")
    if stage == "sft" and getattr(config.job.spec, "task", "") == "sequence-classification":
        requested = "classification" if requested == "auto" else requested
    train, evaluation, origin = _load(source, stage, requested, config, seed)
    train = _rename(train, source.columns, origin)
    if evaluation is not None:
        evaluation = _rename(evaluation, source.columns, origin)
    data_format = detect_format(train.column_names, stage, requested, origin)
    if len(train) == 0:
        raise DataError("the dataset is empty", where=origin)
    if source.max_samples is not None and len(train) > source.max_samples:
        train = train.shuffle(seed=seed).select(range(source.max_samples))
    if evaluation is None and source.eval_fraction is not None:
        if len(train) < 2:
            raise DataError("too few rows to hold out evaluation data", where=origin)
        parts = train.train_test_split(test_size=source.eval_fraction, seed=seed)
        train, evaluation = parts["train"], parts["test"]
    if evaluation is not None:
        detect_format(evaluation.column_names, stage, data_format, origin + " (evaluation)")
    return Splits(train, evaluation, data_format, origin)


def detect_format(columns: list[str], stage: str, requested: str, origin: str) -> str:
    """The format named, checked against the columns; or the first whose columns are there."""
    formats = FORMAT_COLUMNS[stage]
    if requested != "auto":
        missing = [name for name in formats[requested] if name not in columns]
        if missing:
            raise DataError(
                f"format {requested} needs column {missing[0]!r}; found {sorted(columns)}"
                " (rename with dataset.columns)",
                where=origin,
                field=missing[0],
            )
        return requested
    for name, needed in formats.items():
        if all(column in columns for column in needed):
            return name
    expected = " or ".join("+".join(needed) for needed in formats.values())
    raise DataError(
        f"cannot tell the format: expected columns {expected}; found {sorted(columns)}"
        " (set dataset.format, or rename with dataset.columns)",
        where=origin,
    )


def _load(
    source: DatasetSource, stage: str, requested: str, config: TrainerConfig, seed: int
) -> tuple[Any, Any | None, str]:
    import datasets

    if source.preset is not None:
        preset_format = requested if requested != "auto" else "auto"
        rows = tiny_records(stage, preset_format, PRESET_SIZES[stage], seed)
        return datasets.Dataset.from_list(rows), None, "preset:tiny"
    if source.hub is not None:
        hub = source.hub
        token = os.environ.get(hub_token_variable("dataset"))
        arguments: dict[str, Any] = {"revision": hub.revision, "token": token}
        if config.paths.cache:
            arguments["cache_dir"] = os.path.join(config.paths.cache, "datasets")
        origin = f"hub:{hub.id}"
        try:
            train = datasets.load_dataset(hub.id, hub.config, split=hub.split, **arguments)
            evaluation = None
            if source.eval_split:
                evaluation = datasets.load_dataset(
                    hub.id, hub.config, split=source.eval_split, **arguments
                )
        except (FileNotFoundError, ValueError) as error:
            raise DataError(f"cannot load: {error}", where=origin) from error
        return train, evaluation, origin
    path = config.paths.inputs.get("dataset")
    if not path:
        raise DataError("no local path was given for the dataset", field="spec.dataset")
    train = load_files(Path(path), source.pvc.file_format if source.pvc else "auto")
    evaluation = None
    if source.eval_split:
        base = Path(path) if Path(path).is_dir() else Path(path).parent
        evaluation = load_files(base / source.eval_split, "auto")
    return train, evaluation, path


def load_files(path: Path, file_format: str) -> Any:
    """JSON Lines or Parquet: one file, or every such file in a folder."""
    import datasets

    if path.is_dir():
        files = sorted(
            str(found)
            for found in itertools.chain(
                path.glob("*.jsonl"), path.glob("*.json"), path.glob("*.parquet")
            )
        )
    elif path.exists():
        files = [str(path)]
    else:
        raise DataError("no such file or folder", where=str(path))
    if not files:
        raise DataError("the folder holds no .jsonl, .json or .parquet files", where=str(path))
    kinds = {file_format} if file_format != "auto" else {_file_kind(name) for name in files}
    if len(kinds) > 1:
        raise DataError("mixes JSON Lines and Parquet files; keep one format", where=str(path))
    builder = "parquet" if kinds == {"parquet"} else "json"
    try:
        return datasets.load_dataset(builder, data_files=files, split="train")
    except Exception as error:  # the datasets library raises many kinds for bad files
        raise DataError(f"cannot read: {_first_line(error)}", where=str(path)) from error


def _file_kind(name: str) -> str:
    return "parquet" if name.endswith(".parquet") else "jsonl"


def _first_line(error: BaseException) -> str:
    cause = error.__cause__ or error
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


def _rename(dataset: Any, columns: dict[str, str], origin: str) -> Any:
    for expected, actual in columns.items():
        if actual not in dataset.column_names:
            raise DataError(
                f"column {actual!r} (mapped to {expected!r} by dataset.columns) is missing;"
                f" found {sorted(dataset.column_names)}",
                where=origin,
                field=actual,
            )
        if expected != actual:
            dataset = dataset.rename_column(actual, expected)
    return dataset


# --- per-stage shaping ---------------------------------------------------------------


def label_ids(dataset: Any, labels: list[str], origin: str) -> Any:
    """Map a classification dataset's labels (names or indices) to ids, refusing strangers."""
    index = {label: position for position, label in enumerate(labels)}

    def convert(row: dict[str, Any], row_number: int) -> dict[str, Any]:
        label = row["label"]
        if isinstance(label, bool) or label is None:
            label = str(label)
        if isinstance(label, int) and 0 <= label < len(labels):
            return {"label": label}
        if isinstance(label, str) and label in index:
            return {"label": index[label]}
        raise DataError(
            f"row {row_number + 1} has label {label!r}, not one of {labels} (spec.labels)",
            where=origin,
            field="label",
        )

    return dataset.map(convert, with_indices=True)


def preference_pairs(dataset: Any, data_format: str, origin: str) -> Any:
    """Preference pairs ``chosen``/``rejected`` (+ ``prompt`` when the data has one); rankings
    expanded to pairs. (Minimal version on the ppo branch; the data branch owns this.)"""
    if data_format == "ranking":
        return ranking_to_pairs(dataset, origin)
    keep = [name for name in ("prompt", "chosen", "rejected") if name in dataset.column_names]
    return dataset.select_columns(keep)


def ranking_to_pairs(dataset: Any, origin: str) -> Any:
    """Expand rankings (responses best first) into every (better, worse) pair."""

    def expand(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        pairs: dict[str, list[Any]] = {"prompt": [], "chosen": [], "rejected": []}
        prompts = batch.get("prompt") or [""] * len(batch["responses"])
        for prompt, responses in zip(prompts, batch["responses"], strict=True):
            if not isinstance(responses, list) or len(responses) < 2:
                raise DataError(
                    "each ranking needs a list of at least two responses, best first",
                    where=origin,
                    field="responses",
                )
            for better, worse in itertools.combinations(responses, 2):
                pairs["prompt"].append(prompt or "")
                pairs["chosen"].append(better)
                pairs["rejected"].append(worse)
        return pairs

    return dataset.map(expand, batched=True, remove_columns=dataset.column_names)


def rating_texts(dataset: Any, origin: str) -> Any:
    """Ratings as "score" plus "text", or "prompt" and "response" (strings or messages)."""
    columns = dataset.column_names
    if "text" not in columns and not {"prompt", "response"} <= set(columns):
        raise DataError(
            "ratings need a 'text' column, or 'prompt' and 'response'", where=origin, field="text"
        )

    kept = ["text"] if "text" in columns else ["prompt", "response"]

    def shape(row: dict[str, Any]) -> dict[str, Any]:
        try:
            score = float(row["score"])
        except (TypeError, ValueError):
            raise DataError(
                f"score {row['score']!r} is not a number", where=origin, field="score"
            ) from None
        return {"score": score}

    return dataset.map(shape).select_columns([*kept, "score"])


def prompt_texts(dataset: Any, data_format: str, origin: str) -> list[str | list[dict[str, Any]]]:
    """PPO prompts as the data gives them: a string, or a list of chat messages.

    ``prompt`` may be either (``trl-lib/ultrafeedback-prompt`` holds message lists);
    ``messages`` loses its last turn when that turn is the assistant's (the answer PPO
    replaces) and keeps every earlier turn, assistant turns included, so multi-turn prompts
    still alternate as strict templates (Mistral, Gemma) require.
    """
    column = "messages" if data_format == "messages" else "prompt"
    prompts: list[str | list[dict[str, Any]]] = []
    for row, value in enumerate(dataset[column]):
        if isinstance(value, str) and column == "prompt":
            prompts.append(value)
            continue
        if not _is_message_list(value):
            raise DataError(
                f"row {row + 1}: {column!r} must be "
                + ("a string or " if column == "prompt" else "")
                + "a non-empty list of messages with 'role' and 'content';"
                f" found {str(value)[:60]!r}",
                where=origin,
                field=column,
            )
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
        if column == "messages" and len(messages) > 1 and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        prompts.append(messages)
    return prompts


def _is_message_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in value
        )
    )
