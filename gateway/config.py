"""The gateway's one typed configuration object.

Everything the gateway needs (tiers, prices, router, ledger, server limits) lives in one
YAML file shaped like LiteLLM's ``model_list``, validated by pydantic before anything
starts, so a typo fails at start-up with a clear message rather than on the first request.
The embedded defaults (``defaults.yaml``) run the teacher and the distilled student on
this machine with vLLM; a user file replaces them wholesale.

Strings may hold ``{project_root}``, ``{model_cache}``, ``{state_dir}`` and ``{env:NAME}``
placeholders, expanded once at load time. Secrets are the exception: keys named by
``*_env`` fields (provider API keys, the bootstrap admin key) are read from the environment
where they are used, so they never sit in the parsed config or its printed form.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, model_validator

# The tier models live in gateway.tier_config; re-exported so `from gateway.config import TierConfig` works.
from gateway.tier_config import (LiteLLMProvider, Price, RemoteServer, TierCapabilities, TierConfig,  # noqa: F401
                                 VLLMServer, _Strict)

__all__ = ["GatewayConfig", "LiteLLMProvider", "Price", "RemoteServer", "TierCapabilities", "TierConfig",
           "VLLMServer", "load_config", "parse_config"]
from router.defaults import DEFAULT_ARTIFACT, DEFAULT_OUTCOME_ARTIFACT

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_PLACEHOLDER = re.compile(r"\{(project_root|model_cache|state_dir|env:[A-Za-z_][A-Za-z0-9_]*)\}")


class BandCheckConfig(_Strict):
    """The competence gate's band check: a cascade from the workload's teacher to the general flagship.

    A request in the gate's uncertain band is either a rare phrasing of an in-scope request
    (the workload teacher knows it, and says so with confident logprobs) or something the
    workload was never about (the teacher still names one of its answers, unsure). The model is
    written by ``python -m router calibrate-cascade --tier teacher --label teacher_correct
    --keep 0.95`` on the teacher's answers to in-scope validation prompts only.
    """

    artifact: str
    threshold: float | None = Field(default=None, ge=0, le=1, description="override the model's threshold")
    decision_tokens: int = Field(default=16, ge=1, le=256)


class CompetenceGateConfig(_Strict):
    """The student's competence index, in front of the router.

    A request whose distance to the student's training prompts exceeds the threshold goes
    to ``tier`` before the router is asked: the router only judges requests the student was
    taught to handle. The index is written by ``distill`` with the student
    (``python -m distill competence`` for an existing one) and hash-checked on load.
    """

    artifact: str
    threshold: float | None = Field(default=None, ge=0, le=1, description="override the index's threshold "
                                    "(chosen on held-out in-scope validation prompts)")
    tier: str | None = Field(default=None, description="where out-of-scope requests go; default: the router's strong_tier")
    near_tier: str | None = Field(default=None, description="where requests in the uncertain band go: past the "
                                  "threshold but within the distance that keeps `near_acceptance` of the "
                                  "index's validation prompts (rare in-scope phrasings); default: no band")
    near_acceptance: float = Field(default=0.995, gt=0, le=1, description="the band's outer edge, as a share of "
                                   "the index's held-out in-scope validation prompts")
    near_check: BandCheckConfig | None = Field(default=None, description="ask `near_tier` first with logprobs and "
                                               "keep its answer only when its first line is confident; else `tier` "
                                               "answers (a cascade near_tier -> tier)")


class CascadeConfig(_Strict):
    """Ask the student first and keep its answer only when it is confident (``gateway/routing/cascade.py``).

    Applies to requests the policy in front sends to ``weak_tier`` (with ``policy: cascade``,
    every request the competence gate lets through). The confidence model is written by
    ``python -m router calibrate-cascade`` and hash-checked on load; a missing one stops the
    start-up (a blind cascade is not what was configured).
    """

    artifact: str = Field(default_factory=lambda: str(PROJECT_ROOT / "artifacts" / "router" / "cascade_confidence.skops"))
    threshold: float | None = Field(default=None, ge=0, le=1, description="override the model's threshold "
                                    "(chosen for a quality target on validation outcomes)")
    decision_tokens: int = Field(default=16, ge=1, le=256, description="most student tokens held back before "
                                 "deciding (the decision comes earlier at the end of the first line)")


class RouterConfig(_Strict):
    """How ``model: "auto"`` picks a tier: competence gate -> router -> cascade, each optional.

    ``policy``:

    * ``outcome``: the router trained on our own tiers' outcomes (``router.outcome_router``):
      P(the student's answer agrees with the teacher's) from the request's text and its
      competence distance; below the threshold goes to ``strong_tier``. Needs ``competence``.
    * ``trained``: a ``ComplexityRouter`` artifact scores how hard the request is; score >=
      threshold goes to ``strong_tier``.
    * ``cascade``: no router; every request the gate lets through asks the student first.
    * ``fixed``: every auto request goes to ``default_tier`` (explicit and logged, for when no
      trained router is available).

    A router artifact that is missing degrades to ``fixed``, loudly. The default artifacts come
    from ``router.defaults``, which ``python -m router score`` reads too.
    """

    policy: Literal["outcome", "trained", "fixed", "cascade"] = "trained"
    artifact: str | None = Field(default=None, description="the router artifact; default: router.defaults' "
                                 "for the policy")
    threshold: float | None = Field(default=None, ge=0, le=1, description="override the artifact's threshold "
                                    "(outcome: the P(agree) below which the strong tier answers)")
    strong_tier: str = "teacher"
    weak_tier: str = "student"
    default_tier: str | None = Field(default=None, description="for policy fixed; default: strong_tier")
    competence: CompetenceGateConfig | None = Field(default=None, description="gate in front of the policy")
    cascade: CascadeConfig | None = Field(default=None, description="behind the policy: its weak-tier decisions "
                                          "ask the student first (policy cascade: every in-scope request)")

    @model_validator(mode="after")
    def _defaults(self) -> RouterConfig:
        if self.policy == "cascade" and self.cascade is None:
            self.cascade = CascadeConfig()
        if self.policy == "outcome" and self.competence is None:
            raise ValueError("router.policy outcome reads the competence distance: configure router.competence")
        if self.artifact is None and self.policy in ("trained", "outcome"):
            self.artifact = str(DEFAULT_OUTCOME_ARTIFACT if self.policy == "outcome" else DEFAULT_ARTIFACT)
        return self


class LedgerConfig(_Strict):
    """Where cost rows go. SQLite (WAL) embedded by default; Postgres for many replicas.

    ``durability: commit`` (default) finishes a response only after its row is committed
    (group commit: concurrent requests share a transaction); ``async`` answers first and
    writes right after, which saves the commit's latency but can lose the last rows to a
    SIGKILL.
    """

    url: str = "sqlite:///{state_dir}/ledger.db"
    durability: Literal["commit", "async"] = "commit"
    commit_timeout_s: float = Field(default=5.0, gt=0, description="answer anyway after this; the row stays queued")
    max_batch: int = Field(default=2000, ge=1)
    max_backlog_rows: int = Field(default=50_000, ge=1, description="rows queued while the database is "
                                  "away; beyond this, new requests get 503 instead of unbooked answers")
    store_content: bool = Field(default=False, description="store prompts/completions (off: privacy)")


class CaptureConfig(_Strict):
    """Keeping teacher-served requests and answers as training data for the next student
    (the flywheel, issue #13). Off unless turned on, and then only for the workloads listed
    and, with auth on, only for keys created with ``--capture`` (opt-in twice).

    A request names its workload with the ``workload_header`` (default ``default``). What is
    kept is redacted first (e-mail addresses, phone numbers, card numbers, IBANs), sampled at
    ``sample_rate``, capped per workload and per record, and purged after ``retention_days``.
    When the answering tier can return them, the teacher's top-``logprobs_top_k`` token
    log-probabilities are asked for and kept too (the client only gets logprobs it asked for).
    """

    enabled: bool = False
    workloads: list[str] | Literal["*"] = Field(default="*", description="workloads to capture, or '*'")
    tiers: list[str] | None = Field(default=None, description="capture answers of these tiers (default: role teacher)")
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    retention_days: float = Field(default=30.0, gt=0)
    max_record_bytes: int = Field(default=64_000, ge=256, description="a bigger request+answer is skipped")
    max_records_per_workload: int = Field(default=20_000, ge=1, description="stop capturing a workload at this count")
    logprobs_top_k: int = Field(default=5, ge=0, le=20, description="0: do not ask tiers for logprobs")
    workload_header: str = "x-tierwise-workload"
    default_workload: str = Field(default="default", min_length=1, max_length=128)


class AuthConfig(_Strict):
    """API keys. On unless a config turns it off (the embedded local demo does).

    Keys live hashed in the ledger database (``python -m gateway keys create``). A bootstrap
    admin key can come from the environment variable named by ``admin_key_env``.
    """

    enabled: bool = True
    admin_key_env: str | None = "TIERWISE_ADMIN_KEY"
    cache_ttl_s: float = Field(default=5.0, ge=0, description="how quickly a revocation reaches every replica")
    unknown_key_reload_s: float = Field(default=0.1, gt=0, description="unknown keys cause at most one key-store "
                                        "read per this interval (a new key waits at most this long, never refused)")
    max_failures_per_ip: int = Field(default=100, ge=0, description="wrong keys per client address per minute "
                                     "before it gets 429s; 0 = no limit")
    key_store_timeout_s: float = Field(default=2.0, gt=0, description="longest wait for a key-store read")


class LimitsConfig(_Strict):
    """Per-key rate limits and budgets; shared through Redis across replicas when configured."""

    redis_url: str | None = None
    default_rpm: int | None = Field(default=None, ge=1, description="requests per minute for keys without their own")
    default_tpm: int | None = Field(default=None, ge=1, description="tokens per minute for keys without their own")
    redis_timeout_s: float = Field(default=0.5, gt=0, description="per Redis call; 3 timeouts in a row or a refused "
                                   "connection switch to per-replica limits (see limits/redis_backend.py)")
    redis_retry_s: float = Field(default=2.0, gt=0, description="while Redis is down, probe it this often "
                                 "(limits are enforced per replica meanwhile)")


class ShadowConfig(_Strict):
    """Shadow sampling: re-ask the teacher, off the client's path, for some student answers.

    The agreement between the two answers is recorded (``shadow_pairs``), watched for drift,
    and exportable in RouteLLM's format to retrain the router on live traffic.
    """

    sample_rate: float = Field(default=0.0, ge=0, le=1, description="share of student answers shadowed; 0 = off")
    reference_tier: str | None = Field(default=None, description="default: the teacher tier")
    workload_reference_tiers: dict[str, str] = Field(default_factory=dict, description="per workload (header): "
                                                     "the tier its student answers are compared with")
    metric: Literal["rouge_l", "first_line"] = "rouge_l"
    agree_at: float = Field(default=0.5, ge=0, le=1, description="a pair counts as agreeing at or above this")
    window: int = Field(default=200, ge=1, description="pairs in the rolling agreement")
    min_samples: int = Field(default=30, ge=1, description="pairs needed before the alarm can fire")
    floor: float = Field(default=0.6, ge=0, le=1, description="rolling agreement below this raises the alarm")
    adjust_routing: bool = Field(default=True, description="while alarmed, shift routing toward the teacher")
    step: float = Field(default=0.02, gt=0, le=1, description="threshold shift per shadow pair while alarmed")
    max_shift: float = Field(default=0.5, ge=0, le=1)
    store_prompts: bool = Field(default=True, description="keep the prompt with each pair (needed for export); "
                                "only with ledger.store_content: true, which also keeps both answers")
    max_in_flight: int = Field(default=4, ge=1, description="shadow calls at once; further samples are skipped")


class ServerConfig(_Strict):
    """Listening socket, request limits, and what is shown to callers without a key.

    The read timeouts keep slow or stalled clients from holding sockets and request slots.
    API docs and /health details are for operators: by default they are open only while auth
    is off (the local demo, where everything is open anyway), else to admin keys (health).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_messages: int = Field(default=256, ge=1)
    log_level: str = "info"
    header_read_timeout_s: float = Field(default=10.0, gt=0, description="a connection that has not sent a "
                                         "request's complete headers by then gets 408 and is closed")
    body_read_timeout_s: float = Field(default=30.0, gt=0, description="a request body not received by then: 408")
    expose_docs: bool | None = Field(default=None, description="serve /docs, /redoc and /openapi.json; "
                                     "default: only while auth is off")
    public_health_details: bool | None = Field(default=None, description="show tier URLs, circuit state and "
                                               "the ledger backlog on /health to callers without an admin "
                                               "key; default: only while auth is off")
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(default=1, description="gateway processes "
                                                                   "on the one port (gateway/workers.py); auto: "
                                                                   "the CPUs this container may use")
    runtime_poll_s: float = Field(default=1.0, gt=0, description="how often replicas check for runtime changes")
    # Measured (benchmarks/gateway_overhead.py, held-concurrency run): with Python's (700, 10, 10)
    # and 1,000 requests in flight, full collections ran ~20 times a minute at 0.1-0.25 s each,
    # holding every stream; (50000, 20, 100) cut collector time by ~80 % and full collections
    # to about one a run. Young collections then take ~40 ms each on a 2-core box.
    gc_thresholds: tuple[int, int, int] | None = Field(default=(50_000, 20, 100), description="gc.set_threshold "
                                                       "for the serving process (after start-up objects are "
                                                       "frozen); None keeps Python's (700, 10, 10)")
    loop_monitor_interval_s: float = Field(default=0.01, ge=0, description="how often the event loop's lag is "
                                           "sampled (tierwise_event_loop_lag_seconds); 0 turns the sampler off")
    throughput_poll_s: float = Field(default=5.0, gt=0, description="how often compute-priced (per_hour) tiers' "
                                     "vLLM /metrics are read; a price needs 5 polls' worth of busy time")
    throughput_window_s: float = Field(default=300.0, gt=0, description="sliding window of the measured throughput")


class GatewayConfig(_Strict):
    model_list: Annotated[list[TierConfig], Field(min_length=1)]
    router: RouterConfig = Field(default_factory=RouterConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    teacher: str | None = Field(default=None, description="tier priced as the counterfactual; default: the role: teacher tier")
    state_dir: str = "{project_root}/.tierwise"
    model_cache: str = "{env:TIERWISE_MODEL_CACHE}"

    @model_validator(mode="after")
    def _names_resolve(self) -> GatewayConfig:
        seen: set[str] = {"auto"}
        for tier in self.model_list:
            for name in [tier.model_name, *tier.aliases]:
                if name in seen:
                    raise ValueError(f"model name or alias {name!r} is used twice (or is the reserved 'auto')")
                seen.add(name)
        names = {t.model_name for t in self.model_list}
        for tier in self.model_list:
            unknown = [f for f in tier.fallbacks if f not in names or f == tier.model_name]
            if unknown:
                raise ValueError(f"tier {tier.model_name!r} falls back to unknown or itself: {unknown}")
        for tier in self.model_list:
            if tier.served_by is None:
                continue
            host = next((t for t in self.model_list if t.model_name == tier.served_by), None)
            if host is None or host.vllm is None or tier.model_name not in host.vllm.lora_modules:
                raise ValueError(f"tier {tier.model_name!r} is served_by {tier.served_by!r}, which must be a vllm: "
                                 f"tier listing {tier.model_name!r} in its vllm.lora_modules")
            if tier.supports.tools and not host.supports.tools:
                raise ValueError(f"tier {tier.model_name!r} supports tools but its process ({tier.served_by!r}) "
                                 "is not started with tool calling: set supports.tools on that tier too")
        if self.teacher_tier not in names:
            raise ValueError(f"the counterfactual teacher tier {self.teacher_tier!r} is not in model_list")
        return self

    @property
    def teacher_tier(self) -> str:
        if self.teacher:
            return self.teacher
        teachers = [t.model_name for t in self.model_list if t.role == "teacher"]
        return teachers[0] if teachers else self.model_list[0].model_name

    def tier(self, name: str) -> TierConfig:
        return next(t for t in self.model_list if t.model_name == name)


def default_model_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tierwise" / "models"


def _expand(value: object, context: dict[str, str]) -> object:
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            key = match.group(1)
            if key.startswith("env:"):
                return os.environ.get(key[4:], "")
            return context[key]
        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, context) for v in value]
    return value


def parse_config(raw: dict) -> GatewayConfig:
    """Validate a config mapping after expanding its placeholders."""
    model_cache = _expand(raw.get("model_cache", "{env:TIERWISE_MODEL_CACHE}"), {"project_root": str(PROJECT_ROOT)})
    context = {"project_root": str(PROJECT_ROOT), "model_cache": str(model_cache or default_model_cache())}
    context["state_dir"] = str(_expand(raw.get("state_dir", "{project_root}/.tierwise"), context))
    expanded = _expand(raw, context)
    assert isinstance(expanded, dict)
    expanded["model_cache"] = context["model_cache"]
    expanded["state_dir"] = context["state_dir"]
    return GatewayConfig.model_validate(expanded)


def load_config(path: str | Path | None = None) -> GatewayConfig:
    """Load ``path`` or, when None, the embedded defaults."""
    if path is None:
        text = resources.files("gateway").joinpath("defaults.yaml").read_text()
    else:
        text = Path(path).read_text()
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise ValueError(f"config {path or 'defaults'} is not a YAML mapping")
    return parse_config(raw)
