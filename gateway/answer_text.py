"""The text of an OpenAI answer, whole or streamed, chat or legacy completion."""

from __future__ import annotations

from typing import Literal


def choice_text(data: dict, part: Literal["message", "delta"]) -> str:
    """Join every choice's text: ``message.content`` of a whole chat answer, ``delta.content``
    of a stream chunk, or ``text`` of a (legacy) completion."""
    parts = []
    for choice in data.get("choices") or []:
        holder = choice.get(part) or {}
        text = holder.get("content") if isinstance(holder, dict) else None
        text = text if text is not None else choice.get("text")
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)
