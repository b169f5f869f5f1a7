"""The built-in "tiny" model and datasets: made on the spot, no downloads.

They give an air-gapped cluster (and CI, and the demo) a real end-to-end run. The data
is a small review world where sentiment is learnable at every stage: SFT learns to
continue "Review of the hotel:" with reviews of both moods, the reward model learns
that people prefer positive reviews, and PPO moves the policy towards them.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

PRESET_VERSION = "1"
SUBJECTS = (
    "the movie",
    "the food",
    "the hotel",
    "the book",
    "the service",
    "the concert",
    "the game",
    "the coffee",
    "the park",
    "the museum",
    "the train",
    "the room",
)
POSITIVE = ("great", "wonderful", "lovely", "excellent", "amazing", "delightful", "superb", "fun")
NEGATIVE = ("awful", "terrible", "boring", "dreadful", "bad", "horrible", "dull", "poor")
LABELS = ("negative", "positive")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% if message['role'] != 'user' %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def prompt_for(subject: str) -> str:
    return f"Review of {subject}:"


def review(subject: str, first: str, second: str) -> str:
    return f" {subject} was {first} and {second}."


def _mood_words(rng: random.Random, positive: bool) -> tuple[str, str]:
    words = POSITIVE if positive else NEGATIVE
    first, second = rng.sample(words, 2)
    return first, second


def sentiment_score(text: str) -> float:
    """Positive minus negative words: the hidden preference behind the tiny datasets."""
    tokens = text.replace(".", " ").split()
    return float(sum(t in POSITIVE for t in tokens) - sum(t in NEGATIVE for t in tokens))


def tiny_records(stage: str, data_format: str, count: int, seed: int) -> list[dict[str, Any]]:
    """Rows of the tiny dataset for a stage in the given format."""
    rng = random.Random(f"{seed}-{stage}-{data_format}")
    rows: list[dict[str, Any]] = []
    for index in range(count):
        subject = SUBJECTS[index % len(SUBJECTS)]
        prompt = prompt_for(subject)
        positive = rng.random() < 0.5
        good = review(subject, *_mood_words(rng, True))
        bad = review(subject, *_mood_words(rng, False))
        mood = good if positive else bad
        if data_format in ("prompt-completion", "auto") and stage == "sft":
            rows.append({"prompt": prompt, "completion": mood})
        elif data_format == "messages" and stage in ("sft", "ppo"):
            messages = [{"role": "user", "content": prompt}]
            if stage == "sft":
                messages.append({"role": "assistant", "content": mood})
            rows.append({"messages": messages})
        elif data_format == "text":
            rows.append({"text": prompt + mood})
        elif data_format == "classification":
            rows.append({"text": mood.strip(), "label": LABELS[int(positive)]})
        elif data_format in ("preference", "auto") and stage in ("rm", "dpo"):
            rows.append({"prompt": prompt, "chosen": good, "rejected": bad})
        elif data_format == "ranking":
            mixed = review(subject, rng.choice(POSITIVE), rng.choice(NEGATIVE))
            rows.append({"prompt": prompt, "responses": [good, mixed, bad]})
        elif data_format == "rating":
            text = prompt + review(
                subject, rng.choice(POSITIVE + NEGATIVE), rng.choice(POSITIVE + NEGATIVE)
            )
            rows.append({"text": text, "score": sentiment_score(text)})
        elif data_format in ("prompt", "auto") and stage == "ppo":
            rows.append({"prompt": prompt})
        else:
            raise ValueError(f"the tiny preset has no {data_format!r} data for stage {stage}")
    return rows


def _corpus() -> list[str]:
    rng = random.Random(0)
    lines = []
    for subject in SUBJECTS:
        for _ in range(30):
            words = rng.sample(POSITIVE + NEGATIVE, 2)
            lines.append(prompt_for(subject) + review(subject, *words))
    return lines


def preset_cache(cache: str | None) -> Path:
    root = Path(cache) if cache else Path(tempfile.gettempdir()) / "rlhf-cache"
    return root / "presets"


def bpe_tokenizer(corpus: list[str], vocab_size: int = 400, chat: bool = True) -> Any:
    """A byte-level BPE tokenizer trained on ``corpus``, as a transformers tokenizer.

    Special tokens come first (<pad>, <s>, </s>, then the chat roles when ``chat``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    roles = ["<|user|>", "<|assistant|>", "<|system|>"] if chat else []
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", *roles],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=roles or None,
    )
    if chat:
        wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tiny_tokenizer(folder: Path) -> Any:
    """The tiny preset's tokenizer, trained on the review corpus and saved in ``folder``."""
    tokenizer = bpe_tokenizer(_corpus())
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_llama_config(tokenizer: Any, **overrides: Any) -> Any:
    """The tiny preset's architecture: 2 layers, hidden size 64, 4 heads."""
    from transformers import LlamaConfig

    settings: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 256,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": False,
    }
    return LlamaConfig(**{**settings, **overrides})


def tiny_model_path(cache: str | None) -> Path:
    """Folder of the tiny model (a 2-layer Llama causal LM and its tokenizer), built once.

    Reward and classification stages load it with a fresh classification head. Built in
    a temporary folder and renamed, so concurrent processes (several ranks) never see
    half a model.
    """
    import torch
    from transformers import LlamaForCausalLM

    folder = preset_cache(cache) / f"tiny-v{PRESET_VERSION}"
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    tokenizer = build_tiny_tokenizer(staging)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tokenizer)).save_pretrained(staging)
    try:
        os.rename(staging, folder)
    except OSError:  # another process won the race: theirs is complete, use it
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return folder


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
