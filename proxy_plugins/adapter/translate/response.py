"""The `Response` object for a request: its echo of the request parameters, and its completion."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from proxy_plugins.adapter.translate.request import CreateResponse
from proxy_plugins.adapter.translate.types import IncompleteDetails, OutputItem, Response, Status, Usage

__all__ = ["complete", "skeleton"]


def skeleton(
    req: CreateResponse,
    *,
    response_id: str,
    model: str,
    status: Status = "in_progress",
    created_at: int | None = None,
) -> Response:
    """The response as it stands before the model answers, echoing what the client asked for."""
    text: dict[str, Any] = {"format": req.text_format()}
    if req.text and req.text.get("verbosity"):
        text["verbosity"] = req.text["verbosity"]
    return Response(
        id=response_id,
        created_at=created_at if created_at is not None else int(time.time()),
        status=status,
        model=model,
        instructions=req.instructions,
        max_output_tokens=req.max_output_tokens,
        max_tool_calls=req.max_tool_calls,
        previous_response_id=req.previous_response_id,
        store=req.store is not False,
        background=bool(req.background),
        temperature=float(req.temperature) if req.temperature is not None else 1.0,
        top_p=float(req.top_p) if req.top_p is not None else 1.0,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        text=text,
        tool_choice=req.tool_choice if req.tool_choice is not None else "auto",
        tools=[msgspec.to_builtins(t) for t in req.function_tools()],
        truncation=req.truncation or "disabled",
        user=req.user if req.user is not None else msgspec.UNSET,
        metadata=dict(req.metadata or {}),
        safety_identifier=req.safety_identifier,
        prompt_cache_key=req.prompt_cache_key,
        service_tier=req.service_tier if req.service_tier not in (None, "auto") else "default",
    )


def complete(response: Response, output: list[OutputItem], usage: Usage, incomplete: str | None) -> Response:
    response.output = output
    response.usage = usage
    response.completed_at = int(time.time())
    if incomplete in ("max_output_tokens", "content_filter"):
        response.status = "incomplete"
        response.incomplete_details = IncompleteDetails(reason=incomplete)  # type: ignore[arg-type]
    else:
        response.status = "completed"
    return response
