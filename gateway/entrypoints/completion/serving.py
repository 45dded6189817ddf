"""Text completions: the shared sampling engine with the completion request model."""

from __future__ import annotations

from typing import Any

from gateway.entrypoints.completion.protocol import CompletionRequest
from gateway.entrypoints.engine.serving import SamplingServing


class ServingCompletion(SamplingServing):
    """``/v1/completions``; built in the lifespan with the engine's collaborators."""

    def __init__(self, **collaborators: Any) -> None:
        super().__init__("completion", CompletionRequest, **collaborators)
