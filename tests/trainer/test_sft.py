"""SFT on the tiny preset: the loss falls, classification beats chance, early stopping stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rlhf_trainer.data import Splits, sft_prompt_completion
from rlhf_trainer.errors import EXIT_CONFIG_ERROR
from rlhf_trainer.lifecycle import run_stage
from rlhf_trainer.presets import tiny_records
from rlhf_trainer.sft import train
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from tests.trainer.conftest import CPU, first_logged, job_manifest, summary
from tests.trainer.families import CAUSAL_FAMILIES


def test_causal_lm_learns_and_publishes_a_complete_model(write_config) -> None:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "evalFraction": 0.1},
        "training": {
            "maxSteps": 120,
            "learningRate": 3e-3,
            "batchSize": 16,
            "maxLength": 64,
            "loggingSteps": 5,
            "evalSteps": 60,
        },
        "generation": {"samples": 3, "maxNewTokens": 12, "temperature": 0},
        "runPolicy": {"checkpointInterval": 60},
    }
    config, output = write_config(job_manifest("SFTJob", "sft", spec))
    assert run_stage("sft", config, train) == 0
    result = summary(output)
    assert result["phase"] == "Succeeded" and result["steps"] == 120
    eval_loss = result["metrics"]["eval_loss"]
    assert eval_loss < 0.5 * first_logged(output, "loss")
    assert abs(result["metrics"]["eval_perplexity"] - 2.718281828**eval_loss) < 1e-3
    # The finished model is complete and reloads; the samples travel with it.
    model = output / "model"
    assert (model / "COMPLETE").exists() and (model / "config.json").exists()
    samples = [json.loads(line) for line in (model / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(s["prompt"].startswith("Review of") for s in samples)
    # Greedy decoding after training continues a review in the learnt form.
    assert any(" was " in s["completion"] for s in samples)
    assert (output / "report.html").exists() and (output / "plots" / "loss.svg").exists()
    termination = json.loads(config.with_name("run.termination").read_text())
    assert termination["keyMetric"].startswith("eval_loss=")


def test_candidates_for_labeling_are_in_the_ranking_format(write_config) -> None:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "evalFraction": 0.1, "format": "prompt-completion"},
        "training": {"maxSteps": 10, "learningRate": 3e-3, "batchSize": 8, "maxLength": 64},
        "generation": {
            "samples": 0,
            "maxNewTokens": 8,
            "candidates": {"perPrompt": 3, "maxPrompts": 5},
        },
    }
    config, output = write_config(job_manifest("SFTJob", "candidates", spec))
    assert run_stage("sft", config, train) == 0
    rows = [json.loads(line) for line in (output / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    assert all(set(row) == {"prompt", "responses"} and len(row["responses"]) == 3 for row in rows)


def test_classification_beats_chance_and_matches_sklearn(write_config) -> None:
    spec = {
        **CPU,
        "task": "sequence-classification",
        "labels": ["negative", "positive"],
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "format": "classification", "evalFraction": 0.2},
        "training": {
            "maxSteps": 80,
            "learningRate": 3e-3,
            "batchSize": 16,
            "maxLength": 32,
            "evalSteps": 40,
        },
    }
    config, output = write_config(job_manifest("SFTJob", "classify", spec))
    assert run_stage("sft", config, train) == 0
    metrics = summary(output)["metrics"]
    assert metrics["eval_accuracy"] > 0.9 and metrics["eval_f1_macro"] > 0.9
    rows = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    truth = [row["label"] for row in rows]
    guess = [row["prediction"] for row in rows]
    assert metrics["eval_accuracy"] == accuracy_score(truth, guess)
    assert abs(metrics["eval_f1_macro"] - f1_score(truth, guess, average="macro")) < 1e-9
    assert (
        abs(metrics["eval_precision_macro"] - precision_score(truth, guess, average="macro")) < 1e-9
    )
    assert abs(metrics["eval_recall_macro"] - recall_score(truth, guess, average="macro")) < 1e-9
    report = json.loads((output / "eval.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == len(rows)
    assert set(report["per_class"]) == {"negative", "positive"}


def test_early_stopping_stops_before_the_step_budget(write_config) -> None:
    spec = {
        **CPU,
        "task": "sequence-classification",
        "labels": ["negative", "positive"],
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "format": "classification", "evalFraction": 0.2},
        "training": {
            "maxSteps": 400,
            "learningRate": 3e-3,
            "batchSize": 16,
            "maxLength": 32,
            "evalSteps": 10,
        },
        # No evaluation can improve by 10 in accuracy: patience runs out after 1 + 2 evaluations.
        "earlyStopping": {"metric": "eval_accuracy", "patience": 2, "threshold": 10},
    }
    config, output = write_config(job_manifest("SFTJob", "early", spec))
    assert run_stage("sft", config, train) == 0
    assert summary(output)["steps"] == 30


def test_lora_adapters_are_merged_into_a_plain_model(write_config) -> None:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny"},
        "training": {"maxSteps": 20, "learningRate": 1e-2, "batchSize": 8, "maxLength": 64},
        "lora": {"r": 4, "alpha": 8},
        "generation": {"samples": 0},
    }
    config, output = write_config(job_manifest("SFTJob", "lora", spec))
    assert run_stage("sft", config, train) == 0
    assert (output / "model" / "model.safetensors").exists()
    assert not (output / "model" / "adapter_config.json").exists()
    summary_first = first_logged(output, "loss")
    assert summary(output)["metrics"]["train_loss"] < summary_first


def test_output_without_eval_reports_train_loss(write_config, tmp_path: Path) -> None:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "format": "text"},
        "training": {"maxSteps": 5, "batchSize": 8, "maxLength": 64},
        "generation": {"samples": 0},
    }
    config, output = write_config(job_manifest("SFTJob", "text", spec))
    assert run_stage("sft", config, train) == 0
    assert summary(output)["keyMetric"].startswith("train_loss=")


def test_packing_trains_on_packed_sequences(write_config) -> None:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "format": "text"},
        "training": {"maxSteps": 40, "learningRate": 3e-3, "batchSize": 4, "maxLength": 128},
        "packing": True,
        "generation": {"samples": 0},
    }
    config, output = write_config(job_manifest("SFTJob", "packed", spec))
    assert run_stage("sft", config, train) == 0
    assert summary(output)["metrics"]["train_loss"] < first_logged(output, "loss")
    # Packed batches hold several reviews per sequence: far more tokens per step.
    tokens = [row["num_tokens"] for row in summary(output)["history"] if "num_tokens" in row]
    assert tokens[-1] / 40 > 4 * 30


# --- conversational data ---------------------------------------------------------------


def _capybara_rows(count: int, seed: int = 0) -> list[dict]:
    """Multi-turn conversations shaped like trl-lib/Capybara, in the tiny review world."""
    import random

    from rlhf_trainer.presets import NEGATIVE, POSITIVE, SUBJECTS, prompt_for, review

    rng = random.Random(seed)
    rows = []
    for index in range(count):
        first, second = SUBJECTS[index % len(SUBJECTS)], rng.choice(SUBJECTS)
        words = POSITIVE if index % 2 else NEGATIVE
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": prompt_for(first)},
                    {"role": "assistant", "content": review(first, *rng.sample(words, 2))},
                    {"role": "user", "content": prompt_for(second)},
                    {"role": "assistant", "content": review(second, *rng.sample(words, 2))},
                ]
            }
        )
    return rows


def _write_jsonl_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


_write_rows = _write_jsonl_rows


def test_messages_with_default_completion_only_loss_learn(write_config, tmp_path, capsys) -> None:
    """Capybara-shaped messages with defaults (completionOnlyLoss true) on a template with no
    {% generation %} markers: a notice, then completion masking on the last answer (this
    crashed with TRL's "not training-compatible" error)."""
    data = _write_jsonl_rows(tmp_path / "chat.jsonl", _capybara_rows(96))
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"pvc": {"claimName": "data", "path": "chat.jsonl"}, "evalFraction": 0.1},
        "training": {
            "maxSteps": 40,
            "learningRate": 3e-3,
            "batchSize": 8,
            "maxLength": 96,
            "loggingSteps": 5,
        },
        "generation": {"samples": 2, "maxNewTokens": 10, "temperature": 0},
    }
    config, output = write_config(job_manifest("SFTJob", "chat", spec), {"dataset": str(data)})
    assert run_stage("sft", config, train) == 0
    out = capsys.readouterr().out
    assert out.count("rlhf-trainer: notice: the model's chat template cannot mark") == 1
    metrics = summary(output)["metrics"]
    assert metrics["eval_loss"] < 0.4 * first_logged(output, "loss")
    samples = [
        json.loads(line) for line in (output / "model" / "samples.jsonl").read_text().splitlines()
    ]
    # The prompt keeps the earlier answer and ends with the assistant header.
    assert all(s["prompt"].count("<|assistant|>") == 2 for s in samples)
    assert all(s["prompt"].endswith("<|assistant|>") for s in samples)


def test_conversational_prompt_completion_gives_conversational_candidates(
    write_config, tmp_path
) -> None:
    from rlhf_trainer.data import load_files, preference_pairs

    rows = [
        {"prompt": r["messages"][:3], "completion": r["messages"][3:]} for r in _capybara_rows(32)
    ]
    data = _write_jsonl_rows(tmp_path / "pc.jsonl", rows)
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"pvc": {"claimName": "data", "path": "pc.jsonl"}},
        "training": {"maxSteps": 4, "learningRate": 3e-3, "batchSize": 8, "maxLength": 96},
        "generation": {
            "samples": 0,
            "maxNewTokens": 6,
            "candidates": {"perPrompt": 2, "maxPrompts": 3},
        },
    }
    config, output = write_config(job_manifest("SFTJob", "pc", spec), {"dataset": str(data)})
    assert run_stage("sft", config, train) == 0
    candidates = load_files(output / "candidates.jsonl", "auto")
    assert candidates[0]["prompt"] == rows[0]["prompt"]
    assert candidates[0]["responses"][0][0]["role"] == "assistant"
    # Labelers reorder them; the reward stage reads them as conversational rankings.
    pairs = preference_pairs(candidates, "ranking", str(output / "candidates.jsonl"))
    assert len(pairs) == 3 and pairs[0]["prompt"] == rows[0]["prompt"]


@pytest.mark.parametrize("family", CAUSAL_FAMILIES)
def test_capybara_messages_learn_on_each_family(
    family, family_model, hub_file, write_config, capsys
) -> None:
    """The released chat templates have no {% generation %} markers: Gemma's has a TRL
    training version (assistant-only loss), the others fall back to completion masking."""
    from rlhf_trainer.chat import assistant_masks_supported
    from transformers import AutoTokenizer

    model = family_model(family)
    spec = {
        **CPU,
        "model": {"pvc": {"claimName": "models", "path": family}},
        "dataset": {"pvc": {"claimName": "data", "path": "capybara.jsonl"}, "evalFraction": 0.125},
        "training": {
            "maxSteps": 40,
            "learningRate": 5e-3,
            "batchSize": 8,
            "maxLength": 256,
            "loggingSteps": 2,
        },
        "generation": {"samples": 2, "maxNewTokens": 8, "temperature": 0},
    }
    inputs = {"model": str(model), "dataset": str(hub_file("capybara", count=64))}
    config, output = write_config(job_manifest("SFTJob", "chat", spec), inputs)
    assert run_stage("sft", config, train) == 0
    masked_by_trl = assistant_masks_supported(AutoTokenizer.from_pretrained(model))
    assert masked_by_trl == (family == "gemma")
    assert ("rlhf-trainer: notice:" in capsys.readouterr().out) != masked_by_trl
    first, final = first_logged(output, "loss"), summary(output)["metrics"]["eval_loss"]
    print(f"{family}: first loss {first:.3f}, eval loss {final:.3f}")
    assert final < first / 2.5
    # Sample prompts are multi-turn conversations: strict templates (Mistral, Gemma) rendered
    # them, so earlier assistant turns were kept and the turns alternate.
    samples = (output / "model" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 2


@pytest.mark.parametrize(("shape", "bos_from"), [("tldr", "tokenizer"), ("capybara", "template")])
def test_sample_prompts_hold_one_bos_as_in_training(
    family_model, hub_file, shape, bos_from
) -> None:
    """Plain prompts get the tokenizer's BOS (TRL tokenizes them so); chat-rendered prompts
    already hold the template's, and must not get a second one."""
    from types import SimpleNamespace

    import torch
    from rlhf_trainer.data import load_files
    from rlhf_trainer.sft import _samples
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = family_model("llama3")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder)
    seen: list[list[int]] = []

    def record(input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object) -> torch.Tensor:
        seen.extend(
            row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask, strict=True)
        )
        return torch.cat([input_ids, input_ids[:, -1:]], dim=1)

    model.generate = record
    data = load_files(hub_file(shape, count=4), "auto")
    data_format = "messages" if shape == "capybara" else "prompt-completion"
    generation = SimpleNamespace(samples=2, max_new_tokens=1, temperature=0.0, top_p=1.0)
    context = SimpleNamespace(
        spec=SimpleNamespace(generation=generation, training=SimpleNamespace(seed=0))
    )
    _samples(context, model, tokenizer, Splits(data, None, data_format, "data"))
    assert len(seen) == 2
    assert all(
        ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1 for ids in seen
    )


@pytest.mark.parametrize(
    ("family", "shape"),
    [("mistral", "prompt_completion_conversational"), ("qwen2.5", "tldr"), ("llama3", "tldr")],
)
def test_prompt_completion_shapes_learn_on_families(
    family, shape, family_model, hub_file, write_config
) -> None:
    """prompt/completion as message lists (strict Mistral template) or as strings (Qwen2.5:
    pad = EOS; Llama-3: no pad) train with completion-only loss."""
    spec = {
        **CPU,
        "model": {"pvc": {"claimName": "models", "path": family}},
        "dataset": {"pvc": {"claimName": "data", "path": "pc.jsonl"}, "evalFraction": 0.125},
        "training": {"maxSteps": 30, "learningRate": 5e-3, "batchSize": 8, "maxLength": 128},
        "generation": {"samples": 1, "maxNewTokens": 4, "temperature": 0},
    }
    inputs = {"model": str(family_model(family)), "dataset": str(hub_file(shape, count=64))}
    config, output = write_config(job_manifest("SFTJob", "pc", spec), inputs)
    assert run_stage("sft", config, train) == 0
    first, final = first_logged(output, "loss"), summary(output)["metrics"]["eval_loss"]
    print(f"{family}/{shape}: first loss {first:.3f}, eval loss {final:.3f}")
    assert final < first / 2.5


def test_fallback_masking_learns_only_the_last_answer(family_model, hub_file, tmp_path) -> None:
    """On Mistral's template (no generation markers, no TRL training version) the tokens that
    carry the loss are exactly the last assistant turn and its end of turn."""
    from rlhf_trainer.data import load_files
    from rlhf_trainer.sft import _loss_masking
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    folder = family_model("mistral")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token
    conversations = load_files(hub_file("capybara", count=4), "auto")
    splits = Splits(conversations, None, "messages", "capybara.jsonl")
    masking = _loss_masking(splits, tokenizer, completion_only_loss=True)
    assert masking.to_prompt_completion and not masking.assistant_only
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(folder),
        args=SFTConfig(
            output_dir=str(tmp_path),
            max_length=256,
            completion_only_loss=True,
            report_to=[],
            use_cpu=True,
        ),
        train_dataset=sft_prompt_completion(conversations, "capybara.jsonl"),
        processing_class=tokenizer,
    )
    row = trainer.train_dataset[1]
    learnt = [label for label in row["labels"] if label != -100]
    last_answer = conversations[1]["messages"][-1]["content"]
    assert tokenizer.decode(learnt).strip() == f"{last_answer}</s>"
    earlier_answer = conversations[1]["messages"][1]["content"]
    assert earlier_answer in tokenizer.decode(row["input_ids"])


def test_examples_cut_away_by_max_length_are_counted_or_refused() -> None:
    from rlhf_trainer.errors import ConfigError
    from rlhf_trainer.sft import _truncation_notice

    assert _truncation_notice("training", 10, 10, 64) == ""
    assert "3 of 10 training examples" in _truncation_notice("training", 10, 7, 64)
    with pytest.raises(ConfigError, match=r"^spec.training.maxLength: maxLength 64 cuts every"):
        _truncation_notice("evaluation", 4, 0, 64)


def test_held_out_test_data_is_reported_apart_and_never_steers_training(write_config) -> None:
    spec = {
        **CPU,
        "task": "sequence-classification",
        "labels": ["negative", "positive"],
        "model": {"preset": "tiny"},
        "dataset": {
            "preset": "tiny",
            "format": "classification",
            "evalFraction": 0.2,
            "testFraction": 0.2,
        },
        "training": {
            "maxSteps": 40,
            "learningRate": 3e-3,
            "batchSize": 16,
            "maxLength": 32,
            "evalSteps": 20,
        },
        "earlyStopping": {"metric": "eval_f1_macro", "patience": 2},
    }
    config, output = write_config(job_manifest("SFTJob", "tested", spec))
    assert run_stage("sft", config, train) == 0
    result = summary(output)
    metrics = result["metrics"]
    # Evaluated during training on the evaluation data only; the test data once, at the end.
    during = [row for row in result["history"] if any(k.startswith("eval_") for k in row)]
    tested = [row for row in result["history"] if any(k.startswith("test_") for k in row)]
    assert len(during) >= 2
    assert not any(k.startswith("test_") for row in during[:-1] for k in row)
    assert {row["step"] for row in tested} == {result["steps"]}
    assert result["keyMetric"].startswith("test_accuracy=")
    # Its own predictions, disjoint from the evaluation data's, and figures that match them.
    rows = [json.loads(line) for line in (output / "test_predictions.jsonl").open()]
    evaluated = [json.loads(line) for line in (output / "predictions.jsonl").open()]
    assert len(rows) == len(evaluated) == 103  # 0.2 of 512 preset rows each, rounded up
    truth, guess = [r["label"] for r in rows], [r["prediction"] for r in rows]
    assert metrics["test_accuracy"] == accuracy_score(truth, guess)
    assert abs(metrics["test_f1_macro"] - f1_score(truth, guess, average="macro")) < 1e-9
    assert metrics["test_accuracy"] > 0.9 and "eval_accuracy" in metrics
    assert json.loads((output / "test.json").read_text())["f1_macro"] == metrics["test_f1_macro"]
    assert "Test data (held out" in (output / "report.html").read_text()


def test_causal_lm_reports_test_loss_and_perplexity(write_config) -> None:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "format": "text", "testFraction": 0.1},
        "training": {"maxSteps": 5, "learningRate": 3e-3, "batchSize": 8, "maxLength": 64},
        "generation": {"samples": 0},
    }
    config, output = write_config(job_manifest("SFTJob", "lm-tested", spec))
    assert run_stage("sft", config, train) == 0
    metrics = summary(output)["metrics"]
    assert "eval_loss" not in metrics and "test_mean_token_accuracy" in metrics
    assert not any("num_tokens" in name or "eval" in name for name in metrics)
    assert abs(metrics["test_perplexity"] - 2.718281828 ** metrics["test_loss"]) < 1e-3
    assert summary(output)["keyMetric"].startswith("test_loss=")


def _imbalanced_reviews(folder: Path) -> tuple[Path, Path]:
    """95% positive training reviews; a balanced evaluation file."""
    rows = tiny_records("sft", "classification", 800, 3)
    negative = [row for row in rows if row["label"] == "negative"]
    positive = [row for row in rows if row["label"] == "positive"]
    train_file = _write_rows(folder / "train.jsonl", positive[:190] + negative[:10])
    _write_rows(folder / "eval.jsonl", positive[200:240] + negative[100:140])
    return train_file, folder / "eval.jsonl"


def test_balanced_class_weights_raise_the_minority_recall(write_config, tmp_path) -> None:
    train_file, _ = _imbalanced_reviews(tmp_path)
    spec = {
        **CPU,
        "task": "sequence-classification",
        "labels": ["negative", "positive"],
        "model": {"preset": "tiny"},
        "dataset": {"pvc": {"claimName": "data", "path": "train.jsonl"}, "evalSplit": "eval.jsonl"},
        "training": {"maxSteps": 12, "learningRate": 3e-3, "batchSize": 16, "maxLength": 32},
    }
    recall = {}
    for name, weights in (("plain", None), ("balanced", {"balanced": True})):
        manifest = job_manifest("SFTJob", name, {**spec, "classWeights": weights})
        if weights is None:
            del manifest["spec"]["classWeights"]
        config, output = write_config(manifest, {"dataset": str(train_file)}, name=name)
        assert run_stage("sft", config, train) == 0
        report = json.loads((output / "eval.json").read_text())
        recall[name] = report["per_class"]["negative"]["recall"]
    assert recall["plain"] < 0.3
    assert recall["balanced"] > recall["plain"] + 0.5


def test_class_weights_match_scikit_learn_and_weight_the_loss() -> None:
    import numpy as np
    import torch
    from rlhf_operator.api.sft import ClassWeights
    from rlhf_trainer.sft import class_weights, weighted_cross_entropy
    from sklearn.utils.class_weight import compute_class_weight

    ids = [0] * 3 + [1] * 12 + [2] * 5
    balanced = class_weights(ClassWeights(balanced=True), ["a", "b", "c"], ids)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=np.array(ids))
    assert np.allclose(balanced, expected)
    explicit = class_weights(ClassWeights(weights={"c": 4.0}), ["a", "b", "c"], ids)
    assert explicit == [1.0, 1.0, 4.0]
    assert class_weights(None, ["a", "b"], ids) is None

    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    loss = weighted_cross_entropy([1.0, 2.0, 3.0])({"logits": logits}, labels)
    per_example = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.isclose(loss, (per_example * torch.tensor([1.0, 2, 3])[labels]).mean())


def _tiny_bert_classifier(folder: Path, labels: list[str]) -> Path:
    """A 1-layer BERT sequence classifier with a real WordPiece tokenizer (all-MiniLM-L6-v2's)."""
    import shutil

    import all_minilm_l6_v2
    from transformers import BertConfig, BertForSequenceClassification

    encoder = all_minilm_l6_v2.extract_model(str(folder / "minilm"))
    model_dir = folder / "classifier"
    model_dir.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(encoder / name, model_dir)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    BertForSequenceClassification(config).save_pretrained(model_dir)
    return model_dir


def test_a_classifier_with_another_number_of_labels_is_a_config_error(
    write_config, tmp_path, capsys
) -> None:
    model_dir = _tiny_bert_classifier(tmp_path, ["negative", "neutral", "positive"])
    data = _write_rows(tmp_path / "reviews.jsonl", tiny_records("sft", "classification", 16, 0))
    spec = {
        **CPU,
        "task": "sequence-classification",
        "labels": ["negative", "positive"],
        "model": {"pvc": {"claimName": "models", "path": "classifier"}},
        "dataset": {"pvc": {"claimName": "data", "path": "reviews.jsonl"}},
        "training": {"maxSteps": 2, "batchSize": 4, "maxLength": 32},
    }
    inputs = {"model": str(model_dir), "dataset": str(data)}
    config, _ = write_config(job_manifest("SFTJob", "heads", spec), inputs)
    assert run_stage("sft", config, train) == EXIT_CONFIG_ERROR
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "spec.labels names 2 classes" in error and "head for 3 labels" in error
    assert str(model_dir) in error and "base model" in error

    # The checkpoint's own three labels fit its head: it trains.
    three = {**spec, "labels": ["negative", "neutral", "positive"]}
    config, _ = write_config(job_manifest("SFTJob", "heads", three), inputs, name="fits")
    assert run_stage("sft", config, train) == 0
