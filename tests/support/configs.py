"""Gateway configs for tests that use the stub upstream."""

from __future__ import annotations

TEACHER = {"input_per_million": 3.0, "output_per_million": 15.0}
STUDENT = {"input_per_million": 0.5, "output_per_million": 2.0}


def stub_config(teacher_url: str, ledger_url: str, student_url: str | None = None, *, auth: bool = False,
                **extra) -> dict:
    """Two URL tiers (teacher, student) on stub upstreams; the student falls back to the teacher."""
    return {
        "model_list": [
            {"model_name": "teacher", "role": "teacher", "price": TEACHER, "url": {"base_url": teacher_url + "/v1"}},
            {"model_name": "student", "role": "student", "price": STUDENT, "fallbacks": ["teacher"],
             "breaker_cooldown_s": 1.0,
             "url": {"base_url": (student_url or teacher_url) + "/v1", "max_model_len": 2048}},
        ],
        "router": {"policy": "fixed", "default_tier": "student"},
        "ledger": {"url": ledger_url},
        "auth": {"enabled": auth, "cache_ttl_s": 0.5},
        **extra,
    }
