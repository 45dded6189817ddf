"""Pydantic model of an OpenAI (legacy) text completion request."""

from __future__ import annotations

from pydantic import Field, field_validator

from gateway.entrypoints.engine.protocol import SamplingRequest


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] = Field(description="text, a batch of texts, or token ids")
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool | None = None

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, prompt: str | list[str] | list[int]) -> str | list[str] | list[int]:
        if (isinstance(prompt, str) and not prompt) or (isinstance(prompt, list) and not prompt):
            raise ValueError("'prompt' must not be empty")
        return prompt

    def routing_messages(self) -> list[dict[str, str]]:
        """The prompt as one user turn, so the router scores completions like chats."""
        if isinstance(self.prompt, str):
            text = self.prompt
        elif all(isinstance(p, str) for p in self.prompt):
            text = "\n".join(self.prompt)  # type: ignore[arg-type]
        else:
            text = ""
        return [{"role": "user", "content": text}]
