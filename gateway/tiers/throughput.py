"""Measured generation throughput of compute-priced tiers, from vLLM's own ``/metrics``.

A tier priced ``per_hour`` costs what its machine costs per hour divided by the tokens it
generates in that hour. The meter polls each such tier's vLLM server (the process the gateway
runs, the host process of an adapter tier, or a URL tier's ``metrics_url``) and keeps a
sliding window of ``(time, generation_tokens_total, requests running)`` samples. Throughput is
tokens generated per *busy* second (an interval counts as busy when requests were running or
tokens were generated in it): idle time is the price of having the tier at all, not of any
one request, so it is not charged to the requests that come after it.

Until a window holds ``min_busy_s`` busy seconds the price falls back to the configured
``assumed_tokens_per_s``, and the ledger row says which one was used (``price_source``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.tier_config import TierConfig

log = logging.getLogger("gateway.tiers")

GENERATION_TOKENS = "vllm:generation_tokens"  # a counter: its sample is ..._total
RUNNING = "vllm:num_requests_running"


@dataclass(frozen=True)
class Sample:
    at: float
    generated: float
    running: float


def parse_vllm_metrics(text: str) -> tuple[float, float] | None:
    """(generation tokens so far, requests running now), summed over engines and models, or None.

    Matched by sample name, whatever the ``# TYPE`` lines say (the parser files a counter under
    its name with or without ``_total`` depending on them).
    """
    generated = running = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == GENERATION_TOKENS + "_total":
                generated = (generated or 0.0) + sample.value
            elif sample.name == RUNNING:
                running = (running or 0.0) + sample.value
    if generated is None:
        return None
    return generated, running or 0.0


class ThroughputWindow:
    """Busy-time generation throughput over the last ``window_s`` seconds of samples."""

    def __init__(self, window_s: float = 300.0, min_busy_s: float = 5.0) -> None:
        self.window_s = window_s
        self.min_busy_s = min_busy_s
        self.samples: deque[Sample] = deque()
        self._tokens_per_s: float | None = None

    def add(self, sample: Sample) -> None:
        if self.samples and sample.generated < self.samples[-1].generated:
            self.samples.clear()  # the server restarted: its counter began again
        self.samples.append(sample)
        while self.samples and self.samples[0].at < sample.at - self.window_s:
            self.samples.popleft()
        self._tokens_per_s = self._measure()  # once per poll, not on every priced request

    def tokens_per_s(self) -> float | None:
        return self._tokens_per_s

    def _measure(self) -> float | None:
        generated = busy = 0.0
        previous = None
        for sample in self.samples:
            if previous is not None:
                produced = sample.generated - previous.generated
                if produced > 0 or previous.running > 0 or sample.running > 0:
                    generated += produced
                    busy += sample.at - previous.at
            previous = sample
        if busy < self.min_busy_s or generated <= 0:
            return None
        return generated / busy


class ThroughputMeter:
    """Polls the ``/metrics`` of every compute-priced tier; ``tokens_per_s(tier)`` for the pricing.

    ``metrics_urls`` maps each compute-priced tier to the ``/metrics`` URL of the server that
    runs it (built by the tier registry, which knows the ports); tiers sharing a process share
    one window.
    """

    def __init__(self, metrics_urls: dict[str, str], client: aiohttp.ClientSession, *, poll_s: float = 5.0,
                 window_s: float = 300.0, min_busy_s: float = 5.0) -> None:
        self.metrics_urls = metrics_urls
        self.client = client
        self.poll_s = poll_s
        self.windows = {url: ThroughputWindow(window_s, min_busy_s) for url in set(metrics_urls.values())}
        self._task: asyncio.Task | None = None

    def tokens_per_s(self, tier: str) -> float | None:
        url = self.metrics_urls.get(tier)
        return self.windows[url].tokens_per_s() if url is not None else None

    async def poll_once(self) -> None:
        for url, window in self.windows.items():
            try:
                async with self.client.get(url, timeout=aiohttp.ClientTimeout(total=2)) as reply:
                    if reply.status != 200:
                        continue
                    parsed = parse_vllm_metrics(await reply.text())
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue  # the tier is starting or away: its window just gets no sample
            if parsed is not None:
                window.add(Sample(time.monotonic(), *parsed))

    async def _run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.poll_s)

    def start(self) -> None:
        if self.windows and self._task is None:
            self._task = asyncio.create_task(self._run(), name="throughput-meter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def metrics_url_of(config: TierConfig, base_url: str | None) -> str | None:
    """Where a tier's server publishes its Prometheus metrics: vLLM serves ``/metrics`` next to ``/v1``."""
    if config.url is not None and config.url.metrics_url:
        return config.url.metrics_url
    if base_url is None:
        return None
    return base_url.rstrip("/").removesuffix("/v1") + "/metrics"
