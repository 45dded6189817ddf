"""The configuration of one tier: how to reach it, what it can do, and what it costs.

Part of the gateway's one typed config (``gateway.config`` re-exports everything here); a
module of its own because tiers carry the most settings. A tier declares its capabilities
(``supports:``) so that routing never sends a request a tier cannot serve: a request with
tools goes only to tiers that call tools, an image only to tiers that read images, and a
request naming a tier that cannot serve it gets a 400 that names the tier. A ``vllm:`` tier
that supports tools is started with the flags vLLM needs to call them.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Modality = Literal["text", "image", "audio", "file"]

# A ChatML template with Hermes-style tool calls, for models whose own template has no tools
# (the packaged SmolLM2 among them); vLLM's `hermes` tool-call parser reads its calls back.
TOOLS_CHAT_TEMPLATE = str(resources.files("gateway").joinpath("chat_templates", "chatml_tools.jinja"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Price(_Strict):
    """What a tier's tokens cost: list prices, or the price of the machine it runs on.

    Either per million tokens (``input_per_million`` + ``output_per_million``), or
    ``per_hour``: the machine's cost, turned into a per-token price at run time from the
    tier's measured generation throughput (``gateway/tiers/throughput.py``). Until a
    throughput has been measured, ``assumed_tokens_per_s`` stands in (and the ledger says so).
    ``None`` on a litellm tier means: take it from litellm's cost map.
    """

    input_per_million: float | None = Field(default=None, ge=0)
    output_per_million: float | None = Field(default=None, ge=0)
    per_hour: float | None = Field(default=None, ge=0, description="machine cost per hour (compute pricing)")
    assumed_tokens_per_s: float = Field(default=50.0, gt=0, description="generated tokens/s until measured")
    prompt_token_ratio: float = Field(default=0.1, ge=0, le=10, description="a prompt token's cost relative to a "
                                      "generated one (prefill runs about 10x faster than decoding)")

    @model_validator(mode="after")
    def _one_kind(self) -> Price:
        listed = self.input_per_million is not None and self.output_per_million is not None
        if self.per_hour is None and not listed:
            raise ValueError("a price needs input_per_million and output_per_million, or per_hour")
        if self.per_hour is not None and (self.input_per_million is not None or self.output_per_million is not None):
            raise ValueError("a price is either per_hour or per million tokens, not both")
        return self

    @property
    def compute_priced(self) -> bool:
        return self.per_hour is not None

    def per_million(self, tokens_per_s: float | None = None) -> tuple[float, float]:
        """(input, output) price per million tokens; compute prices at ``tokens_per_s``."""
        if self.per_hour is None:
            assert self.input_per_million is not None and self.output_per_million is not None
            return self.input_per_million, self.output_per_million
        output = self.per_hour / (3600.0 * (tokens_per_s or self.assumed_tokens_per_s)) * 1e6
        return output * self.prompt_token_ratio, output

    def cost(self, prompt_tokens: int, completion_tokens: int, tokens_per_s: float | None = None) -> float:
        input_price, output_price = self.per_million(tokens_per_s)
        return (prompt_tokens * input_price + completion_tokens * output_price) / 1e6


class TierCapabilities(_Strict):
    """What a tier can serve. Routing only sends a request to tiers whose capabilities cover it."""

    tools: bool = Field(default=False, description="function calling (tools, tool_choice, tool messages)")
    structured_output: bool = Field(default=True, description="response_format json_object / json_schema "
                                    "(vLLM's structured outputs)")
    modalities: list[Modality] = Field(default_factory=lambda: ["text"], description="content part kinds accepted")
    embeddings: bool = Field(default=False, description="serves /v1/embeddings (a vLLM pooling model)")
    chat: bool = Field(default=True, description="serves chat and text completions")


class VLLMServer(_Strict):
    """A vLLM OpenAI server that the gateway starts, health-checks, restarts and stops."""

    model: str = Field(description="Hugging Face model dir (or id) served by vLLM")
    port: int | None = Field(default=None, description="None: a free port is picked at start")
    host: str = "127.0.0.1"
    dtype: str = "float32"
    max_model_len: int = 1024
    enforce_eager: bool = True
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=lambda: {"VLLM_CPU_KVCACHE_SPACE": "1"})
    startup_timeout_s: float = 600.0
    max_restarts: int = Field(default=5, ge=0, description="crashes within restart_window_s before the tier is given up")
    restart_window_s: float = Field(default=600.0, gt=0, description="crashes older than this are forgiven")
    lora_modules: dict[str, str] = Field(default_factory=dict, description="LoRA adapters this process serves "
                                         "next to its base model: served name -> adapter dir (vLLM --enable-lora); "
                                         "a tier with `served_by:` this tier exposes each one")
    max_lora_rank: int = Field(default=16, ge=1, description="largest adapter rank vLLM reserves room for")
    tool_call_parser: str = Field(default="hermes", description="vLLM --tool-call-parser, used when the tier "
                                  "supports tools; it must match how the chat template writes calls")
    chat_template: str | None = Field(default=None, description="a Jinja chat template file; a tier that supports "
                                      "tools and names none gets the packaged ChatML + Hermes tools template")


class RemoteServer(_Strict):
    """An OpenAI-compatible server that somebody else runs (another vLLM, a TGI, ...)."""

    base_url: str = Field(description="e.g. http://127.0.0.1:8001/v1")
    upstream_model: str | None = Field(default=None, description="model name upstream; default: the tier name")
    api_key_env: str | None = Field(default=None, description="env var holding the upstream key")
    max_model_len: int | None = None
    continuous_usage: bool = Field(default=False, description="the server reports usage on every streamed chunk "
                                   "when asked (vLLM does; OpenAI does not): a cut stream is booked what it sent")
    metrics_url: str | None = Field(default=None, description="its Prometheus /metrics (vLLM's), read for the "
                                    "measured throughput of a per_hour price")


class LiteLLMProvider(_Strict):
    """A hosted model reached through litellm (``openai/gpt-4o``, ``anthropic/claude-...``)."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = Field(default=None, description="env var holding the key (litellm also reads the provider's usual one)")
    max_model_len: int | None = None


class TierConfig(_Strict):
    """One entry of ``model_list``: a named tier and exactly one way to reach it."""

    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    aliases: list[str] = Field(default_factory=list)
    role: Literal["teacher", "student", "other"] = "other"
    vllm: VLLMServer | None = None
    url: RemoteServer | None = None
    litellm: LiteLLMProvider | None = None
    served_by: str | None = Field(default=None, description="a LoRA adapter served by this `vllm:` tier's process "
                                  "(listed in its vllm.lora_modules under this tier's model_name): one process, "
                                  "two tiers with their own names, roles and prices")
    supports: TierCapabilities = Field(default_factory=TierCapabilities)
    price: Price | None = None
    timeout_s: float = 600.0
    fallbacks: list[str] = Field(default_factory=list, description="tiers tried in order when this one fails")
    breaker_failures: int = Field(default=3, ge=1, description="consecutive failures that open the circuit")
    breaker_cooldown_s: float = Field(default=10.0, gt=0, description="open at least this long, then probe health")

    @model_validator(mode="after")
    def _one_backend(self) -> TierConfig:
        backends = [b for b in (self.vllm, self.url, self.litellm, self.served_by) if b is not None]
        if len(backends) != 1:
            raise ValueError(f"tier {self.model_name!r} needs exactly one of vllm:, url:, litellm:, served_by:")
        if self.price is None and self.litellm is None:
            raise ValueError(f"tier {self.model_name!r} needs a price (litellm tiers may use the cost map)")
        if self.price is not None and self.price.compute_priced and self.litellm is not None:
            raise ValueError(f"tier {self.model_name!r}: a per_hour price needs a throughput to divide by; "
                             "litellm tiers are priced per token")
        return self

    @property
    def kind(self) -> str:
        return "vllm" if self.vllm else "url" if self.url else "adapter" if self.served_by else "litellm"

    @property
    def max_model_len(self) -> int | None:
        backend = self.vllm or self.url or self.litellm
        return backend.max_model_len if backend else None

    def vllm_capability_args(self) -> list[str]:
        """The vLLM flags this tier's declared capabilities need (a ``vllm:`` tier only)."""
        assert self.vllm is not None
        args: list[str] = []
        if self.supports.tools:
            # `parameter` pins each call's arguments to the tool's JSON schema: a small model
            # then always writes well-formed calls for tool_choice required/named.
            args += ["--enable-auto-tool-choice", "--tool-call-parser", self.vllm.tool_call_parser,
                     "--tool-strict-level", "parameter"]
        if self.supports.structured_output and self.supports.chat:
            # Grammar-constrained JSON without free whitespace: small models otherwise fill the
            # answer with newlines until max_tokens (seen with a 4-layer student on a strict schema).
            args += ["--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
        template = self.vllm.chat_template or (TOOLS_CHAT_TEMPLATE if self.supports.tools else None)
        if template:
            args += ["--chat-template", template]
        if self.supports.embeddings and not self.supports.chat:
            args += ["--runner", "pooling", "--convert", "embed"]
        return args
