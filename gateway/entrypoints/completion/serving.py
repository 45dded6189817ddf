"""Text completions: the shared sampling proxy with the completion request model."""

from gateway.entrypoints.completion.protocol import CompletionRequest
from gateway.entrypoints.sampling_proxy import SamplingProxy

serving_completion = SamplingProxy("completion", CompletionRequest)
