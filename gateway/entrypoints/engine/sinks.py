"""What happens to a booked request besides its row: the ``Booking``'s sinks.

Each sink is called with the booked record (its cost set) and must not block: it schedules
its own work. Built at start-up with the collaborator it feeds.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.ledger.booking import BookedSink, RequestRecord
from gateway.limits import Limiter
from gateway.shadow.sampler import ShadowSampler

log = logging.getLogger("gateway.requests")


def shadow_sink(shadow: ShadowSampler) -> BookedSink:
    """A student answer chosen as a shadow sample goes to the reference tier for comparison."""

    def submit_shadow(record: RequestRecord) -> None:
        if record.shadow_body is not None and record.status == "ok" and record.tier:
            shadow.submit(record.request_id, record.tier, record.endpoint, record.shadow_body,  # type: ignore[arg-type]
                          "".join(record.texts or []), record.workload)

    return submit_shadow


def settle_sink(limiter: Limiter) -> BookedSink:
    """The key's usage is counted, and its budget hold released, once: when its row is booked."""

    def settle_usage(record: RequestRecord) -> None:
        if record.key is None or not (record.prompt_tokens or record.completion_tokens or record.reservation):
            return
        settle = asyncio.ensure_future(limiter.settle(
            record.key, record.prompt_tokens + record.completion_tokens, record.cost, record.reservation))
        record.reservation = None  # released once, on whichever path books the row
        settle.add_done_callback(_log_settle_error)

    return settle_usage


def _log_settle_error(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("limits: counting usage failed: %s", task.exception())
