"""What a request needs from the tier that answers it, read off its body.

A support bot sends more than plain chat: tools and tool results, a ``response_format``,
images. A tier that cannot serve one of these would fail it or, worse, silently drop it
(an image part to a text-only model). Routing therefore keeps only the tiers whose declared
capabilities (``supports:`` in the config) cover the request's needs; a request that names
a tier which cannot serve it gets a 400 that names the tier and the missing capability.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.tier_config import TierCapabilities

# OpenAI content part types -> the modality they carry.
PART_MODALITY = {"text": "text", "image_url": "image", "input_image": "image", "input_audio": "audio",
                 "audio_url": "audio", "file": "file", "input_file": "file"}


@dataclass(frozen=True)
class RequestNeeds:
    tools: bool = False
    structured_output: bool = False
    modalities: frozenset[str] = field(default_factory=lambda: frozenset({"text"}))

    @classmethod
    def of(cls, body: dict) -> RequestNeeds:
        """The needs of a chat or text completion request body (already validated)."""
        tools = bool(body.get("tools")) and body.get("tool_choice") != "none"
        modalities = {"text"}
        for message in body.get("messages") or ():
            if not isinstance(message, dict):
                continue
            # A history with tool calls or results can only be rendered by a tool-aware template.
            if message.get("role") == "tool" or message.get("tool_calls"):
                tools = True
            content = message.get("content")
            if isinstance(content, list):
                modalities.update(PART_MODALITY.get(str(part.get("type")), str(part.get("type")))
                                  for part in content if isinstance(part, dict))
        response_format = body.get("response_format")
        structured = isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")
        return cls(tools=tools, structured_output=structured, modalities=frozenset(modalities))

    @property
    def plain(self) -> bool:
        return not self.tools and not self.structured_output and self.modalities == {"text"}

    def missing(self, supports: TierCapabilities) -> list[str]:
        """What ``supports`` lacks of these needs, as the names a client would recognise."""
        gaps = []
        if not supports.chat:
            gaps.append("chat")
        if self.tools and not supports.tools:
            gaps.append("tools")
        if self.structured_output and not supports.structured_output:
            gaps.append("response_format")
        gaps += sorted(f"{m} input" for m in self.modalities - set(supports.modalities))
        return gaps

    def param(self, gaps: list[str]) -> str:
        """The request parameter a 400 about ``gaps`` points at."""
        first = gaps[0] if gaps else ""
        return {"tools": "tools", "response_format": "response_format"}.get(first, "messages")
