"""The whole chain on the tiny preset: SFT -> reward model -> PPO raises the reward."""

from __future__ import annotations

import json
import math

import datasets
import pytest
import torch
from rlhf_trainer import ppo, reward, sft
from rlhf_trainer.data import prompt_texts
from rlhf_trainer.errors import ConfigError, DataError
from rlhf_trainer.lifecycle import run_stage
from rlhf_trainer.presets import bpe_tokenizer

from tests.trainer.conftest import CPU, job_manifest, summary


def tiny_model_with_pad_as_eos(cache, folder):
    """The tiny preset as Llama-3 / Mistral (after load_tokenizer) and Qwen2.5 ship: the pad
    token is the EOS token."""
    import shutil

    from rlhf_trainer.presets import tiny_model_path
    from transformers import AutoTokenizer

    shutil.copytree(tiny_model_path(str(cache)), folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("padding", ["own-pad-token", "pad-is-eos"])
def test_ppo_raises_the_reward_model_score_and_beats_the_sft_policy(
    write_config, preset_cache, tmp_path, padding: str
) -> None:
    """With pad == EOS the reward used to be read at a token the reward model never scored
    (reward -0.21 -> -0.21, KL 0.00): the chain must learn with either padding."""
    model, inputs = {"preset": "tiny"}, {}
    if padding == "pad-is-eos":
        model = {"pvc": {"claimName": "models", "path": "tiny"}}
        inputs = {"model": str(tiny_model_with_pad_as_eos(preset_cache, tmp_path / "tiny"))}
    sft_config, sft_output = write_config(
        job_manifest(
            "SFTJob",
            "sft",
            {
                **CPU,
                "model": model,
                "dataset": {"preset": "tiny"},
                "training": {
                    "maxSteps": 300,
                    "learningRate": 3e-3,
                    "batchSize": 16,
                    "maxLength": 64,
                },
                "generation": {"samples": 0},
            },
        ),
        inputs=inputs,
        name="sft",
    )
    assert run_stage("sft", sft_config, sft.train) == 0
    rm_config, rm_output = write_config(
        job_manifest(
            "RewardModelJob",
            "rm",
            {
                **CPU,
                "model": {"fromJob": {"name": "sft"}},
                "dataset": {"preset": "tiny", "evalFraction": 0.2},
                "training": {"maxSteps": 60, "learningRate": 1e-3, "batchSize": 8, "maxLength": 64},
            },
        ),
        inputs={"model": str(sft_output / "model")},
        name="rm",
    )
    assert run_stage("rm", rm_config, reward.train) == 0
    assert summary(rm_output)["metrics"]["eval_accuracy"] >= 0.9

    ppo_config, ppo_output = write_config(
        job_manifest(
            "PPOJob",
            "ppo",
            {
                **CPU,
                "policy": {"fromJob": {"name": "sft"}},
                "rewardModel": {"fromJob": {"name": "rm"}},
                "dataset": {"preset": "tiny"},
                "training": {"learningRate": 3e-4, "batchSize": 8, "loggingSteps": 1},
                "ppo": {
                    "totalEpisodes": 512,
                    "rolloutBatchSize": 32,
                    "miniBatches": 2,
                    "epochs": 2,
                    "klCoef": 0.02,
                    "responseLength": 12,
                    "temperature": 1.0,
                    "evalPrompts": 32,
                },
                "runPolicy": {"checkpointInterval": 8},
            },
        ),
        inputs={"policy": str(sft_output / "model"), "rewardModel": str(rm_output / "model")},
        name="ppo",
    )
    assert run_stage("ppo", ppo_config, ppo.train) == 0
    result = summary(ppo_output)
    scores = [row["objective/scores"] for row in result["history"] if "objective/scores" in row]
    assert result["steps"] == 16 and len(scores) == 16
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.5
    metrics = result["metrics"]
    assert metrics["eval/reward_policy"] > metrics["eval/reward_reference"] + 0.5
    assert metrics["eval/win_rate"] > 0.5
    assert math.isfinite(metrics["objective/kl"]) and math.isfinite(metrics["eval/kl"])
    samples = [
        json.loads(line)
        for line in (ppo_output / "model" / "samples.jsonl").read_text().splitlines()
    ]
    assert len(samples) == 32 and {"policy", "reference"} <= set(samples[0])
    assert (ppo_output / "model" / "COMPLETE").exists()
    assert (ppo_output / "plots" / "objective_scores.svg").exists()
    # PPO's score of each response is the reward model's own (before: off by 0.54 on average,
    # up to 5.0, with pad == EOS).
    own = reward_model_scores(rm_output / "model", samples)
    policy_scores = torch.tensor([row["policy_score"] for row in samples])
    torch.testing.assert_close(policy_scores, own, atol=1e-4, rtol=0)


def reward_model_scores(folder, samples: list[dict]) -> torch.Tensor:
    """The reward model's own scores of (prompt, policy response), fed as it was trained."""
    from rlhf_trainer import scoring
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    scorer = scoring.RewardScorer(model, tokenizer, scoring.read_format(folder, tokenizer, 64))
    return scorer.score([row["prompt"] for row in samples], [row["policy"] for row in samples])


# --------------------------------------------------------------------------------------
# Prompts, stop tokens and refusals (no training)
# --------------------------------------------------------------------------------------

LLAMA_LIKE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def bos_tokenizer():
    """A tokenizer that writes BOS itself (as Llama, Mistral and Gemma do), with a chat
    template that writes BOS too and ends assistant turns with <|end|>."""
    from tokenizers import processors

    tokenizer = bpe_tokenizer([f"the cat sees the sun number {n}." for n in range(50)], 290)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)]
    )
    tokenizer.chat_template = LLAMA_LIKE_TEMPLATE
    return tokenizer


def test_prompts_keep_one_bos_and_lose_tokens_from_the_left() -> None:
    tokenizer = bos_tokenizer()
    bos = tokenizer.bos_token_id
    text = ppo.encode_prompt(tokenizer, "the cat sees", 64)
    assert text[0] == bos and text.count(bos) == 1
    assert text[1:] == tokenizer("the cat sees", add_special_tokens=False)["input_ids"]
    chat = ppo.encode_prompt(tokenizer, [{"role": "user", "content": "the cat"}], 64)
    assert chat.count(bos) == 1 and chat[0] == bos  # the template's BOS, not doubled
    assistant_header = tokenizer.convert_tokens_to_ids("<|assistant|>")
    long_chat = [{"role": "user", "content": "the cat sees the sun number 7. " * 10}]
    truncated = ppo.encode_prompt(tokenizer, long_chat, 16)
    assert len(truncated) == 16 and truncated[0] == bos and truncated[-1] == assistant_header


def test_messages_prompts_keep_earlier_assistant_turns_and_prompt_may_be_messages() -> None:
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "the cat?"},
        {"role": "assistant", "content": "sees the sun."},
    ]
    dataset = datasets.Dataset.from_list([{"messages": conversation}])
    assert prompt_texts(dataset, "messages", "d") == [conversation[:3]]
    prompts = datasets.Dataset.from_list([{"prompt": conversation[:1]}])  # ultrafeedback-prompt
    assert prompt_texts(prompts, "prompt", "d") == [conversation[:1]]
    for bad in ([{"content": "no role"}], 7):
        with pytest.raises(DataError, match="prompt"):
            prompt_texts(datasets.Dataset.from_list([{"prompt": bad}]), "prompt", "d")


def test_stop_tokens_are_every_eos_and_the_end_of_turn_token_unless_overridden() -> None:
    from transformers import GenerationConfig

    tokenizer = bos_tokenizer()
    end, eos = tokenizer.convert_tokens_to_ids("<|end|>"), tokenizer.eos_token_id
    extra = tokenizer.convert_tokens_to_ids("<|user|>")
    generation = GenerationConfig(eos_token_id=[extra, eos])
    assert ppo.stop_token_ids(tokenizer, generation, None) == [extra, eos, end]
    assert ppo.stop_token_ids(tokenizer, None, ["<|end|>"]) == [end]
    with pytest.raises(ConfigError, match="stopTokens"):
        ppo.stop_token_ids(tokenizer, None, ["<|im_end|>"])


def test_responses_stop_at_any_stop_token_and_count_as_ended() -> None:
    from rlhf_trainer.ppo_core import is_stop_token, truncate_after_stop_token

    responses = torch.tensor([[5, 7, 9, 9], [5, 8, 5, 5], [5, 5, 5, 5]])
    truncated, mask = truncate_after_stop_token(responses, [7, 8], pad_token_id=0)
    assert truncated.tolist() == [[5, 7, 0, 0], [5, 8, 0, 0], [5, 5, 5, 5]]
    ended = is_stop_token(truncated, [7, 8]).logical_and(mask).any(dim=1)
    assert ended.tolist() == [True, True, False]


def _ppo_manifest(**overrides) -> dict:
    spec = {
        **CPU,
        "policy": {"preset": "tiny"},
        "rewardModel": {"pvc": {"claimName": "models", "path": "reward"}},
        "dataset": {"preset": "tiny"},
        "ppo": {"totalEpisodes": 8, "rolloutBatchSize": 8, "responseLength": 4},
        **overrides,
    }
    return job_manifest("PPOJob", "refused", spec)


def _failure(config) -> str:
    return json.loads(config.with_name("run.termination").read_text())["message"]


def test_a_causal_lm_given_as_reward_model_is_refused(write_config, preset_cache) -> None:
    from rlhf_trainer.presets import tiny_model_path

    config, _ = write_config(
        _ppo_manifest(), inputs={"rewardModel": str(tiny_model_path(str(preset_cache)))}
    )
    assert run_stage("ppo", config, ppo.train) == 78
    assert "spec.rewardModel" in _failure(config) and "score head" in _failure(config)


def test_a_value_model_with_another_vocabulary_is_refused(write_config, tmp_path) -> None:
    from rlhf_trainer.presets import tiny_llama_config
    from transformers import LlamaForSequenceClassification

    other = bpe_tokenizer(["a dog likes a song."] * 20, 280)
    LlamaForSequenceClassification(tiny_llama_config(other, num_labels=1)).save_pretrained(
        tmp_path / "reward"
    )
    other.save_pretrained(tmp_path / "reward")
    config, _ = write_config(_ppo_manifest(), inputs={"rewardModel": str(tmp_path / "reward")})
    assert run_stage("ppo", config, ppo.train) == 78
    assert "spec.rewardModel" in _failure(config) and "spec.valueModel" in _failure(config)


def test_grpo_loads_no_value_model(write_config, tmp_path) -> None:
    """The reward model that gae refuses (its vocabulary is not the policy's, so it cannot
    start the value model) is fine for grpo: no value model is loaded, the run completes and
    its checkpoints hold the policy alone."""
    from rlhf_trainer.presets import tiny_llama_config
    from transformers import LlamaForSequenceClassification

    other = bpe_tokenizer(["a dog likes a song."] * 20, 280)
    LlamaForSequenceClassification(tiny_llama_config(other, num_labels=1)).save_pretrained(
        tmp_path / "reward"
    )
    other.save_pretrained(tmp_path / "reward")
    manifest = _ppo_manifest(
        ppo={
            "advantageEstimator": "grpo",
            "samplesPerPrompt": 4,
            "totalEpisodes": 16,
            "rolloutBatchSize": 8,
            "responseLength": 4,
            "evalPrompts": 4,
        },
        runPolicy={"checkpointInterval": 1},
    )
    config, output = write_config(manifest, inputs={"rewardModel": str(tmp_path / "reward")})
    assert run_stage("ppo", config, ppo.train) == 0
    metrics = summary(output)["metrics"]
    assert "loss/value_avg" not in metrics and "loss/kl_avg" in metrics
    assert 0.0 <= metrics["objective/frac_reward_zero_std"] <= 1.0
    checkpoints = sorted(output.glob("**/checkpoint-*"))
    assert checkpoints and all((c / "policy.safetensors").is_file() for c in checkpoints)
    assert not list(output.glob("**/value_model.safetensors"))


def test_the_estimator_settings_reach_the_loop() -> None:
    from rlhf_operator.api import PPOJobSpec

    spec = PPOJobSpec.model_validate(
        {
            **_ppo_manifest()["spec"],
            "ppo": {
                "advantageEstimator": "rloo",
                "samplesPerPrompt": 4,
                "rolloutBatchSize": 16,
                "klPenalty": "loss",
                "klEstimator": "k2",
                "normalizeAdvantages": True,
            },
        }
    )
    settings = ppo.hyperparameters_for(spec)
    assert settings.advantage_estimator == "rloo" and settings.samples_per_prompt == 4
    assert settings.kl_in_loss and settings.kl_estimator == "k2"
    assert settings.normalize_advantages and not settings.uses_value_model
    assert settings.prompts_per_rollout == 4
    settings.validate()


def test_prompts_of_the_wrong_shape_are_a_data_error(write_config, tmp_path, preset_cache) -> None:
    from rlhf_trainer.presets import tiny_model_path

    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": {"text": "hi"}}) + "\n")
    config, _ = write_config(
        _ppo_manifest(
            policy={"pvc": {"claimName": "models", "path": "policy"}},
            rewardModel={"pvc": {"claimName": "models", "path": "policy"}},
            valueModel={"pvc": {"claimName": "models", "path": "policy"}},
            dataset={"pvc": {"claimName": "data", "path": "prompts.jsonl"}},
        ),
        inputs={
            "policy": str(tiny_model_path(str(preset_cache))),
            "rewardModel": str(tmp_path / "reward-is-checked-later"),
            "valueModel": str(tiny_model_path(str(preset_cache))),
            "dataset": str(tmp_path / "prompts.jsonl"),
        },
    )
    assert run_stage("ppo", config, ppo.train) == 65  # read before any model is loaded
    failure = _failure(config)
    assert "prompts.jsonl: prompt: row 1" in failure
    assert "expected a string or a list of messages" in failure


def test_training_batch_size_is_the_micro_batch() -> None:
    from rlhf_operator.api import PPOJobSpec

    def settings(batch_size: int):
        spec = PPOJobSpec.model_validate(
            {
                **_ppo_manifest()["spec"],
                "training": {"batchSize": batch_size, "gradientAccumulationSteps": 3},
                "ppo": {"rolloutBatchSize": 64, "miniBatches": 2},
            }
        )
        return ppo.hyperparameters_for(spec)

    four = settings(4)
    assert (four.mini_batch_size, four.micro_batch_size) == (32, 4)
    assert four.gradient_accumulation_steps == 8  # follows from the sizes, not from the spec
    assert settings(64).micro_batch_size == 32  # never more than a mini-batch


FAMILY_STOPS = {
    "llama3": ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
    "qwen2.5": ("<|im_end|>", "<|endoftext|>"),
    "mistral": ("</s>",),
    "gemma": ("<eos>", "<end_of_turn>"),
}


@pytest.mark.parametrize("family", sorted(FAMILY_STOPS))
def test_each_family_stops_at_its_turn_end_and_keeps_its_bos(family: str, family_model) -> None:
    from transformers import AutoTokenizer, GenerationConfig

    folder = family_model(family)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    stops = ppo.stop_token_ids(tokenizer, GenerationConfig.from_pretrained(folder), None)
    assert sorted(stops) == sorted(tokenizer.convert_tokens_to_ids(list(FAMILY_STOPS[family])))

    bos = tokenizer.bos_token_id if family != "qwen2.5" else None
    text = ppo.encode_prompt(tokenizer, "Review of the movie:", 64)
    chat = ppo.encode_prompt(tokenizer, [{"role": "user", "content": "Review of the movie:"}], 512)
    for ids in (text, chat):
        if bos is None:
            assert tokenizer.bos_token_id is None or tokenizer.bos_token_id not in ids[:1]
        else:
            assert ids[0] == bos and ids.count(bos) == 1, (family, ids[:5])
    header = {"llama3": "<|end_header_id|>", "qwen2.5": "<|im_start|>assistant",
              "mistral": "[/INST]", "gemma": "<start_of_turn>model"}[family]  # fmt: skip
    assert header in tokenizer.decode(chat[-6:])  # the prompt ends with the assistant header
