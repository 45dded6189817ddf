"""Pydantic model of an OpenAI embeddings request, as far as the gateway checks it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _inputs(self) -> EmbeddingRequest:
        inputs = self.input if isinstance(self.input, list) else [self.input]
        if not inputs or any(item == "" or item == [] for item in inputs):
            raise ValueError("'input' must be a non-empty string or a non-empty list of non-empty inputs")
        if len(inputs) > MAX_INPUTS:
            raise ValueError(f"'input' holds {len(inputs)} items; the limit is {MAX_INPUTS}")
        return self
