"""How a reward model is fed, and scoring with it: one path for the reward stage's own
evaluation, its training data and PPO.

A reward model's score means something only in the form it was trained on. TRL's
RewardTrainer (1.16) trains on:

* plain text: ``tokenizer(prompt + response + eos_token)`` with the tokenizer's special
  tokens (BOS for Llama, CLS/SEP for BERT), EOS appended unless the text already ends
  with it;
* conversations: ``apply_chat_template(prompt_messages + response_messages)``, nothing
  appended (the template writes its own end-of-turn).

The sequence-classification head then pools the way the architecture does: the last
token that is not the pad id for decoder models (so when pad == EOS the appended EOS is
skipped and the last content token is read), [CLS] for BERT. ``encode`` builds exactly
these sequences (it is also what the reward stage trains on, so the two cannot drift) and
``score`` runs the model's own forward, so its own pooling decides where the score is read.

The reward stage writes the form next to the model (``scoring.json``); PPO reads it.
A reward model from the Hub or a claim without that file gets ``default_format``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCORING_FILE = "scoring.json"

Message = dict[str, Any]
Turns = str | list[Message]  # a prompt or response: text, or a list of chat messages


@dataclass(frozen=True)
class ScoringFormat:
    """How (prompt, response) pairs become token ids for a reward model."""

    conversational: bool
    """Apply the tokenizer's chat template (messages in, template's own end-of-turn)."""
    append_eos: bool
    """Plain text only: append the EOS token, as TRL's RewardTrainer does for pairs."""
    max_length: int | None = None
    """Longest sequence; longer ones lose tokens from the left (a leading BOS/CLS stays)."""

    def save(self, folder: Path) -> None:
        (Path(folder) / SCORING_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")


def read_format(folder: str | Path | None, tokenizer: Any, max_length: int) -> ScoringFormat:
    """The form a reward model was trained on: its ``scoring.json``, or ``default_format``."""
    if folder is not None:
        path = Path(folder) / SCORING_FILE
        if path.is_file():
            saved = json.loads(path.read_text())
            return ScoringFormat(
                conversational=bool(saved["conversational"]),
                append_eos=bool(saved["append_eos"]),
                max_length=saved.get("max_length") or max_length,
            )
    return default_format(tokenizer, max_length)


def default_format(tokenizer: Any, max_length: int) -> ScoringFormat:
    """For a reward model trained elsewhere: conversational when its tokenizer has a chat
    template (how chat reward models on the Hub are trained), else plain text with EOS
    appended when the tokenizer has one (TRL's convention; a BERT-style tokenizer ends
    with [SEP] by itself)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    return ScoringFormat(
        conversational=has_template,
        append_eos=not has_template and tokenizer.eos_token is not None,
        max_length=max_length,
    )


def format_for_training(
    tokenizer: Any, conversational: bool, ratings: bool, max_length: int
) -> ScoringFormat:
    """The form the reward stage trains on: TRL's for pairs (EOS appended to plain text when
    the tokenizer has one), no EOS for ratings (trained as plain regression)."""
    return ScoringFormat(
        conversational=conversational,
        append_eos=not conversational and not ratings and tokenizer.eos_token is not None,
        max_length=max_length,
    )


def is_conversation(value: Any) -> bool:
    """A list of {role, content} messages (TRL's conversational shape)."""
    return isinstance(value, list) and all(
        isinstance(message, dict) and "role" in message and "content" in message
        for message in value
    )


def as_messages(value: Turns, role: str) -> list[Message]:
    """Messages as they are, or text as one message of ``role``."""
    return list(value) if isinstance(value, list) else [{"role": role, "content": value}]


def as_text(value: Turns, tokenizer: Any, is_prompt: bool) -> str:
    """Text as it is, or messages rendered by the chat template (a prompt ends with the
    generation prompt, so prompt + response text reads as a finished turn)."""
    if isinstance(value, str):
        return value
    if not getattr(tokenizer, "chat_template", None):
        return "\n".join(str(message["content"]) for message in value)
    return tokenizer.apply_chat_template(
        value, tokenize=False, add_generation_prompt=is_prompt and value[-1]["role"] != "assistant"
    )


def encode(tokenizer: Any, form: ScoringFormat, prompt: Turns | None, response: Turns) -> list[int]:
    """Token ids of (prompt, response) in the form ``form`` names, as TRL's RewardTrainer
    builds them (see the module docstring)."""
    if form.conversational:
        messages = (as_messages(prompt, "user") if prompt else []) + as_messages(
            response, "assistant"
        )
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        return truncate_left(list(ids["input_ids"]), form.max_length, tokenizer)
    text = (as_text(prompt, tokenizer, True) if prompt else "") + as_text(
        response, tokenizer, False
    )
    eos = tokenizer.eos_token
    if form.append_eos and eos is not None and not text.endswith(eos):
        text += eos
    return truncate_left(list(tokenizer(text)["input_ids"]), form.max_length, tokenizer)


def truncate_left(ids: list[int], max_length: int | None, tokenizer: Any) -> list[int]:
    """At most ``max_length`` ids, dropped from the left so the end (where decoder reward
    models read the score) stays; a leading special token (BOS, CLS) is kept."""
    if max_length is None or len(ids) <= max_length:
        return ids
    special = set(getattr(tokenizer, "all_special_ids", []))
    head = ids[:1] if ids and ids[0] in special else []
    return head + ids[len(ids) - (max_length - len(head)) :]


def score(model: Any, pad_token_id: int, sequences: list[list[int]], batch_size: int) -> Any:
    """The model's score (first logit) of each sequence: right-padded batches through the
    model's own forward, so its own pooling picks the token. Returns a float tensor on CPU."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores: list[Any] = []
    try:
        with torch.no_grad():
            for start in range(0, len(sequences), batch_size):
                batch = sequences[start : start + batch_size]
                width = max(len(ids) for ids in batch)
                input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, ids in enumerate(batch):
                    input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[row, : len(ids)] = 1
                logits = model(
                    input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
                ).logits
                scores.append(logits[:, 0].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(scores) if scores else torch.zeros(0)


@dataclass
class RewardScorer:
    """A reward model with its tokenizer and the form it was trained on."""

    model: Any
    tokenizer: Any
    form: ScoringFormat
    batch_size: int = 8

    def encode(self, prompt: Turns | None, response: Turns) -> list[int]:
        return encode(self.tokenizer, self.form, prompt, response)

    def score(self, prompts: list[Turns | None], responses: list[Turns]) -> Any:
        """Scores of (prompt, response) pairs (a float tensor on CPU)."""
        sequences = [
            self.encode(prompt, response)
            for prompt, response in zip(prompts, responses, strict=True)
        ]
        return score(self.model, self.tokenizer.pad_token_id, sequences, self.batch_size)


def continuation(tokenizer: Any, prompt: list[int], response: list[int]) -> str:
    """The response's text as it reads after the prompt. Decoded alone, a SentencePiece
    response (Mistral, Gemma, Llama-2) loses the space its first token starts with, and
    "the cat" + "sees" would be re-encoded as "the catsees"."""
    head = tokenizer.decode(prompt, skip_special_tokens=True)
    whole = tokenizer.decode(prompt + response, skip_special_tokens=True)
    if whole.startswith(head):
        return whole[len(head) :]
    return tokenizer.decode(response, skip_special_tokens=True)


def response_texts(
    tokenizer: Any,
    prompt_ids: Any,
    prompt_mask: Any,
    responses: Any,
    response_mask: Any,
    conversational: bool,
) -> list[str]:
    """Sampled responses (padded token tensors) as the texts a reward model scores: each
    decoded in the context of its prompt, special and stop tokens dropped."""
    texts = []
    for row in range(responses.size(0)):
        text = continuation(
            tokenizer,
            prompt_ids[row][prompt_mask[row].bool()].tolist(),
            responses[row][response_mask[row].bool()].tolist(),
        )
        # Chat templates render a message's content without surrounding whitespace.
        texts.append(text.strip() if conversational else text)
    return texts
