"""Which weights a workload's student starts from: those of the teacher whose answers were
captured, when the gateway serves that teacher itself.

Layer-drop initialisation copies some of the teacher's layers. Copying them from the model that
produced the training targets (the support adapter merged into its base, say) keeps what that
teacher was tuned for; copying them from the packaged base model throws it away and leaves the
few captured requests to teach it all again. A teacher reached by URL or through litellm has no
weights here: the student then starts from the packaged model and learns from the captured
answers and logprobs alone (sparse top-k KD), which is what the distill recipe does anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.config import GatewayConfig
from gateway.ledger.schema import captures_table

PACKAGED = "default"


@dataclass(frozen=True)
class TeacherWeights:
    """A distill recipe's ``teacher`` / ``teacher_adapter``, and why."""

    model: str  # "default" (the packaged model) or a model dir
    adapter: Path | None
    tier: str | None
    why: str

    def as_recipe(self) -> dict:
        return {"teacher": self.model, **({"teacher_adapter": str(self.adapter)} if self.adapter else {})}


def captured_tier(engine: Engine, workload: str) -> str | None:
    """The tier that answered most of the workload's captured requests."""
    count = sa.func.count().label("n")
    stmt = (sa.select(captures_table.c.tier, count).where(captures_table.c.workload == workload)
            .group_by(captures_table.c.tier).order_by(count.desc()).limit(1))
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    return None if row is None else str(row.tier)


def teacher_weights(config: GatewayConfig | None, tier: str | None) -> TeacherWeights:
    """The weights behind ``tier`` in ``config``: a ``vllm:`` tier's model dir, or the host's
    model plus the LoRA adapter of a ``served_by:`` tier; else the packaged model."""
    if tier is None or config is None or not any(t.model_name == tier for t in config.model_list):
        where = "no captured tier" if tier is None else f"tier {tier!r} is not in the gateway config"
        return TeacherWeights(PACKAGED, None, tier, f"{where}: the student starts from the packaged model")
    entry = config.tier(tier)
    server = (config.tier(entry.served_by) if entry.served_by else entry).vllm
    adapter = server.lora_modules.get(tier) if server is not None and entry.served_by else None
    if server is None or (entry.served_by and adapter is None):
        return TeacherWeights(PACKAGED, None, tier, f"{tier} is a {entry.kind} tier (no local weights): "
                              "the student starts from the packaged model")
    if not Path(server.model).is_dir():  # a hub id: nothing to copy offline
        return TeacherWeights(PACKAGED, None, tier, f"{tier}: {server.model} is not a model dir here: "
                              "the student starts from the packaged model")
    if adapter:
        return TeacherWeights(server.model, Path(adapter), tier,
                              f"{tier}: LoRA adapter {adapter} on {server.model}, merged")
    return TeacherWeights(server.model, None, tier, f"{tier}: vLLM model dir {server.model}")
