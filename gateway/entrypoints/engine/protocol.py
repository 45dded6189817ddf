"""The engine protocol: request fields shared by ``/v1/chat/completions`` and ``/v1/completions``.

The models validate what the gateway relies on (types, ranges, NaN) and let every other
field through untouched (``extra="allow"``), so vLLM's own sampling extensions reach the
tier exactly as the client sent them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class SamplingRequest(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    user: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _stop_list(self) -> SamplingRequest:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("'stop' takes at most 4 sequences")
        if self.stream_options is not None and not self.stream:
            raise ValueError("'stream_options' is only allowed when 'stream' is true")
        return self

    @property
    def wants_stream_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def completion_budget(self) -> int | None:
        """The number of tokens the client allows the answer (checked against the context)."""
        return self.max_tokens

    def routing_messages(self) -> list[dict[str, str]]:
        """What the router reads: plain ``{"role", "content"}`` turns (each endpoint says how)."""
        raise NotImplementedError(f"{type(self).__name__} must say what the router reads")
