"""Every stage on the model families and the dataset shapes users bring (issue 11).

``test_fixtures_follow_each_family`` proves the fixtures are faithful: the tiny models have the
special tokens, BOS/EOS/pad conventions, stop ids and chat templates of the released models.
"""

from __future__ import annotations

import json
import shutil
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
    assert tokenizer.bos_token is None and tokenizer.unk_token is None
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


# --- the conformance matrix: every stage on every family, on the Hub shapes ---------------

CLAIM = {"claimName": "claim", "path": "data"}
SMALL = {"maxSteps": 4, "learningRate": 1e-3, "batchSize": 4, "maxLength": 192, "loggingSteps": 1}
STAGES = {"sft": "SFTJob", "rm": "RewardModelJob", "ppo": "PPOJob"}
LABELS = ["negative", "positive"]
SENTENCE = {"text": "sentence"}  # sst2 names its text column "sentence"
CLASSIFY = {"task": "sequence-classification", "labels": LABELS}


def _stage_train(stage: str) -> Any:
    from rlhf_trainer import ppo, reward, sft

    return {"sft": sft.train, "rm": reward.train, "ppo": ppo.train}[stage]


def _run_stage(
    write_config: Any, stage: str, name: str, spec: dict[str, Any], inputs: dict[str, str]
) -> tuple[int, Path]:
    from rlhf_trainer.lifecycle import run_stage

    from tests.trainer.conftest import job_manifest

    config, output = write_config(job_manifest(STAGES[stage], name, spec), inputs, name=name)
    return run_stage(stage, config, _stage_train(stage)), output


def _pvc(path: str = "model") -> dict[str, Any]:
    return {"pvc": {"claimName": "claim", "path": path}}


def _dataset(fmt: str, **extra: Any) -> dict[str, Any]:
    return {"pvc": CLAIM, "format": fmt, **extra}


# (stage, Hub shape, dataset/spec settings) run on one family each, in turn, so every causal
# family meets several shapes while the file stays quick. The pipeline's own shapes
# (Capybara, ultrafeedback_binarized, ultrafeedback-prompt) run on every family below.
SHAPE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("sft", "prompt_completion_conversational", {"dataset": _dataset("prompt-completion")}),
    ("sft", "tldr", {"dataset": _dataset("prompt-completion")}),
    ("rm", "preference_conversational", {"dataset": _dataset("preference")}),
    ("rm", "preference", {"dataset": _dataset("preference")}),
    ("rm", "ranking_conversational", {"dataset": _dataset("ranking")}),
    ("rm", "ranking", {"dataset": _dataset("ranking")}),
    ("ppo", "capybara", {"dataset": _dataset("messages")}),  # mistral: strict alternation
    ("rm", "rating_conversational", {"dataset": _dataset("rating")}),
    ("rm", "rating", {"dataset": _dataset("rating")}),
    ("ppo", "tldr", {"dataset": _dataset("prompt")}),
    ("sft", "sst2", {**CLASSIFY, "dataset": _dataset("classification", columns=SENTENCE)}),
    ("ppo", "capybara", {"dataset": _dataset("messages")}),  # gemma: no system role
    ("sft", "imbalanced", {**CLASSIFY, "dataset": _dataset("auto")}),
]
PIPELINE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("sft", "capybara", {"dataset": _dataset("messages")}),
    ("rm", "ultrafeedback_binarized", {"dataset": _dataset("preference")}),
    ("ppo", "ultrafeedback_prompt", {"dataset": _dataset("prompt")}),
    ("sft", "imdb", {**CLASSIFY, "dataset": _dataset("auto")}),
]
ENCODER_CASES: list[tuple[str, str, dict[str, Any]]] = [
    *(case for case in PIPELINE_CASES + SHAPE_CASES if "task" in case[2]),
    ("rm", "preference", {"dataset": _dataset("preference")}),
    ("rm", "rating", {"dataset": _dataset("rating")}),
]
MATRIX = (
    [(family, *case) for family in CAUSAL_FAMILIES for case in PIPELINE_CASES]
    + [
        (CAUSAL_FAMILIES[index % len(CAUSAL_FAMILIES)], *case)
        for index, case in enumerate(SHAPE_CASES)
    ]
    + [(family, *case) for family in ("bert", "minilm") for case in ENCODER_CASES]
)


def _ppo_spec(settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "policy": _pvc("policy"),
        "rewardModel": _pvc("reward"),
        "training": {"learningRate": 1e-4, "batchSize": 4},
        "ppo": {
            "totalEpisodes": 16,
            "rolloutBatchSize": 8,
            "miniBatches": 2,
            "epochs": 1,
            "responseLength": 8,
            "evalPrompts": 4,
        },
        **settings,
    }


@pytest.mark.parametrize(
    ("family", "stage", "shape", "settings"),
    MATRIX,
    ids=[f"{family}-{stage}-{shape}" for family, stage, shape, _ in MATRIX],
)
def test_every_stage_runs_on_each_family(  # type: ignore[no-untyped-def]
    family: str,
    stage: str,
    shape: str,
    settings: dict[str, Any],
    family_model,
    hub_file,
    write_config,
) -> None:
    """A few steps of the stage on the family's model and the Hub-shaped file, both by path."""
    from tests.trainer.conftest import CPU, summary

    model = str(family_model(family))
    data = str(hub_file(shape, 24))
    if stage == "ppo":
        # PPO needs a reward model: a few steps of the reward stage on the same family.
        reward_spec = {
            **CPU,
            "model": _pvc(),
            "dataset": _dataset("preference"),
            "training": SMALL,
        }
        preferences = str(hub_file("ultrafeedback_binarized", 24))
        code, reward_output = _run_stage(
            write_config, "rm", "reward", reward_spec, {"model": model, "dataset": preferences}
        )
        assert code == 0, "the reward model for PPO did not train"
        spec = {**CPU, **_ppo_spec(settings)}
        inputs = {"policy": model, "rewardModel": str(reward_output / "model"), "dataset": data}
    else:
        spec = {**CPU, "model": _pvc(), "training": SMALL, **settings}
        if stage == "sft" and spec.get("task") != "sequence-classification":
            spec["generation"] = {"samples": 2, "maxNewTokens": 6}
        inputs = {"model": model, "dataset": data}
    code, output = _run_stage(write_config, stage, stage, spec, inputs)
    assert code == 0
    result = summary(output)
    assert result["phase"] == "Succeeded"
    assert (output / "model" / "COMPLETE").exists()


def test_a_real_pretrained_encoder_learns_preferences(  # type: ignore[no-untyped-def]
    family_model, hub_file, write_config
) -> None:
    """all-MiniLM-L6-v2 (a real pretrained BERT from its PyPI wheel, no EOS token), loaded by
    path as a pvc source, trained as a reward model with a new score head: it ranks held-out
    preference pairs well above chance (crashed before in TRL's add-EOS step)."""
    from tests.trainer.conftest import CPU, summary

    spec = {
        **CPU,
        "model": _pvc(),
        "dataset": _dataset("preference", evalFraction=0.25),
        "training": {"maxSteps": 24, "learningRate": 1e-4, "batchSize": 8, "maxLength": 48},
    }
    inputs = {"model": str(family_model("minilm")), "dataset": str(hub_file("preference", 64))}
    code, output = _run_stage(write_config, "rm", "minilm-rm", spec, inputs)
    assert code == 0
    metrics = summary(output)["metrics"]
    assert metrics["eval_accuracy"] >= 0.75, metrics  # 16 held-out pairs; chance is 0.5


def test_conversations_cut_away_by_max_length_are_a_clear_error(  # type: ignore[no-untyped-def]
    family_model, hub_file, write_config, capsys
) -> None:
    """Llama-3's template opens every conversation with a ~30-token system header, so at
    maxLength 64 no assistant turn of a Capybara conversation survives truncation and no
    example has a token to learn: a setting to fix (exit 65/78 naming maxLength), not a crash
    of the data loader (was: exit 1, "num_samples should be a positive integer value")."""
    from rlhf_trainer.errors import EXIT_CONFIG_ERROR, EXIT_DATA_ERROR

    from tests.trainer.conftest import CPU

    spec = {
        **CPU,
        "model": _pvc(),
        "dataset": _dataset("messages"),
        "training": {**SMALL, "maxLength": 64},
        "generation": {"samples": 0},
    }
    inputs = {"model": str(family_model("llama3")), "dataset": str(hub_file("capybara", 24))}
    code, _ = _run_stage(write_config, "sft", "too-long", spec, inputs)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code in (EXIT_DATA_ERROR, EXIT_CONFIG_ERROR), error
    assert "maxLength" in error


# --- "Done when": examples/pipeline.yaml end to end on each family --------------------------

EXAMPLE = Path(__file__).parents[2] / "examples" / "pipeline.yaml"
# The Hub datasets the example names, and the local shape standing in for each.
HUB_STAND_INS = {
    "trl-lib/Capybara": "capybara",
    "trl-lib/ultrafeedback_binarized": "ultrafeedback_binarized",
    "trl-lib/ultrafeedback-prompt": "ultrafeedback_prompt",
}
# Steps and lengths cut for a CPU; every other setting is the example's.
CPU_TRAINING = {
    "SFTJob": {"maxSteps": 60, "learningRate": 3e-3, "batchSize": 8, "maxLength": 128},
    "RewardModelJob": {"maxSteps": 30, "learningRate": 3e-3, "batchSize": 8, "maxLength": 128},
    "PPOJob": {"learningRate": 3e-4, "batchSize": 8, "loggingSteps": 1},
}
CPU_PPO = {"totalEpisodes": 256, "rolloutBatchSize": 32, "responseLength": 12, "evalPrompts": 24}


def example_documents() -> dict[str, dict[str, Any]]:
    """The example's three documents by kind, as a user would apply them."""
    import yaml

    documents = [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]
    assert [doc["kind"] for doc in documents] == ["SFTJob", "RewardModelJob", "PPOJob"]
    return {doc["kind"]: doc for doc in documents}


def on_local_files(document: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The document with its Hub sources on a claim, CPU resources and short training.

    Returns the manifest and the Hub shape its dataset must have.
    """
    manifest = json.loads(json.dumps(document))
    spec = manifest["spec"]
    kind = manifest["kind"]
    shape = HUB_STAND_INS[spec["dataset"].pop("hub")["id"]]
    spec["dataset"]["pvc"] = {"claimName": "data", "path": shape}
    for slot in ("model", "policy", "rewardModel"):
        if "hub" in spec.get(slot, {}):
            spec[slot] = {"pvc": {"claimName": "models", "path": "base"}}
    spec["resources"] = {"gpusPerNode": 0}
    spec.pop("distributed", None)
    training = {k: v for k, v in spec.get("training", {}).items() if k != "epochs"}
    training["gradientAccumulationSteps"] = 1
    spec["training"] = {**training, **CPU_TRAINING[kind]}
    if kind == "SFTJob":
        spec["generation"] = {**spec.get("generation", {}), "samples": 4, "maxNewTokens": 12}
    if kind == "PPOJob":
        spec["ppo"] = {**spec["ppo"], **CPU_PPO}
        spec["dataset"]["evalFraction"] = 0.25
    return manifest, shape


@pytest.mark.parametrize("family", CAUSAL_FAMILIES)
def test_the_example_pipeline_runs_on_each_family(  # type: ignore[no-untyped-def]
    family: str, family_model, hub_file, write_config, tmp_path
) -> None:
    """SFT -> reward model -> PPO from examples/pipeline.yaml, the family standing in for Qwen.

    The datasets have the Hub shapes the example names (a few dozen rows); the reward model is
    evaluated on its own held-out ``test`` split, as the example's ``evalSplit: test`` asks.
    """
    from rlhf_trainer.lifecycle import run_stage

    from tests.trainer.conftest import first_logged, summary

    documents = example_documents()
    sft_manifest, sft_shape = on_local_files(documents["SFTJob"])
    rm_manifest, rm_shape = on_local_files(documents["RewardModelJob"])
    ppo_manifest, ppo_shape = on_local_files(documents["PPOJob"])
    assert rm_manifest["spec"]["dataset"]["evalSplit"] == "test"
    preferences = tmp_path / "preferences"
    (preferences / "test").mkdir(parents=True)
    shutil.copy(hub_file(rm_shape, 64, seed=0), preferences / "train.jsonl")
    shutil.copy(hub_file(rm_shape, 24, seed=1), preferences / "test" / "test.jsonl")

    sft_config, sft_output = write_config(
        sft_manifest,
        {"model": str(family_model(family)), "dataset": str(hub_file(sft_shape, 64))},
        name="sft",
    )
    assert run_stage("sft", sft_config, _stage_train("sft")) == 0
    sft_result = summary(sft_output)
    assert sft_result["phase"] == "Succeeded"
    assert sft_result["metrics"]["eval_loss"] < first_logged(sft_output, "loss")

    rm_config, rm_output = write_config(
        rm_manifest,
        {"model": str(sft_output / "model"), "dataset": str(preferences)},
        name="rm",
    )
    assert run_stage("rm", rm_config, _stage_train("rm")) == 0
    rm_result = summary(rm_output)
    assert rm_result["phase"] == "Succeeded"
    assert rm_result["metrics"]["eval_accuracy"] > 0.7  # held-out pairs; chance is 0.5

    ppo_config, ppo_output = write_config(
        ppo_manifest,
        {
            "policy": str(sft_output / "model"),
            "rewardModel": str(rm_output / "model"),
            "dataset": str(hub_file(ppo_shape, 96)),
        },
        name="ppo",
    )
    assert run_stage("ppo", ppo_config, _stage_train("ppo")) == 0
    ppo_result = summary(ppo_output)
    assert ppo_result["phase"] == "Succeeded"
    metrics = ppo_result["metrics"]
    scores = [row["objective/scores"] for row in ppo_result["history"] if "objective/scores" in row]
    print(
        f"{family}: SFT eval loss {sft_result['metrics']['eval_loss']:.3f},"
        f" RM held-out accuracy {rm_result['metrics']['eval_accuracy']:.3f},"
        f" PPO scores {scores[0]:.2f} -> {scores[-1]:.2f},"
        f" eval reward {metrics['eval/reward_reference']:.2f}"
        f" -> {metrics['eval/reward_policy']:.2f}, win rate {metrics['eval/win_rate']:.2f}"
    )
    # The policy moved towards what the reward model prefers, on held-out prompts.
    assert metrics["eval/reward_policy"] > metrics["eval/reward_reference"]
    assert metrics["eval/win_rate"] > 0.5
