"""What a streamed answer cost when the tier never said: count what was relayed.

A tier that reports usage only at the end of a stream (OpenAI's ``include_usage``, litellm,
a ``url:`` server without ``continuous_usage``) says nothing about a stream the client cut
short, or that broke mid-way. Booking such a stream at zero would make hanging up a way to
get answers for free, so the relay counts what it forwarded instead and the row says so
(``usage_source = 'counted'``).

The count is an estimate, chosen to be cheap (no tokenizer on the request path): one token per
content delta (vLLM and OpenAI send one token per chunk) or four characters per token,
whichever is more (providers that batch several tokens into a chunk). The prompt, which the
tier read in full, is estimated the same way from its text, plus a few tokens per message
for the chat template.
"""

from __future__ import annotations

from dataclasses import dataclass

CHARS_PER_TOKEN = 4
TEMPLATE_TOKENS_PER_MESSAGE = 4


def _text_chars(content: object) -> int:
    """Characters of text in a message content (a string, or a list of typed parts)."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(part.get("text") or "") for part in content if isinstance(part, dict))
    return 0


def _tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def estimate_prompt_tokens(body: dict) -> int:
    """A cheap estimate of the prompt's tokens from a chat or text completion request."""
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))
        return _tokens(chars) + TEMPLATE_TOKENS_PER_MESSAGE * len(messages)
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return sum(_tokens(len(p)) for p in prompt if isinstance(p, str))
    return _tokens(len(prompt)) if isinstance(prompt, str) else 0


def _delta_text(choice: dict) -> str:
    """The text a streamed choice adds: ``delta.content`` (chat) or ``text`` (completions)."""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        content = delta.get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


@dataclass
class RelayedTokens:
    """Counts the completion text a stream relayed, for when the tier reports no usage."""

    content_chunks: int = 0
    content_chars: int = 0

    def count(self, chunk: dict) -> None:
        """Add one parsed stream chunk (every choice's delta counts: ``n`` > 1 bills each)."""
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                text = _delta_text(choice)
                if text:
                    self.content_chunks += 1
                    self.content_chars += len(text)

    @property
    def completion_tokens(self) -> int:
        return max(self.content_chunks, _tokens(self.content_chars))
