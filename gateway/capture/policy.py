"""Who and what gets captured: opted-in workloads and keys, the sample rate, the caps.

Decided in two steps because the answering tier is known only after routing: ``wants`` runs
before the request goes upstream (so the gateway can ask the tier for logprobs), and
``keeps`` runs on the booked record (the tier that actually answered must be a capture tier,
the answer must be a success).
"""

from __future__ import annotations

import random
import re

from gateway.config import CaptureConfig

_WORKLOAD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class InvalidWorkload(ValueError):
    """A workload header that is not a short name."""


def parse_workload(value: str | None, default: str) -> str:
    """The request's workload: the header's value, or ``default`` when it is absent."""
    if value is None or value == "":
        return default
    if not _WORKLOAD_RE.match(value):
        raise InvalidWorkload("a workload is 1-128 characters: letters, digits, '.', '_', ':' or '-', "
                              "starting with a letter or digit")
    return value


class CapturePolicy:
    def __init__(self, config: CaptureConfig, capture_tiers: set[str], *, auth_enabled: bool,
                 counts: dict[str, int] | None = None, seed: int | None = None) -> None:
        self.config = config
        self.capture_tiers = capture_tiers
        self.auth_enabled = auth_enabled
        # Records kept per workload (read from the database at start-up, then counted here):
        # the cap is per replica-accurate, approximate across replicas by at most their number.
        self.counts: dict[str, int] = dict(counts or {})
        self._random = random.Random(seed)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def workload_listed(self, workload: str) -> bool:
        return self.config.workloads == "*" or workload in self.config.workloads

    def wants(self, workload: str, key_opted_in: bool | None) -> bool:
        """Before routing: may this request's answer be kept (opt-ins, cap, sample)?

        ``key_opted_in`` is None when auth is off (then the workload's opt-in is enough).
        """
        if not self.config.enabled or not self.workload_listed(workload):
            return False
        if self.auth_enabled and not key_opted_in:
            return False
        if self.counts.get(workload, 0) >= self.config.max_records_per_workload:
            return False
        return self.config.sample_rate >= 1.0 or self._random.random() < self.config.sample_rate

    def keeps(self, tier: str | None, status: str) -> bool:
        """After the answer: only successful answers of a capture tier (the teacher) are data."""
        return status == "ok" and tier is not None and tier in self.capture_tiers

    def counted(self, workload: str) -> None:
        self.counts[workload] = self.counts.get(workload, 0) + 1
