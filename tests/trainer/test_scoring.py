"""One scoring path: PPO reads a reward model's score exactly where, and in the form, the
reward model was trained and evaluated. CPU only, tiny models, no model hub."""

from __future__ import annotations

import copy
from pathlib import Path

import datasets
import pytest
import torch
from rlhf_trainer import reward, scoring
from rlhf_trainer.ppo_core import PPOHyperparameters, PPOLoop
from rlhf_trainer.presets import bpe_tokenizer, tiny_llama_config
from transformers import LlamaForCausalLM, LlamaForSequenceClassification
from trl import RewardConfig, RewardTrainer

CORPUS = [
    f"{subject} {verb} {thing}."
    for subject in ("the cat", "a dog", "my friend", "the child")
    for verb in ("sees", "likes", "paints")
    for thing in ("the sun", "a red ball", "the river", "a song")
]
PROMPTS = ["the cat", "a dog", "my friend likes"]
RESPONSES = [" sees the sun.", " paints a red ball.", " the river."]
CONVERSATIONS = [[{"role": "user", "content": prompt}] for prompt in PROMPTS]


@pytest.fixture(autouse=True)
def single_cpu_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tokenizer_for(case: str):
    tokenizer = bpe_tokenizer(CORPUS, vocab_size=300 if case == "other-tokenizer" else 320)
    if case in ("pad-is-eos", "ratings", "conversational"):
        tokenizer.pad_token = tokenizer.eos_token  # Llama-3 / Mistral after load_tokenizer, Qwen
    return tokenizer


def random_reward_model(tokenizer, seed: int = 0) -> LlamaForSequenceClassification:
    """Untrained weights score every position differently: reading the score one token off
    changes it, which is what these tests must catch."""
    torch.manual_seed(seed)
    config = tiny_llama_config(tokenizer, num_labels=1, max_position_embeddings=64)
    config.pad_token_id = tokenizer.pad_token_id
    return LlamaForSequenceClassification(config).eval()


def trl_training_ids(tokenizer, prompts, responses) -> list[list[int]]:
    """What TRL's RewardTrainer itself would feed the model for these chosen responses."""
    arguments = RewardConfig(
        output_dir="unused", max_length=1024, report_to=[], use_cpu=True, bf16=False
    )
    rows = [
        {"prompt": p, "chosen": c, "rejected": c} for p, c in zip(prompts, responses, strict=True)
    ]
    prepared = RewardTrainer._prepare_dataset(
        None, datasets.Dataset.from_list(rows), tokenizer, arguments, "train"
    )
    return prepared["chosen_ids"]


def forward_score(model, ids: list[int]) -> float:
    """The model's score of one unpadded sequence: what a training forward computes."""
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def ppo_loop(policy_tokenizer, reward_model, reward_tokenizer, form, reward_prompts) -> PPOLoop:
    torch.manual_seed(1)
    policy = LlamaForCausalLM(tiny_llama_config(policy_tokenizer, max_position_embeddings=64))
    value_model = LlamaForSequenceClassification(
        tiny_llama_config(policy_tokenizer, num_labels=1, max_position_embeddings=64)
    )
    return PPOLoop(
        policy,
        copy.deepcopy(policy),
        value_model,
        reward_model,
        policy_tokenizer,
        [policy_tokenizer(text)["input_ids"] for text in PROMPTS],
        PPOHyperparameters(total_episodes=4, rollout_batch_size=4, response_length=8),
        reward_tokenizer=reward_tokenizer,
        reward_format=form,
        reward_prompts=reward_prompts,
    )


def ppo_reward(loop: PPOLoop, tokenizer, prompts, texts: list[str], chat: bool) -> torch.Tensor:
    """PPO's reward for responses as a rollout holds them: the policy's prompt ids (as the
    PPO stage encodes them), then the response's tokens in that context, the EOS, padding
    (the pad id is the EOS id when pad == EOS)."""
    from rlhf_trainer.ppo import encode_prompt

    eos = tokenizer.eos_token_id
    prompt_rows, response_rows = [], []
    for prompt, text in zip(prompts, texts, strict=True):
        prompt_ids = encode_prompt(tokenizer, prompt, 512)
        if chat:
            response = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            whole = encode_prompt(tokenizer, prompt + text, 512)
            assert whole[: len(prompt_ids)] == prompt_ids
            response = whole[len(prompt_ids) :]
        prompt_rows.append(prompt_ids)
        response_rows.append([*response, eos])
    prompt_ids, prompt_mask = loop._left_padded(prompt_rows)
    width = max(len(row) for row in response_rows) + 2
    responses = torch.full((len(response_rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(response_rows), width), dtype=torch.bool)
    for index, row in enumerate(response_rows):
        responses[index, : len(row)] = torch.tensor(row)
        mask[index, : len(row)] = True
    return loop.reward_scores(prompts, prompt_ids, prompt_mask, responses, mask).cpu()


@pytest.mark.parametrize(
    "case", ["pad-is-eos", "pad-is-not-eos", "ratings", "conversational", "other-tokenizer"]
)
def test_ppo_scores_a_response_as_the_reward_model_was_trained_and_evaluated(case: str) -> None:
    policy_tokenizer = tokenizer_for("pad-is-eos" if case == "other-tokenizer" else case)
    reward_tokenizer = tokenizer_for(case) if case == "other-tokenizer" else policy_tokenizer
    if case == "other-tokenizer":
        assert reward_tokenizer.get_vocab() != policy_tokenizer.get_vocab()
    conversational = case == "conversational"
    ratings = case == "ratings"
    form = scoring.format_for_training(reward_tokenizer, conversational, ratings, 64)
    prompts = CONVERSATIONS if conversational else PROMPTS
    responses = (
        [[{"role": "assistant", "content": text.strip()}] for text in RESPONSES]
        if conversational
        else RESPONSES
    )
    model = random_reward_model(reward_tokenizer)

    # What the reward stage trains on (the ids its trainer receives).
    if ratings:
        pairs = zip(prompts, responses, strict=True)
        rows = [{"prompt": p, "response": r, "score": 1.0} for p, r in pairs]
        dataset = datasets.Dataset.from_list(rows)
        encoded = reward.encode_ratings(dataset, reward_tokenizer, form, "t")
        training_ids = encoded["input_ids"]
        assert all(ids[-1] != reward_tokenizer.eos_token_id for ids in training_ids)
    else:
        pairs = zip(prompts, responses, strict=True)
        rows = [{"prompt": p, "chosen": r, "rejected": r} for p, r in pairs]
        encoded = reward.encode_pairs(datasets.Dataset.from_list(rows), reward_tokenizer, form, "t")
        training_ids = encoded["chosen_ids"]
        # ...which is exactly what TRL's RewardTrainer would have built itself.
        assert training_ids == trl_training_ids(reward_tokenizer, prompts, responses)
    trained = torch.tensor([forward_score(model, ids) for ids in training_ids])

    # The reward stage's own evaluation (batched, padded).
    evaluated = scoring.RewardScorer(model, reward_tokenizer, form).score(prompts, responses)
    torch.testing.assert_close(evaluated, trained, atol=1e-5, rtol=0)

    # PPO's reward for the same (prompt, response) sampled by the policy.
    loop = ppo_loop(policy_tokenizer, model, reward_tokenizer, form, prompts)
    texts = [text.strip() for text in RESPONSES] if conversational else RESPONSES
    ppo_scores = ppo_reward(loop, policy_tokenizer, prompts, texts, conversational)
    torch.testing.assert_close(ppo_scores, trained, atol=1e-5, rtol=0)


def test_a_tokenizer_without_eos_scores_its_own_sep_terminated_encoding() -> None:
    """BERT-style: no EOS to append (TRL's add-EOS step crashes on it), [CLS] ... [SEP] as
    the tokenizer writes it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({word for sentence in CORPUS for word in sentence.replace(".", " .").split()})
    vocabulary = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]",
    )  # fmt: skip
    assert tokenizer.eos_token is None
    form = scoring.format_for_training(tokenizer, conversational=False, ratings=False, max_length=8)
    assert form.append_eos is False
    ids = scoring.encode(tokenizer, form, "the cat", " sees the sun.")
    assert ids == tokenizer("the cat sees the sun.")["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3
    long = scoring.encode(tokenizer, form, "the cat sees the sun .", " a dog likes a song .")
    assert len(long) == 8 and long[0] == 2 and long[-1] == 3  # [CLS] kept, the start dropped


def test_the_scoring_form_travels_with_the_model_and_defaults_sensibly(tmp_path: Path) -> None:
    tokenizer = bpe_tokenizer(CORPUS, vocab_size=320)
    saved = scoring.ScoringFormat(conversational=False, append_eos=False, max_length=32)
    saved.save(tmp_path)
    assert scoring.read_format(tmp_path, tokenizer, 1024) == saved
    # A reward model trained elsewhere: conversational when its tokenizer has a template...
    assert scoring.read_format(tmp_path / "absent", tokenizer, 99) == scoring.ScoringFormat(
        conversational=True, append_eos=False, max_length=99
    )
    # ...else plain text with EOS appended, as TRL trains it.
    plain = bpe_tokenizer(CORPUS, vocab_size=320, chat=False)
    assert scoring.read_format(None, plain, 99) == scoring.ScoringFormat(False, True, 99)


# --------------------------------------------------------------------------------------
# The same on the model families users bring (tests/trainer/families.py)
# --------------------------------------------------------------------------------------


def family_tokenizer(family: str):
    """The family's tokenizer as ``models.load_tokenizer`` leaves it (pad = EOS when the
    family has no pad token: Llama-3, Mistral; Qwen2.5 ships pad = EOS)."""
    from tests.trainer.families import TOKENIZERS

    tokenizer = TOKENIZERS[family]()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def family_reward_model(family: str, tokenizer):
    from transformers import AutoModelForSequenceClassification

    from tests.trainer.families import model_config

    torch.manual_seed(0)
    config = model_config(family, tokenizer)
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    return AutoModelForSequenceClassification.from_config(config).eval()


@pytest.mark.parametrize(
    ("family", "conversational"),
    [
        *(
            (family, chat)
            for family in ("llama3", "qwen2.5", "mistral", "gemma")
            for chat in (0, 1)
        ),
        ("bert", 0),
    ],
)
def test_ppo_scores_as_each_family_was_trained(family: str, conversational: int) -> None:
    reward_tokenizer = family_tokenizer(family)
    policy_tokenizer = family_tokenizer("qwen2.5" if family == "bert" else family)
    model = family_reward_model(family, reward_tokenizer)
    form = scoring.format_for_training(reward_tokenizer, bool(conversational), False, 256)
    prompts = CONVERSATIONS if conversational else PROMPTS
    texts = [text.strip() for text in RESPONSES] if conversational else RESPONSES
    responses = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts

    pairs = zip(prompts, responses, strict=True)
    rows = [{"prompt": p, "chosen": r, "rejected": r} for p, r in pairs]
    training_ids = reward.encode_pairs(
        datasets.Dataset.from_list(rows), reward_tokenizer, form, "t"
    )
    training_ids = training_ids["chosen_ids"]
    if reward_tokenizer.eos_token is not None:  # TRL cannot prepare data without an EOS
        assert training_ids == trl_training_ids(reward_tokenizer, prompts, responses)
    trained = torch.tensor([forward_score(model, ids) for ids in training_ids])

    loop = ppo_loop(policy_tokenizer, model, reward_tokenizer, form, prompts)
    scores = ppo_reward(loop, policy_tokenizer, prompts, texts, bool(conversational))
    torch.testing.assert_close(scores, trained, atol=1e-5, rtol=0)
