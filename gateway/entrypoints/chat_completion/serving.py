"""Chat completions: the shared sampling engine with the chat request model."""

from __future__ import annotations

from typing import Any

from gateway.entrypoints.chat_completion.protocol import ChatCompletionRequest
from gateway.entrypoints.engine.serving import SamplingServing


class ServingChat(SamplingServing):
    """``/v1/chat/completions``; built in the lifespan with the engine's collaborators."""

    def __init__(self, **collaborators: Any) -> None:
        super().__init__("chat", ChatCompletionRequest, **collaborators)
