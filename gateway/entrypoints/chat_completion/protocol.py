"""Pydantic model of an OpenAI chat completion request, as far as the gateway checks it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.entrypoints.engine.protocol import SamplingRequest


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text, joined across text parts (what the router reads)."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "\n".join(p.text or "" for p in self.content if p.type == "text")


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("'top_logprobs' requires 'logprobs' to be true")
        if not any(m.role in ("user", "system", "developer") and m.text().strip() for m in self.messages):
            raise ValueError("'messages' must contain at least one non-empty user or system message")
        return self

    @property
    def completion_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def routing_messages(self) -> list[dict[str, str]]:
        """The whole conversation as plain ``{"role", "content"}`` dicts: system prompt, earlier
        turns and the last one. The competence gate reads system and user turns (a system prompt
        the student was trained with is known to its index and ignored; another one is part of
        what is asked); the trained router reads the turns without the operator's instructions
        (``routing.policy.without_instructions``), as it was trained."""
        return [{"role": m.role, "content": m.text()} for m in self.messages]
