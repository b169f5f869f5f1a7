"""Conversations and chat templates, shared by every stage.

A conversation is TRL's conversational shape: a non-empty list of messages, each a mapping
with a string ``role`` (system, user, assistant or tool) and a string ``content``. A value
of a TRL column (``messages``, ``prompt``, ``completion``, ``chosen``, ``rejected``,
``response``) is either plain text (a string) or a conversation; anything else is refused
with a DataError naming the file, the column and the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .errors import ConfigError, DataError

MESSAGE_ROLES = ("system", "user", "assistant", "tool")
Kind = Literal["text", "conversation"]
CONVERSATION_HINT = "a list of messages ({role, content})"


def value_kind(value: Any, *, where: str, column: str, row: int) -> Kind:
    """Whether a column value is plain text or a conversation; a DataError for anything else.

    ``row`` counts from 1. A conversation's messages are checked with ``check_messages``.
    """
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        if not value:
            raise _row_error(
                "is an empty list; a conversation needs at least one message", where, column, row
            )
        if all(isinstance(item, Mapping) for item in value):
            check_messages(value, where=where, column=column, row=row)
            return "conversation"
        first = next(item for item in value if not isinstance(item, Mapping))
        raise _row_error(
            f"holds a list of {type(first).__name__} values;"
            f" expected a string or {CONVERSATION_HINT}",
            where,
            column,
            row,
        )
    if isinstance(value, Mapping):
        raise _row_error(
            f"holds a single mapping; expected a string or {CONVERSATION_HINT}"
            " (a single message must be wrapped in a list)",
            where,
            column,
            row,
        )
    if value is None:
        raise _row_error("is missing (null); give every row a value", where, column, row)
    raise _row_error(
        f"holds a {type(value).__name__}; expected a string or {CONVERSATION_HINT}",
        where,
        column,
        row,
    )


def check_messages(messages: Any, *, where: str, column: str, row: int) -> None:
    """Refuse a conversation whose messages are not {role, content} with a known role and text.

    Content lists (TRL's multimodal shape, ``[{"type": "text", ...}]``) are refused: the
    trainer takes text-only conversations.
    """
    if not isinstance(messages, list | tuple) or not messages:
        raise _row_error(f"must be a non-empty {CONVERSATION_HINT}", where, column, row)
    for position, message in enumerate(messages, start=1):
        if not isinstance(message, Mapping):
            raise _row_error(
                f"message {position} is a {type(message).__name__},"
                " not a mapping with role and content",
                where,
                column,
                row,
            )
        role = message.get("role")
        if not isinstance(role, str):
            raise _row_error(
                f"message {position} has no string 'role'; give each message a role"
                f" ({', '.join(MESSAGE_ROLES)})",
                where,
                column,
                row,
            )
        if role not in MESSAGE_ROLES:
            raise _row_error(
                f"message {position} has role {role!r}; use one of {', '.join(MESSAGE_ROLES)}"
                " (rename e.g. 'human'/'gpt' to 'user'/'assistant')",
                where,
                column,
                row,
            )
        content = message.get("content")
        if isinstance(content, list | tuple):
            raise _row_error(
                f"message {position} has a list as content (the multimodal shape); this trainer"
                " takes text only: make each content a string",
                where,
                column,
                row,
            )
        if not isinstance(content, str):
            raise _row_error(
                f"message {position} has no string 'content';"
                " give each message its text as content",
                where,
                column,
                row,
            )


def is_conversation(value: Any) -> bool:
    """True for a non-empty list of mappings (TRL's test: the first message has a role)."""
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(item, Mapping) for item in value)
    )


def require_chat_template(tokenizer: Any, field: str) -> None:
    """A ConfigError when conversational data meets a tokenizer without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "the tokenizer has no chat template, but the dataset holds conversations (message"
            " lists); use a chat/instruct model that ships a chat template, or give plain-text"
            " data (format text, or prompt/completion strings)",
            field=field,
        )


def split_last_assistant_turn(messages: list[Any]) -> tuple[list[Any], list[Any]]:
    """(every turn before the last assistant turn, [that turn]); ([...all], []) without one.

    Earlier assistant turns stay in the prompt, so a multi-turn prompt still alternates
    user/assistant (strict templates such as Mistral's and Gemma's refuse user/user).
    Turns after the last assistant turn are dropped: there is nothing to learn in them.
    """
    for index in range(len(messages) - 1, -1, -1):
        if messages[index]["role"] == "assistant":
            return list(messages[:index]), [messages[index]]
    return list(messages), []


def prompt_turns(messages: list[Any]) -> list[Any]:
    """The turns a model answers: everything before the last assistant turn."""
    prompt, _ = split_last_assistant_turn(messages)
    return prompt


def render_prompt(tokenizer: Any, messages: list[Any]) -> str:
    """A conversation rendered by the chat template and ended with the assistant header."""
    return str(
        tokenizer.apply_chat_template(
            _plain_messages(messages), tokenize=False, add_generation_prompt=True
        )
    )


def assistant_masks_supported(tokenizer: Any) -> bool:
    """Whether TRL can train on assistant turns only with this tokenizer's chat template.

    TRL's own rule (``SFTTrainer``): a template with ``{% generation %}`` markers works; one
    without works when TRL ships a training version of it (``get_training_chat_template``;
    Llama-3, Qwen2.5, Gemma and others); any other needs another way to mask. Assistant
    masks need a fast tokenizer (character offsets).
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = getattr(tokenizer, "chat_template", None)
    if not template or not getattr(tokenizer, "is_fast", False):
        return False
    if has_generation_markers(template):
        return True
    try:
        get_training_chat_template(tokenizer)
    except Exception:  # ValueError when TRL cannot patch it; a strict template may raise more
        return False
    return True


def template_refusal(
    tokenizer: Any, conversations: Any, *, where: str, column: str
) -> DataError | None:
    """The first conversation the chat template refuses to render, as a DataError."""
    for row, messages in enumerate(conversations, start=1):
        try:
            tokenizer.apply_chat_template(_plain_messages(messages), tokenize=False)
        except Exception as error:  # jinja2's TemplateError, or whatever the template raises
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return _row_error(
                f"is refused by the model's chat template ({reason}); fix the"
                " roles (most templates want user/assistant turns alternating, starting with"
                " user after an optional system message)",
                where,
                column,
                row,
            )
    return None


def _plain_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """Messages without the None keys Arrow adds when rows carry different keys."""
    return [{key: value for key, value in m.items() if value is not None} for m in messages]


def _row_error(message: str, where: str, column: str, row: int) -> DataError:
    return DataError(f"row {row} {message}", where=where, field=column)
