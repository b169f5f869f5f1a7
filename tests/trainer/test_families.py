"""Every stage on the model families and the dataset shapes users bring (issue 11).

``test_fixtures_follow_each_family`` proves the fixtures are faithful: the tiny models have the
special tokens, BOS/EOS/pad conventions, stop ids and chat templates of the released models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.families import CAUSAL_FAMILIES, read_generation_eos
from tests.trainer.hub_shapes import SHAPES

CHAT = [
    {"role": "user", "content": "Review of the food:"},
    {"role": "assistant", "content": "the food was great and fun."},
]
SYSTEM = {"role": "system", "content": "Write reviews."}
USER_USER = [CHAT[0], {"role": "user", "content": "Review of the park:"}]


def _render(tokenizer: Any, messages: list[dict[str, str]], **options: Any) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **options)


def _token_ids(tokenizer: Any, *tokens: str) -> list[int]:
    vocabulary = tokenizer.get_vocab()
    assert all(token in vocabulary for token in tokens), tokens
    return [vocabulary[token] for token in tokens]


def _check_llama3(tokenizer: Any, folder: Path) -> None:
    bos, eot = _token_ids(tokenizer, "<|begin_of_text|>", "<|eot_id|>")
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|begin_of_text|>",
        "<|eot_id|>",
        None,
    )
    assert tokenizer("x").input_ids[0] == bos
    assert read_generation_eos(folder) == _token_ids(
        tokenizer, "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"
    )
    text = _render(tokenizer, CHAT, date_string="26 Jul 2024")
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nReview of the food:<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nthe food was great and fun.<|eot_id|>"
    )
    prompt = _render(tokenizer, CHAT[:1], add_generation_prompt=True)
    assert prompt.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    assert ids.count(bos) == 1 and ids[0] == bos and ids[-1] == eot


def _check_qwen(tokenizer: Any, folder: Path) -> None:
    endoftext, im_end = _token_ids(tokenizer, "<|endoftext|>", "<|im_end|>")
    assert tokenizer.bos_token is None
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == endoftext
    assert endoftext not in tokenizer("x").input_ids
    assert read_generation_eos(folder) == [im_end, endoftext]
    assert _render(tokenizer, CHAT) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful"
        " assistant.<|im_end|>\n<|im_start|>user\nReview of the food:<|im_end|>\n"
        "<|im_start|>assistant\nthe food was great and fun.<|im_end|>\n"
    )
    assert _render(tokenizer, [SYSTEM, *CHAT]).startswith(
        "<|im_start|>system\nWrite reviews.<|im_end|>\n<|im_start|>user\n"
    )
    prompt = _render(tokenizer, CHAT[:1], add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def _check_mistral(tokenizer: Any, folder: Path) -> None:
    bos, eos = _token_ids(tokenizer, "<s>", "</s>")
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", None)
    assert tokenizer("x").input_ids[0] == bos
    assert read_generation_eos(folder) == [eos]
    assert (
        _render(tokenizer, CHAT)
        == "<s>[INST] Review of the food:[/INST] the food was great and fun.</s>"
    )
    assert _render(tokenizer, [SYSTEM, *CHAT]).startswith("<s>[INST] Write reviews.\n\nReview of")
    with pytest.raises(Exception, match="must alternate user/assistant"):
        _render(tokenizer, USER_USER)
    ids = tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    assert ids.count(bos) == 1 and ids[-1] == eos


def _check_gemma(tokenizer: Any, folder: Path) -> None:
    bos, eos, pad, end_of_turn = _token_ids(tokenizer, "<bos>", "<eos>", "<pad>", "<end_of_turn>")
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        bos,
        eos,
        pad,
    )
    assert tokenizer("x").input_ids[0] == bos
    assert read_generation_eos(folder) == [eos, end_of_turn]
    assert _render(tokenizer, CHAT) == (
        "<bos><start_of_turn>user\nReview of the food:<end_of_turn>\n"
        "<start_of_turn>model\nthe food was great and fun.<end_of_turn>\n"
    )
    prompt = _render(tokenizer, CHAT[:1], add_generation_prompt=True)
    assert prompt.endswith("<end_of_turn>\n<start_of_turn>model\n")
    with pytest.raises(Exception, match="System role not supported"):
        _render(tokenizer, [SYSTEM, *CHAT])
    with pytest.raises(Exception, match="must alternate user/assistant"):
        _render(tokenizer, USER_USER)


def _check_encoder(tokenizer: Any, folder: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    assert tokenizer.eos_token is None and tokenizer.bos_token is None
    assert tokenizer.chat_template is None
    ids = tokenizer("the food was great").input_ids
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.pad_token == "[PAD]" and tokenizer.mask_token == "[MASK]"
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    assert model.config.model_type == "bert"
    logits = model(**tokenizer(["the food was great"], return_tensors="pt")).logits
    assert tuple(logits.shape) == (1, 2)


CHECKS = {
    "llama3": _check_llama3,
    "qwen2.5": _check_qwen,
    "mistral": _check_mistral,
    "gemma": _check_gemma,
    "bert": _check_encoder,
    "minilm": _check_encoder,
}
ARCHITECTURES = {
    "llama3": "LlamaForCausalLM",
    "qwen2.5": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
    "gemma": "Gemma2ForCausalLM",
    "bert": "BertModel",
    "minilm": "BertModel",
}


@pytest.mark.parametrize("family", list(CHECKS))
def test_fixtures_follow_each_family(family: str, family_model) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    folder = family_model(family)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [ARCHITECTURES[family]]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    CHECKS[family](tokenizer, folder)
    if family in CAUSAL_FAMILIES:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder)
        ids = tokenizer.apply_chat_template(
            CHAT, tokenize=True, return_dict=True, return_tensors="pt"
        )
        logits = model(input_ids=ids["input_ids"]).logits
        assert logits.shape[-1] >= len(tokenizer)
    if family == "minilm":  # the real pretrained encoder, not a stand-in
        assert config["hidden_size"] == 384 and config["vocab_size"] == 30522


EXPECTED_COLUMNS = {
    "capybara": {"source", "messages"},
    "ultrafeedback_binarized": {"chosen", "rejected", "score_chosen", "score_rejected"},
    "preference_conversational": {"prompt", "chosen", "rejected"},
    "preference": {"prompt", "chosen", "rejected"},
    "ranking": {"prompt", "responses"},
    "ranking_conversational": {"prompt", "responses"},
    "rating": {"prompt", "response", "score"},
    "rating_conversational": {"prompt", "response", "score"},
    "ultrafeedback_prompt": {"prompt"},
    "tldr": {"prompt", "completion"},
    "prompt_completion_conversational": {"prompt", "completion"},
    "imdb": {"text", "label"},
    "sst2": {"idx", "sentence", "label"},
    "imbalanced": {"text", "label"},
}


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and set(m) == {"role", "content"} for m in value)
    )


def test_hub_shapes_have_the_dataset_cards_columns(hub_file) -> None:  # type: ignore[no-untyped-def]
    assert set(SHAPES) == set(EXPECTED_COLUMNS)
    rows = {
        shape: [json.loads(line) for line in hub_file(shape, 20).read_text().splitlines()]
        for shape in SHAPES
    }
    for shape, columns in EXPECTED_COLUMNS.items():
        assert len(rows[shape]) == 20 and all(set(row) == columns for row in rows[shape]), shape
    capybara = rows["capybara"][1]["messages"]
    assert _is_messages(capybara) and len(capybara) >= 4
    assert [m["role"] for m in capybara] == ["user", "assistant"] * (len(capybara) // 2)
    binarized = rows["ultrafeedback_binarized"][0]
    assert binarized["chosen"][0] == binarized["rejected"][0]
    assert (
        binarized["chosen"][0]["role"] == "user" and binarized["chosen"][-1]["role"] == "assistant"
    )
    assert binarized["score_chosen"] > binarized["score_rejected"]
    for shape in (
        "preference_conversational",
        "ultrafeedback_prompt",
        "prompt_completion_conversational",
    ):
        assert [m["role"] for m in rows[shape][0]["prompt"]] == ["user"], shape
    assert all(_is_messages(r) for r in rows["ranking_conversational"][0]["responses"])
    assert all(
        isinstance(r["prompt"], str) for r in rows["tldr"] + rows["preference"] + rows["rating"]
    )
    assert {r["label"] for r in rows["imdb"]} == {0, 1} == {r["label"] for r in rows["sst2"]}
    positives = sum(r["label"] == "positive" for r in rows["imbalanced"])
    assert positives == 4  # one in five
