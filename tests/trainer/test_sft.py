"""SFT on the tiny preset: the loss falls, classification beats chance, early stopping stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rlhf_trainer.data import Splits, sft_prompt_completion
from rlhf_trainer.lifecycle import run_stage
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


def test_distributed_strategies_map_to_transformers_arguments() -> None:
    from rlhf_trainer.hf import distributed_arguments

    assert distributed_arguments("ddp") == {}
    assert distributed_arguments("fsdp")["fsdp"] == "full_shard auto_wrap"
    zero3 = distributed_arguments("deepspeed-zero3")["deepspeed"]["zero_optimization"]
    assert zero3["stage"] == 3 and zero3["stage3_gather_16bit_weights_on_model_save"]
    assert distributed_arguments("deepspeed-zero2")["deepspeed"]["zero_optimization"]["stage"] == 2


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
