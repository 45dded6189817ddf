"""Chat completions: the shared sampling proxy with the chat request model."""

from gateway.entrypoints.chat_completion.protocol import ChatCompletionRequest
from gateway.entrypoints.sampling_proxy import SamplingProxy

serving_chat = SamplingProxy("chat", ChatCompletionRequest)
