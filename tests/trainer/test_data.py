"""Dataset shapes: TRL's conversational and plain columns are accepted, checked and shaped
for each stage; a value of the wrong shape is refused naming the file, column and row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from rlhf_trainer.chat import (
    assistant_masks_supported,
    check_messages,
    require_chat_template,
    split_last_assistant_turn,
)
from rlhf_trainer.data import (
    check_shapes,
    load_files,
    preference_pairs,
    ranking_to_pairs,
    rating_texts,
    sft_prompt_completion,
)
from rlhf_trainer.errors import ConfigError, DataError

ORIGIN = "/claim/data.jsonl"


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


CAPYBARA = [
    {"messages": [user("Hi"), assistant("Hello!"), user("How are you?"), assistant("Fine.")]},
    {"messages": [{"role": "system", "content": "Be brief."}, user("2+2?"), assistant("4")]},
]


def table(rows: list[dict[str, Any]], tmp_path: Path) -> Any:
    """Rows written as JSON Lines and read back as users' files are (datasets' Json columns)."""
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return load_files(path, "auto")


@pytest.mark.parametrize(
    ("stage", "data_format", "rows"),
    [
        ("sft", "messages", CAPYBARA),
        ("sft", "prompt-completion", [{"prompt": "Say hi", "completion": " hi"}]),
        ("sft", "prompt-completion", [{"prompt": [user("Hi")], "completion": [assistant("Yo")]}]),
        ("sft", "text", [{"text": "plain"}]),
        ("rm", "preference", [{"chosen": [user("Q"), assistant("A")], "rejected": [user("Q")]}]),
        ("rm", "preference", [{"prompt": "Q", "chosen": " good", "rejected": " bad"}]),
        ("rm", "ranking", [{"prompt": [user("Q")], "responses": [[assistant("a")]] * 3}]),
        ("rm", "rating", [{"prompt": [user("Q")], "response": [assistant("A")], "score": 2}]),
        ("rm", "rating", [{"text": "Q A", "score": 1.5}]),
        ("ppo", "prompt", [{"prompt": [user("Q")]}]),
        ("ppo", "messages", [{"messages": [user("Q"), assistant("A"), user("And?")]}]),
    ],
)
def test_every_trl_shape_is_accepted(stage, data_format, rows, tmp_path) -> None:
    check_shapes(table(rows, tmp_path), stage, data_format, ORIGIN)


BAD_SHAPES = [
    # (stage, format, rows, column, row, words in the message)
    ("sft", "messages", [*CAPYBARA, {"messages": ["Hi", "Hello"]}], "messages", 3, "list of str"),
    ("sft", "messages", [{"messages": "Hi there"}], "messages", 1, "takes a list of messages"),
    ("sft", "messages", [{"messages": []}], "messages", 1, "empty list"),
    ("sft", "messages", [{"messages": [{"content": "Hi"}]}], "messages", 1, "no string 'role'"),
    ("sft", "messages", [{"messages": [{"role": "user"}]}], "messages", 1, "no string 'content'"),
    (
        "sft",
        "messages",
        [{"messages": [{"role": "human", "content": "x"}]}],
        "messages",
        1,
        "'human'",
    ),
    (
        "sft",
        "messages",
        [{"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}],
        "messages",
        1,
        "multimodal",
    ),
    ("sft", "messages", [{"messages": [user("Hi"), user("Again")]}], "messages", 1, "assistant"),
    ("sft", "text", [{"text": [user("Hi")]}], "text", 1, "takes plain text"),
    (
        "sft",
        "prompt-completion",
        [{"prompt": "Hi", "completion": " yo"}, {"prompt": [user("Hi")], "completion": " yo"}],
        "prompt",
        2,
        "keep one shape",
    ),
    (
        "sft",
        "prompt-completion",
        [{"prompt": [user("Hi")], "completion": "Yo"}],
        "prompt",
        1,
        "mixes shapes",
    ),
    ("rm", "preference", [{"chosen": user("A"), "rejected": "B"}], "chosen", 1, "single mapping"),
    ("rm", "preference", [{"chosen": "A", "rejected": None}], "rejected", 1, "null"),
    ("rm", "preference", [{"chosen": "A", "rejected": 3}], "rejected", 1, "holds a int"),
    ("rm", "ranking", [{"prompt": "Q", "responses": ["only one"]}], "responses", 1, "two"),
    (
        "rm",
        "ranking",
        [{"prompt": "Q", "responses": ["a", [assistant("b")]]}],
        "responses",
        1,
        "same shape",
    ),
    ("rm", "rating", [{"prompt": "Q", "response": [assistant("A")], "score": 1}], "prompt", 1, ""),
    ("ppo", "prompt", [{"prompt": {"role": "user", "content": "Q"}}], "prompt", 1, "wrap"),
]


@pytest.mark.parametrize(("stage", "data_format", "rows", "column", "row", "words"), BAD_SHAPES)
def test_wrong_shapes_name_file_column_and_row(
    stage, data_format, rows, column, row, words, tmp_path
) -> None:
    with pytest.raises(DataError) as raised:
        check_shapes(table(rows, tmp_path), stage, data_format, ORIGIN)
    message = str(raised.value)
    assert message.startswith(f"{ORIGIN}: {column}: row {row} ")
    assert words in message
    assert "\n" not in message


def test_preferences_keep_their_shape_and_prompt_only_when_given(tmp_path) -> None:
    implicit = [
        {"chosen": [user("Q"), assistant("good")], "rejected": [user("Q"), assistant("bad")]}
    ]
    pairs = preference_pairs(table(implicit, tmp_path), "preference", ORIGIN)
    assert pairs.column_names == ["chosen", "rejected"]
    assert pairs[0]["chosen"] == [user("Q"), assistant("good")]
    explicit = [{"prompt": "Q", "chosen": " good", "rejected": " bad", "id": 7}]
    pairs = preference_pairs(datasets.Dataset.from_list(explicit), "preference", ORIGIN)
    assert pairs.column_names == ["prompt", "chosen", "rejected"]


def test_conversational_rankings_become_every_ordered_pair(tmp_path) -> None:
    answers = [[assistant("best")], [assistant("middle")], [assistant("worst")]]
    ranked = table([{"prompt": [user("Q")], "responses": answers}], tmp_path)
    pairs = preference_pairs(ranked, "ranking", ORIGIN)
    assert pairs.column_names == ["prompt", "chosen", "rejected"]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("best", "middle"),
        ("best", "worst"),
        ("middle", "worst"),
    ]
    assert all(p["prompt"] == [user("Q")] for p in pairs)
    # Without a prompt column the prompt stays implicit: no empty prompt is invented.
    plain = ranking_to_pairs(datasets.Dataset.from_list([{"responses": ["a", "b"]}]), ORIGIN)
    assert plain.column_names == ["chosen", "rejected"]


def test_ratings_keep_prompt_and_response_as_they_are(tmp_path) -> None:
    rows = [{"prompt": [user("Q")], "response": [assistant("A")], "score": 2, "extra": "x"}]
    rated = rating_texts(table(rows, tmp_path), ORIGIN)
    assert sorted(rated.column_names) == ["prompt", "response", "score"]
    assert rated[0]["prompt"] == [user("Q")] and rated[0]["response"] == [assistant("A")]
    assert isinstance(rated[0]["score"], float) and rated[0]["score"] == 2.0
    text = rating_texts(datasets.Dataset.from_list([{"text": "t", "score": "1.5"}]), ORIGIN)
    assert text.column_names == ["text", "score"] and text[0]["score"] == 1.5
    with pytest.raises(DataError, match=r"score: row 2 has score 'high', not a number"):
        rating_texts(
            datasets.Dataset.from_list(
                [{"text": "t", "score": "1"}, {"text": "u", "score": "high"}]
            ),
            ORIGIN,
        )
    with pytest.raises(DataError, match="'prompt' and 'response'"):
        rating_texts(datasets.Dataset.from_list([{"prompt": "t", "score": 1}]), ORIGIN)


def test_last_assistant_turn_is_split_off_and_earlier_turns_alternate() -> None:
    conversation = [user("a"), assistant("b"), user("c"), assistant("d"), user("thanks")]
    prompt, completion = split_last_assistant_turn(conversation)
    assert prompt == [user("a"), assistant("b"), user("c")]
    assert completion == [assistant("d")]
    assert split_last_assistant_turn([user("a")]) == ([user("a")], [])
    converted = sft_prompt_completion(datasets.Dataset.from_list(CAPYBARA), ORIGIN)
    assert converted.column_names == ["prompt", "completion"]
    assert converted[0]["prompt"][-1] == user("How are you?")
    assert converted[1]["completion"] == [assistant("4")]
    with pytest.raises(DataError, match="row 1 starts with the assistant turn"):
        sft_prompt_completion(datasets.Dataset.from_list([{"messages": [assistant("x")]}]), ORIGIN)


def test_message_validator_is_public_and_names_the_message() -> None:
    check_messages([user("a"), assistant("b")], where=ORIGIN, column="chosen", row=4)
    with pytest.raises(DataError, match=r"chosen: row 4 message 2 is a str"):
        check_messages([user("a"), "b"], where=ORIGIN, column="chosen", row=4)


def test_templates_decide_whether_assistant_turns_can_be_masked(tiny_tokenizer) -> None:
    from trl.chat_template_utils import get_training_chat_template

    # The tiny preset's template has no {% generation %} markers and TRL cannot patch it.
    assert "generation" in tiny_tokenizer.chat_template  # "add_generation_prompt" ...
    assert not assistant_masks_supported(tiny_tokenizer)  # ... yet no markers
    llama3 = Path(get_training_chat_template.__code__.co_filename).parent / "chat_templates"
    tiny_tokenizer.chat_template = (llama3 / "llama3.jinja").read_text()
    assert assistant_masks_supported(tiny_tokenizer)  # TRL ships a training version
    tiny_tokenizer.chat_template = (llama3 / "llama3_training.jinja").read_text()
    assert assistant_masks_supported(tiny_tokenizer)  # markers of its own


def test_conversations_need_a_chat_template(tiny_tokenizer) -> None:
    require_chat_template(tiny_tokenizer, "spec.model")
    tiny_tokenizer.chat_template = None
    with pytest.raises(ConfigError, match=r"^spec.model: the tokenizer has no chat template"):
        require_chat_template(tiny_tokenizer, "spec.model")


@pytest.fixture
def tiny_tokenizer(preset_cache):
    from rlhf_trainer.presets import tiny_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path(str(preset_cache)))


@pytest.mark.parametrize(
    ("shape", "stage", "data_format", "columns", "kind"),
    [
        ("capybara", "sft", "messages", None, list),
        ("tldr", "sft", "prompt-completion", None, str),
        ("prompt_completion_conversational", "sft", "prompt-completion", None, list),
        ("ultrafeedback_binarized", "rm", "preference", ["chosen", "rejected"], list),
        ("preference_conversational", "rm", "preference", ["prompt", "chosen", "rejected"], list),
        ("preference", "rm", "preference", ["prompt", "chosen", "rejected"], str),
        ("ranking", "rm", "ranking", ["prompt", "chosen", "rejected"], str),
        ("ranking_conversational", "rm", "ranking", ["prompt", "chosen", "rejected"], list),
        ("rating", "rm", "rating", ["prompt", "response", "score"], str),
        ("rating_conversational", "rm", "rating", ["prompt", "response", "score"], list),
        ("ultrafeedback_prompt", "ppo", "prompt", None, list),
    ],
)
def test_hub_shapes_are_detected_checked_and_shaped(
    hub_file, shape, stage, data_format, columns, kind
) -> None:
    """The Hub datasets' exact column shapes: "auto" finds the format, the check passes,
    and the reward stage's shaping keeps strings as strings and messages as messages."""
    from rlhf_trainer.data import detect_format

    dataset = load_files(hub_file(shape, count=6), "auto")
    assert detect_format(dataset.column_names, stage, "auto", ORIGIN) == data_format
    check_shapes(dataset, stage, data_format, ORIGIN)
    if columns is None:
        return
    shaped = (
        rating_texts(dataset, ORIGIN)
        if data_format == "rating"
        else preference_pairs(dataset, data_format, ORIGIN)
    )
    assert shaped.column_names == columns
    assert all(isinstance(shaped[0][name], kind) for name in columns if name != "score")
