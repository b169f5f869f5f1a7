"""Loading datasets and putting them into the shape each stage trains on.

Every source (Hub, files on a claim, the tiny preset) becomes a ``datasets.Dataset``
through the same path; columns are renamed, the format is detected or checked, and
problems are reported as DataError naming the file and the column.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_operator.api import DatasetSource
from rlhf_operator.api.trainer_config import TrainerConfig, hub_token_variable

from .chat import Kind, split_last_assistant_turn, value_kind
from .errors import DataError, TransientError, is_network_failure
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
    "dpo": {"preference": ("chosen", "rejected"), "ranking": ("responses",)},
}
PRESET_SIZES = {"sft": 512, "rm": 512, "ppo": 256, "dpo": 512}
TEXT: frozenset[Kind] = frozenset({"text"})
CONVERSATION: frozenset[Kind] = frozenset({"conversation"})
EITHER: frozenset[Kind] = TEXT | CONVERSATION


@dataclass(frozen=True)
class ColumnShape:
    """What one column of a format may hold: plain text, a conversation, or either."""

    name: str
    kinds: frozenset[Kind]
    optional: bool = False
    many: bool = False
    """A list of values (a ranking's responses), each of the kinds above."""


# The shape of every column each format reads. The columns of one row that may be text
# or conversations must agree (TRL joins prompt + completion, prompt + chosen, ...).
FORMAT_SHAPES: dict[str, dict[str, tuple[ColumnShape, ...]]] = {
    "sft": {
        "messages": (ColumnShape("messages", CONVERSATION),),
        "prompt-completion": (ColumnShape("prompt", EITHER), ColumnShape("completion", EITHER)),
        "classification": (ColumnShape("text", TEXT),),
        "text": (ColumnShape("text", TEXT),),
    },
    "rm": {
        "preference": (
            ColumnShape("prompt", EITHER, optional=True),
            ColumnShape("chosen", EITHER),
            ColumnShape("rejected", EITHER),
        ),
        "ranking": (
            ColumnShape("prompt", EITHER, optional=True),
            ColumnShape("responses", EITHER, many=True),
        ),
        "rating": (
            ColumnShape("text", TEXT, optional=True),
            ColumnShape("prompt", EITHER, optional=True),
            ColumnShape("response", EITHER, optional=True),
        ),
    },
    "ppo": {
        "messages": (ColumnShape("messages", CONVERSATION),),
        "prompt": (ColumnShape("prompt", EITHER),),
    },
}
# DPO reads the reward model's pairwise shapes (ratings hold no pairs).
FORMAT_SHAPES["dpo"] = {name: FORMAT_SHAPES["rm"][name] for name in FORMAT_COLUMNS["dpo"]}


@dataclass
class Splits:
    """Training data, optional evaluation and test data, the detected format and where it
    came from.

    ``eval`` is what training watches (periodic evaluation, early stopping, the best
    checkpoint); ``test`` is held out from all of that and evaluated once at the end.
    """

    train: Any
    eval: Any | None
    format: str
    origin: str
    test: Any | None = None


def load_splits(source: DatasetSource, stage: str, config: TrainerConfig, seed: int) -> Splits:
    """Load, rename, check and split a stage's dataset.

    Fractions are taken from the (maxSamples-capped) training data with the seed: first
    testFraction, then evalFraction of the whole, so the three parts are disjoint.
    """
    requested = getattr(source, "format", "auto")
    if stage == "sft" and getattr(config.job.spec, "task", "") == "sequence-classification":
        requested = "classification" if requested == "auto" else requested
    train, evaluation, test, origin = _load(source, stage, requested, config, seed)
    train = _rename(train, source.columns, origin)
    if evaluation is not None:
        evaluation = _rename(evaluation, source.columns, origin)
    if test is not None:
        test = _rename(test, source.columns, origin)
    data_format = detect_format(train.column_names, stage, requested, origin)
    if len(train) == 0:
        raise DataError("the dataset is empty", where=origin)
    check_shapes(train, stage, data_format, origin)
    if source.max_samples is not None and len(train) > source.max_samples:
        train = train.shuffle(seed=seed).select(range(source.max_samples))
    whole = len(train)
    if test is None and source.test_fraction is not None:
        train, test = _hold_out(train, source.test_fraction, seed, "test", origin)
    if evaluation is None and source.eval_fraction is not None:
        fraction = source.eval_fraction * whole / len(train)
        train, evaluation = _hold_out(train, fraction, seed, "evaluation", origin)
    if evaluation is not None:
        detect_format(evaluation.column_names, stage, data_format, origin + " (evaluation)")
        check_shapes(evaluation, stage, data_format, origin + " (evaluation)")
    if test is not None:
        detect_format(test.column_names, stage, data_format, origin + " (test)")
        check_shapes(test, stage, data_format, origin + " (test)")
    return Splits(train, evaluation, data_format, origin, test)


def _hold_out(dataset: Any, fraction: float, seed: int, what: str, origin: str) -> tuple[Any, Any]:
    """Split off a seeded ``fraction`` of the rows: (the rest, the held-out rows)."""
    try:
        parts = dataset.train_test_split(test_size=min(fraction, 1.0), seed=seed)
    except ValueError:  # a part would be empty
        raise DataError(
            f"too few rows ({len(dataset)}) to hold out {fraction:.3g} of them as {what} data",
            where=origin,
        ) from None
    return parts["train"], parts["test"]


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
) -> tuple[Any, Any | None, Any | None, str]:
    import datasets

    if source.preset is not None:
        preset_format = requested if requested != "auto" else "auto"
        rows = tiny_records(stage, preset_format, PRESET_SIZES[stage], seed)
        return datasets.Dataset.from_list(rows), None, None, "preset:tiny"
    if source.hub is not None:
        hub = source.hub
        token = os.environ.get(hub_token_variable("dataset"))
        arguments: dict[str, Any] = {"revision": hub.revision, "token": token}
        if config.paths.cache:
            arguments["cache_dir"] = os.path.join(config.paths.cache, "datasets")
        origin = f"hub:{hub.id}"
        try:
            train = datasets.load_dataset(hub.id, hub.config, split=hub.split, **arguments)
            evaluation, test = (
                datasets.load_dataset(hub.id, hub.config, split=split, **arguments)
                if split
                else None
                for split in (source.eval_split, source.test_split)
            )
        except (OSError, ValueError) as error:
            if is_network_failure(error):
                raise TransientError(
                    f"cannot reach the Hub ({_first_line(error)}); retried on the next attempt",
                    where=origin,
                ) from error
            if not isinstance(error, FileNotFoundError | ValueError):
                raise
            raise DataError(f"cannot load: {error}", where=origin) from error
        return train, evaluation, test, origin
    path = config.paths.inputs.get("dataset")
    if not path:
        raise DataError("no local path was given for the dataset", field="spec.dataset")
    train = load_files(Path(path), source.pvc.file_format if source.pvc else "auto")
    base = Path(path) if Path(path).is_dir() else Path(path).parent
    evaluation, test = (
        load_files(base / split, "auto") if split else None
        for split in (source.eval_split, source.test_split)
    )
    return train, evaluation, test, path


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


def check_shapes(dataset: Any, stage: str, data_format: str, origin: str) -> None:
    """Refuse values of the wrong shape, naming the file, the column and the row.

    Each column a format reads holds plain text or conversations as ``FORMAT_SHAPES``
    says, one shape for the whole column, and the text-or-conversation columns of a row
    agree. SFT conversations need an assistant turn to learn from. Ratings need ``text``
    or ``prompt`` + ``response``.
    """
    shapes = [
        shape
        for shape in FORMAT_SHAPES[stage][data_format]
        if shape.name in dataset.column_names or not shape.optional
    ]
    if stage == "rm" and data_format == "rating":
        _check_rating_columns(dataset.column_names, origin)
        read = ("text",) if "text" in dataset.column_names else ("prompt", "response")
        shapes = [shape for shape in shapes if shape.name in read]
    names = [shape.name for shape in shapes]
    first_seen: dict[str, tuple[Kind, int]] = {}
    row = 0
    for batch in dataset.select_columns(names).iter(batch_size=1000):
        for values in zip(*(batch[name] for name in names), strict=True):
            row += 1
            kinds = {
                shape.name: _column_kind(shape, value, origin, row)
                for shape, value in zip(shapes, values, strict=True)
            }
            for name, kind in kinds.items():
                seen = first_seen.setdefault(name, (kind, row))
                if seen[0] != kind:
                    raise DataError(
                        f"row {row} holds {_kind_words(kind)} but row {seen[1]} holds"
                        f" {_kind_words(seen[0])}; keep one shape in a column",
                        where=origin,
                        field=name,
                    )
            _check_row_agrees(kinds, origin, row)
            if stage == "sft" and data_format == "messages":
                _require_assistant_turn(values[0], origin, row)


def _column_kind(shape: ColumnShape, value: Any, origin: str, row: int) -> Kind:
    if shape.many:
        if not isinstance(value, list | tuple) or len(value) < 2:
            raise DataError(
                f"row {row} needs a list of at least two responses, best first",
                where=origin,
                field=shape.name,
            )
        kinds = {value_kind(item, where=origin, column=shape.name, row=row) for item in value}
        if len(kinds) > 1:
            raise DataError(
                f"row {row} mixes strings and message lists; give every response the same shape",
                where=origin,
                field=shape.name,
            )
        kind = kinds.pop()
    else:
        kind = value_kind(value, where=origin, column=shape.name, row=row)
    if kind not in shape.kinds:
        wanted = "a list of messages ({role, content})" if kind == "text" else "plain text"
        hint = (
            "use format text or prompt-completion for plain text"
            if kind == "text"
            else "use format messages or prompt-completion for conversations"
        )
        raise DataError(
            f"row {row} holds {_kind_words(kind)}, but this column takes {wanted}; {hint}",
            where=origin,
            field=shape.name,
        )
    return kind


def _check_row_agrees(kinds: dict[str, Kind], origin: str, row: int) -> None:
    if len(set(kinds.values())) <= 1:
        return
    described = ", ".join(f"{name!r} {_kind_words(kind)}" for name, kind in kinds.items())
    raise DataError(
        f"row {row} mixes shapes ({described}); use strings in all of them or message lists"
        " in all of them",
        where=origin,
        field=next(iter(kinds)),
    )


def _require_assistant_turn(messages: list[Any], origin: str, row: int) -> None:
    if not any(message["role"] == "assistant" for message in messages):
        raise DataError(
            f"row {row} has no assistant turn, so there is nothing to learn; end each"
            " conversation with the assistant's answer",
            where=origin,
            field="messages",
        )


def _check_rating_columns(columns: list[str], origin: str) -> None:
    if "text" not in columns and not {"prompt", "response"} <= set(columns):
        raise DataError(
            "ratings need a 'text' column, or 'prompt' and 'response'"
            f"; found {sorted(columns)} (rename with dataset.columns)",
            where=origin,
            field="text",
        )


def _kind_words(kind: Kind) -> str:
    return "a string" if kind == "text" else "a list of messages"


def sft_prompt_completion(dataset: Any, origin: str) -> Any:
    """Conversations as TRL's conversational prompt-completion rows, for completion-only loss
    on templates that cannot mask assistant turns: the prompt is every turn before the last
    assistant turn (earlier answers included), the completion that last turn."""

    def split(row: dict[str, Any], index: int) -> dict[str, Any]:
        prompt, completion = split_last_assistant_turn(row["messages"])
        if not completion:
            _require_assistant_turn(row["messages"], origin, index + 1)
        if not prompt:
            raise DataError(
                f"row {index + 1} starts with the assistant turn it learns; give a user turn"
                " before it (or set completionOnlyLoss: false)",
                where=origin,
                field="messages",
            )
        return {"prompt": prompt, "completion": completion}

    return dataset.map(split, with_indices=True, remove_columns=dataset.column_names)


def preference_pairs(dataset: Any, data_format: str, origin: str) -> Any:
    """Pairs for the Bradley-Terry loss from preferences or rankings, checked.

    Returns columns ``chosen`` and ``rejected``, plus ``prompt`` only when the input had a
    ``prompt`` column (TRL's explicit prompt; without it the prompt is implicit in each
    answer). Every value is a string, or every value is a list of messages ({role, content})
    as TRL's conversational preference data; a column never mixes them.
    """
    check_shapes(dataset, "rm", data_format, origin)
    if data_format == "ranking":
        return ranking_to_pairs(dataset, origin)
    if data_format != "preference":
        raise DataError(f"format {data_format} holds no pairs", where=origin)
    keep = [name for name in ("prompt", "chosen", "rejected") if name in dataset.column_names]
    return dataset.select_columns(keep)


def ranking_to_pairs(dataset: Any, origin: str) -> Any:
    """Expand rankings (``responses`` best first) into every (better, worse) pair.

    Returns ``chosen``, ``rejected``, and ``prompt`` only when the rankings had one;
    responses may be strings or lists of messages (the answer turns).
    """
    check_shapes(dataset, "rm", "ranking", origin)
    has_prompt = "prompt" in dataset.column_names

    def expand(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        pairs: dict[str, list[Any]] = {"prompt": []} if has_prompt else {}
        pairs.update(chosen=[], rejected=[])
        prompts = batch["prompt"] if has_prompt else [None] * len(batch["responses"])
        for prompt, responses in zip(prompts, batch["responses"], strict=True):
            for better, worse in itertools.combinations(responses, 2):
                if has_prompt:
                    pairs["prompt"].append(prompt)
                pairs["chosen"].append(better)
                pairs["rejected"].append(worse)
        return pairs

    return dataset.map(expand, batched=True, remove_columns=dataset.column_names)


def rating_texts(dataset: Any, origin: str) -> Any:
    """Ratings, checked: ``score`` as a float plus ``text`` (a string) or ``prompt`` +
    ``response`` (both strings, or both lists of messages), the shape left as it was.

    The caller turns a prompt/response pair into the text the reward model reads (the
    same way for training and for scoring); ``text`` wins when both forms are present.
    """
    _check_rating_columns(dataset.column_names, origin)
    check_shapes(dataset, "rm", "rating", origin)
    keep = ["text"] if "text" in dataset.column_names else ["prompt", "response"]
    scores = [_score(value, origin, row) for row, value in enumerate(dataset["score"], start=1)]
    return dataset.select_columns(keep).add_column("score", scores)


def _score(value: Any, origin: str, row: int) -> float:
    try:
        if isinstance(value, bool) or value is None:
            raise TypeError
        score = float(value)
        if not math.isfinite(score):
            raise ValueError
        return score
    except (TypeError, ValueError):
        raise DataError(
            f"row {row} has score {value!r}, not a number", where=origin, field="score"
        ) from None


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
