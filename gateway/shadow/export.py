"""Shadow pairs in RouteLLM's format, so the router can be retrained on live traffic.

One row per prompt: ``prompt``, then one True/False column per model. The reference (teacher)
answer is taken as correct; the student's is correct when its agreement reached ``agree_at``.
Pairs without a prompt or whose shadow call failed are skipped. Prompts are stored only with
``ledger.store_content: true`` (and ``shadow.store_prompts``); without them the pairs still
feed drift monitoring but cannot be exported, and the export says how many it skipped.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.ledger.schema import shadow_pairs_table as t

log = logging.getLogger("gateway.shadow")


def prompt_text(prompt_json: str) -> str:
    """The last user turn (what the router scores), from the stored messages or prompt."""
    value = json.loads(prompt_json)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        users = [m.get("content") for m in value if m.get("role") == "user"]
        content = users[-1] if users else value[-1].get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content or "")
    if isinstance(value, list):
        return "\n".join(map(str, value))
    return str(value)


def export_routellm(engine: Engine, out: Path, agree_at: float) -> int:
    stmt = (sa.select(t.c.prompt, t.c.tier, t.c.reference_tier, t.c.agreement)
            .where(t.c.prompt.is_not(None), t.c.agreement.is_not(None)).order_by(t.c.id))
    without_prompt = (sa.select(sa.func.count()).select_from(t)
                      .where(t.c.prompt.is_(None), t.c.agreement.is_not(None)))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        skipped = conn.execute(without_prompt).scalar_one()
    if skipped:
        # A warning reaches stderr even from a CLI that configured no logging (logging.lastResort).
        log.warning("shadow export: skipped %d pairs stored without their prompt (ledger.store_content "
                    "was off when they were sampled); exported %d", skipped, len(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    tiers = sorted({r.tier for r in rows}) + sorted({r.reference_tier for r in rows})
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", *dict.fromkeys(tiers)])
        writer.writeheader()
        for r in rows:
            writer.writerow({"prompt": prompt_text(r.prompt), r.tier: r.agreement >= agree_at,
                             r.reference_tier: True})
    return len(rows)
