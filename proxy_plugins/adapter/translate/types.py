"""Wire types of the Responses API as the platform emits them (OpenAPI `Response`, output items,
usage and stream events), as msgspec Structs so every object leaving the adapter has one shape.

Nullable fields are emitted as `null`, never omitted: the Open Responses compliance set requires
every key of `Response` to be present (api-surface.md section 2.3).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "Annotation",
    "ContentPart",
    "FunctionCallItem",
    "IncompleteDetails",
    "InputTokensDetails",
    "MessageItem",
    "OutputItem",
    "OutputText",
    "OutputTokensDetails",
    "Refusal",
    "Response",
    "ResponseErrorInfo",
    "Status",
    "Usage",
    "event_bytes",
]

Status = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class Annotation(msgspec.Struct, kw_only=True):
    type: str


class OutputText(msgspec.Struct, kw_only=True, tag_field="type", tag="output_text", omit_defaults=False):
    text: str
    annotations: list[dict[str, Any]] = msgspec.field(default_factory=list)
    logprobs: list[dict[str, Any]] = msgspec.field(default_factory=list)


class Refusal(msgspec.Struct, kw_only=True, tag_field="type", tag="refusal"):
    refusal: str


ContentPart = OutputText | Refusal


class MessageItem(msgspec.Struct, kw_only=True, tag_field="type", tag="message"):
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[ContentPart] = msgspec.field(default_factory=list)


class FunctionCallItem(msgspec.Struct, kw_only=True, tag_field="type", tag="function_call"):
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


OutputItem = MessageItem | FunctionCallItem


class InputTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(msgspec.Struct, kw_only=True):
    reasoning_tokens: int = 0


class Usage(msgspec.Struct, kw_only=True):
    """`input_tokens` includes cached tokens (OpenAI's convention, unlike Anthropic's)."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = msgspec.field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = msgspec.field(default_factory=OutputTokensDetails)
    total_tokens: int = 0

    @classmethod
    def of(
        cls, input_tokens: int, output_tokens: int, cached: int = 0, cache_write: int = 0, reasoning: int = 0
    ) -> Usage:
        return cls(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=cached, cache_write_tokens=cache_write),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
        )


class ResponseErrorInfo(msgspec.Struct, kw_only=True):
    code: str
    """One of OpenAI's `ResponseErrorCode` values (`server_error`, `rate_limit_exceeded`, ...)."""
    message: str


class IncompleteDetails(msgspec.Struct, kw_only=True):
    reason: Literal["max_output_tokens", "content_filter"]


class Reasoning(msgspec.Struct, kw_only=True, omit_defaults=False):
    effort: str | None = None
    summary: str | None = None


class Response(msgspec.Struct, kw_only=True, omit_defaults=False):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: Status
    error: ResponseErrorInfo | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[OutputItem] = msgspec.field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: Reasoning = msgspec.field(default_factory=Reasoning)
    store: bool = True
    background: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0
    text: dict[str, Any] = msgspec.field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = msgspec.field(default_factory=list)
    truncation: str = "disabled"
    # Not nullable in the OpenAPI document either: absent until known.
    usage: Usage | msgspec.UnsetType = msgspec.UNSET
    # OpenAPI types `user` as a string (no null), so it is left out rather than null when unset.
    user: str | msgspec.UnsetType = msgspec.UNSET
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str = "default"

    def output_text(self) -> str:
        return "".join(
            p.text
            for item in self.output
            if isinstance(item, MessageItem)
            for p in item.content
            if isinstance(p, OutputText)
        )


_encoder = msgspec.json.Encoder()


def event_bytes(event: dict[str, Any]) -> bytes:
    """One Responses SSE frame: `event: <type>` then the JSON (which repeats `type`)."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + _encoder.encode(event) + b"\n\n"
