"""Turn OpenAI-style chat requests into the plain texts the router scores.

The gateway hands us ``messages`` exactly as the client sent them; content may be a
string or a list of ``{"type": "text", "text": ...}`` parts (images and other parts are
ignored: the router only judges text difficulty). Training data are bare prompt strings,
so both shapes are normalised here, in one place, to keep training and serving identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

Conversation = str | Sequence[Mapping[str, Any]]


class ConversationText(NamedTuple):
    """The views of a conversation the features are computed from."""

    last_user: str
    conversation: str
    n_turns: int


def content_text(content: Any) -> str:
    """Text of one message's ``content`` (string, list of parts, or None)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") == "text":
                parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    return str(content)


def to_text(conversation: Conversation) -> ConversationText:
    """Normalise a prompt string or a list of chat messages.

    A bare string counts as one user turn. The conversation view joins every turn with its
    non-user role so that system prompts and earlier answers still inform the score.
    """
    if isinstance(conversation, str):
        return ConversationText(conversation, conversation, 1)
    if isinstance(conversation, Mapping):  # a single message passed by mistake
        conversation = [conversation]
    last_user = ""
    lines: list[str] = []
    n_turns = 0
    for message in conversation:
        role = str(message.get("role", "user"))
        text = content_text(message.get("content"))
        # User turns stay bare so that a prompt string and a one-message list score the same.
        lines.append(text if role == "user" else f"[{role}] {text}")
        if role == "user":
            last_user = text
            n_turns += 1
    if not last_user and lines:  # no user turn: score whatever text there is
        last_user = content_text(conversation[-1].get("content"))
    return ConversationText(last_user, "\n".join(lines), max(n_turns, 1))
