"""JSON Lines files with exactly the column shapes of the Hub datasets users train on.

The content is the tiny preset's review world (``rlhf_trainer.presets``), so a tiny model
learns it in about a hundred steps: positive reviews are preferred, ratings are the number of
positive minus negative words, labels are the mood. The shapes follow the dataset cards and
TRL's "Dataset formats" page:

========================================  ==================================================
``capybara``  (trl-lib/Capybara)           ``source``, ``messages``: multi-turn [{role, content}]
``ultrafeedback_binarized`` (trl-lib/...)  ``chosen``/``rejected``: message lists that start with
                                           the user turn (implicit prompt), ``score_chosen``,
                                           ``score_rejected``
``preference_conversational``              ``prompt`` [user], ``chosen``/``rejected`` [assistant]
``preference``                             ``prompt``, ``chosen``, ``rejected`` strings
``ranking`` / ``ranking_conversational``   ``prompt``, ``responses`` best first
``rating`` / ``rating_conversational``     ``prompt``, ``response``, ``score``
``ultrafeedback_prompt`` (trl-lib/...)     ``prompt``: [one user turn]
``tldr`` (trl-lib/tldr)                    ``prompt``, ``completion`` strings
``prompt_completion_conversational``       ``prompt`` [user], ``completion`` [assistant]
``imdb`` (stanfordnlp/imdb)                ``text``, ``label`` (int: 0 neg, 1 pos)
``sst2`` (stanfordnlp/sst2)                ``idx``, ``sentence``, ``label`` (int)
``imbalanced``                             ``text``, ``label`` (string), 1 positive in 5
========================================  ==================================================
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf_trainer.presets import (
    NEGATIVE,
    POSITIVE,
    SUBJECTS,
    prompt_for,
    review,
    sentiment_score,
)

Row = dict[str, Any]
Messages = list[dict[str, str]]


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def _mood(rng: random.Random, subject: str, positive: bool) -> str:
    """A review of ``subject`` without the leading space (chat turns are trimmed)."""
    words = POSITIVE if positive else NEGATIVE
    return review(subject, *rng.sample(words, 2)).strip()


def _mixed(rng: random.Random, subject: str) -> str:
    return review(subject, rng.choice(POSITIVE), rng.choice(NEGATIVE)).strip()


def _subject(index: int) -> str:
    return SUBJECTS[index % len(SUBJECTS)]


def capybara(count: int, seed: int = 0) -> list[Row]:
    """trl-lib/Capybara: two to three user/assistant exchanges per conversation."""
    rng = random.Random(f"capybara-{seed}")
    rows = []
    for index in range(count):
        messages: Messages = []
        for turn in range(2 + index % 2):
            subject = _subject(index + 5 * turn)
            messages.append(user(prompt_for(subject)))
            messages.append(assistant(_mood(rng, subject, rng.random() < 0.5)))
        rows.append({"source": "tiny-reviews", "messages": messages})
    return rows


def ultrafeedback_binarized(count: int, seed: int = 0) -> list[Row]:
    """trl-lib/ultrafeedback_binarized: the prompt is the shared first (user) turn."""
    rng = random.Random(f"ultrafeedback-binarized-{seed}")
    rows = []
    for index in range(count):
        subject = _subject(index)
        good, bad = _mood(rng, subject, True), _mood(rng, subject, False)
        rows.append(
            {
                "chosen": [user(prompt_for(subject)), assistant(good)],
                "rejected": [user(prompt_for(subject)), assistant(bad)],
                "score_chosen": 4.0 + sentiment_score(good) / 2,
                "score_rejected": 2.0 + sentiment_score(bad) / 2,
            }
        )
    return rows


def preference_conversational(count: int, seed: int = 0) -> list[Row]:
    """TRL's conversational preference with an explicit prompt."""
    rng = random.Random(f"preference-conversational-{seed}")
    return [
        {
            "prompt": [user(prompt_for(_subject(index)))],
            "chosen": [assistant(_mood(rng, _subject(index), True))],
            "rejected": [assistant(_mood(rng, _subject(index), False))],
        }
        for index in range(count)
    ]


def preference(count: int, seed: int = 0) -> list[Row]:
    """TRL's standard preference: prompt, chosen, rejected strings."""
    rng = random.Random(f"preference-{seed}")
    return [
        {
            "prompt": prompt_for(_subject(index)),
            "chosen": " " + _mood(rng, _subject(index), True),
            "rejected": " " + _mood(rng, _subject(index), False),
        }
        for index in range(count)
    ]


def ranking(count: int, seed: int = 0) -> list[Row]:
    """Prompt and responses, best first."""
    rng = random.Random(f"ranking-{seed}")
    rows = []
    for index in range(count):
        subject = _subject(index)
        responses = [_mood(rng, subject, True), _mixed(rng, subject), _mood(rng, subject, False)]
        rows.append({"prompt": prompt_for(subject), "responses": [" " + r for r in responses]})
    return rows


def ranking_conversational(count: int, seed: int = 0) -> list[Row]:
    rows = ranking(count, seed)
    return [
        {
            "prompt": [user(row["prompt"])],
            "responses": [[assistant(r.strip())] for r in row["responses"]],
        }
        for row in rows
    ]


def rating(count: int, seed: int = 0) -> list[Row]:
    """Prompt, one response and its score (positive minus negative words)."""
    rng = random.Random(f"rating-{seed}")
    rows = []
    for index in range(count):
        subject = _subject(index)
        words = POSITIVE + NEGATIVE
        response = review(subject, rng.choice(words), rng.choice(words))
        rows.append(
            {
                "prompt": prompt_for(subject),
                "response": response,
                "score": sentiment_score(response),
            }
        )
    return rows


def rating_conversational(count: int, seed: int = 0) -> list[Row]:
    return [
        {
            "prompt": [user(row["prompt"])],
            "response": [assistant(row["response"].strip())],
            "score": row["score"],
        }
        for row in rating(count, seed)
    ]


def ultrafeedback_prompt(count: int, seed: int = 0) -> list[Row]:
    """trl-lib/ultrafeedback-prompt: ``prompt`` is a list with one user message."""
    return [{"prompt": [user(prompt_for(_subject(index + seed)))]} for index in range(count)]


def tldr(count: int, seed: int = 0) -> list[Row]:
    """trl-lib/tldr: prompt and completion strings."""
    rng = random.Random(f"tldr-{seed}")
    return [
        {
            "prompt": prompt_for(_subject(index)),
            "completion": " " + _mood(rng, _subject(index), rng.random() < 0.5),
        }
        for index in range(count)
    ]


def prompt_completion_conversational(count: int, seed: int = 0) -> list[Row]:
    """TRL's conversational prompt-completion: [user] prompt, [assistant] completion."""
    return [
        {"prompt": [user(row["prompt"])], "completion": [assistant(row["completion"].strip())]}
        for row in tldr(count, seed)
    ]


def _labelled(count: int, seed: int, name: str, positive_share: float) -> list[tuple[str, int]]:
    rng = random.Random(f"{name}-{seed}")
    positives = round(count * positive_share)
    moods = [1] * positives + [0] * (count - positives)
    rng.shuffle(moods)
    return [(_mood(rng, _subject(index), bool(mood)), mood) for index, mood in enumerate(moods)]


def imdb(count: int, seed: int = 0) -> list[Row]:
    """stanfordnlp/imdb: ``text`` and an int ``label`` (0 negative, 1 positive)."""
    return [{"text": text, "label": label} for text, label in _labelled(count, seed, "imdb", 0.5)]


def sst2(count: int, seed: int = 0) -> list[Row]:
    """stanfordnlp/sst2: ``idx``, ``sentence`` and an int ``label``."""
    return [
        {"idx": index, "sentence": text, "label": label}
        for index, (text, label) in enumerate(_labelled(count, seed, "sst2", 0.5))
    ]


def imbalanced(count: int, seed: int = 0) -> list[Row]:
    """Classification with string labels where one review in five is positive."""
    names = ("negative", "positive")
    return [
        {"text": text, "label": names[label]}
        for text, label in _labelled(count, seed, "imbalanced", 0.2)
    ]


SHAPES: dict[str, Callable[[int, int], list[Row]]] = {
    "capybara": capybara,
    "ultrafeedback_binarized": ultrafeedback_binarized,
    "preference_conversational": preference_conversational,
    "preference": preference,
    "ranking": ranking,
    "ranking_conversational": ranking_conversational,
    "rating": rating,
    "rating_conversational": rating_conversational,
    "ultrafeedback_prompt": ultrafeedback_prompt,
    "tldr": tldr,
    "prompt_completion_conversational": prompt_completion_conversational,
    "imdb": imdb,
    "sst2": sst2,
    "imbalanced": imbalanced,
}


def write(shape: str, path: Path, count: int = 48, seed: int = 0) -> Path:
    """Write ``count`` rows of ``shape`` as JSON Lines to ``path``; returns ``path``."""
    rows = SHAPES[shape](count, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
