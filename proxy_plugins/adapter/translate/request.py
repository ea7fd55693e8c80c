"""Parse and validate a `POST /v1/responses` body into normalized input items.

Normalized items are plain JSON-able dicts in the exact shapes the Responses API uses for input
items (`message` with a content-part list, `function_call`, `function_call_output`), so the same
list is translated for any backend, stored, listed by `input_items` and replayed for
`previous_response_id`. Anything the platform cannot honour is refused with a 400 naming the
parameter, never dropped.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from core.errors import ApiError
from core.ids import is_well_formed
from core.jsonbody import decode

__all__ = [
    "CreateResponse",
    "FunctionTool",
    "Item",
    "check_capabilities",
    "normalize_input",
    "parse_request",
]

Item = dict[str, Any]
Number = float | int


class FunctionTool(msgspec.Struct, kw_only=True, omit_defaults=False):
    type: Literal["function"] = "function"
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class CreateResponse(msgspec.Struct, kw_only=True):
    model: str
    input: str | list[Any] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    truncation: str | None = None
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    conversation: Any = None
    prompt: Any = None

    def function_tools(self) -> list[FunctionTool]:
        return [msgspec.convert(t, FunctionTool) for t in self.tools or []]

    def text_format(self) -> dict[str, Any]:
        fmt = (self.text or {}).get("format") or {"type": "text"}
        if not isinstance(fmt, dict):
            raise ApiError("invalid_request_error", "'text.format' must be an object.", "text.format")
        return dict(fmt)


_ROLES = ("user", "assistant", "system", "developer")
# Accepted and echoed, but they change nothing a translated backend can act on.
_IGNORED_INCLUDE = {
    "message.output_text.logprobs",
    "reasoning.encrypted_content",
    "message.input_image.image_url",
}


def _bad(message: str, param: str, code: str = "invalid_request_error") -> ApiError:
    return ApiError(code, message, param)


def parse_request(body: bytes) -> CreateResponse:
    try:
        req = decode(body, type=CreateResponse)
    except msgspec.ValidationError as exc:
        text = str(exc)
        param = text.split("`$.", 1)[1].split("`", 1)[0] if "`$." in text else None
        raise ApiError("invalid_request_error", f"Invalid request: {text}", param) from None
    except msgspec.DecodeError:
        raise ApiError("invalid_json", "We could not parse the JSON body of your request.") from None
    if req.input is None:
        raise _bad("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    previous = req.previous_response_id
    if previous and not is_well_formed(previous, "resp"):
        # What a lookup would answer, without one (a NUL in it would fail in PostgreSQL).
        raise _bad(f"Previous response with id '{previous[:100]}' not found.", "previous_response_id", "not_found")
    for name in ("conversation", "prompt"):
        if getattr(req, name) is not None:
            raise _bad(
                f"'{name}' is not supported on this platform; use 'previous_response_id'.",
                name,
                "unsupported_parameter",
            )
    if req.top_logprobs:
        raise _bad("'top_logprobs' is not supported.", "top_logprobs", "unsupported_parameter")
    for i, inc in enumerate(req.include or []):
        if inc not in _IGNORED_INCLUDE:
            raise _bad(f"include value '{inc}' is not supported.", f"include[{i}]", "unsupported_parameter")
    if req.max_output_tokens is not None and req.max_output_tokens < 1:
        raise _bad("'max_output_tokens' must be at least 1.", "max_output_tokens")
    if req.temperature is not None and not 0 <= req.temperature <= 2:
        raise _bad("'temperature' must be between 0 and 2.", "temperature")
    if req.top_p is not None and not 0 <= req.top_p <= 1:
        raise _bad("'top_p' must be between 0 and 1.", "top_p")
    if req.background and req.store is False:
        raise _bad("Background responses must be stored: do not set 'store' to false.", "store")
    _check_tools(req)
    _check_format(req)
    return req


def _check_tools(req: CreateResponse) -> None:
    for i, tool in enumerate(req.tools or []):
        if tool.get("type") != "function":
            raise _bad(
                f"Tool type '{tool.get('type')}' is not supported; only 'function' tools are.",
                f"tools[{i}].type",
                "unsupported_parameter",
            )
        try:
            msgspec.convert(tool, FunctionTool)
        except msgspec.ValidationError as exc:
            raise _bad(f"Invalid function tool: {exc}", f"tools[{i}]") from None
    choice = req.tool_choice
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        raise _bad("'tool_choice' must be 'none', 'auto', 'required' or a function.", "tool_choice")
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise _bad(
                "Only {'type': 'function', 'name': ...} tool choices are supported.",
                "tool_choice",
                "unsupported_parameter",
            )
        if choice["name"] not in {t.get("name") for t in req.tools or []}:
            raise _bad(f"tool_choice names '{choice['name']}', which is not in 'tools'.", "tool_choice")


def _check_format(req: CreateResponse) -> None:
    fmt = req.text_format()
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise _bad(f"text.format type '{kind}' is not supported.", "text.format.type")
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not fmt["name"]:
            raise _bad(
                "Missing required parameter: 'text.format.name'.",
                "text.format.name",
                "missing_required_parameter",
            )
        if not isinstance(fmt.get("schema"), dict):
            raise _bad(
                "Missing required parameter: 'text.format.schema'.",
                "text.format.schema",
                "missing_required_parameter",
            )


def normalize_input(raw: str | list[Any]) -> list[Item]:
    """The request's `input` as a list of canonical input items."""
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}]
    items: list[Item] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _bad("Each input item must be an object.", f"input[{i}]")
        if item.get("type") == "reasoning":
            # A model's private reasoning (echoed back from an earlier output) has no portable
            # content: no Chat or Messages backend can take it, and it changes no answer.
            continue
        items.append(_item(item, f"input[{i}]"))
    return items


def _item(item: dict[str, Any], param: str) -> Item:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise _bad(f"Invalid role {role!r}; expected one of {', '.join(_ROLES)}.", f"{param}.role")
        return {"type": "message", "role": role, "content": _content(item.get("content"), role, param)}
    if kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(item.get(key), str):
                raise _bad(f"function_call items need a string '{key}'.", f"{param}.{key}")
        return {
            "type": "function_call",
            "call_id": item["call_id"],
            "name": item["name"],
            "arguments": item["arguments"],
        }
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise _bad("function_call_output items need a string 'call_id'.", f"{param}.call_id")
        output = item.get("output")
        if isinstance(output, list):
            output = "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
        if not isinstance(output, str):
            raise _bad("function_call_output.output must be a string.", f"{param}.output")
        return {"type": "function_call_output", "call_id": item["call_id"], "output": output}
    raise _bad(f"Input item type '{kind}' is not supported.", f"{param}.type", "unsupported_parameter")


def _content(content: Any, role: str, param: str) -> list[Item]:
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        return [_text_part(text_type, content)]
    if not isinstance(content, list):
        raise _bad("Message content must be a string or a list of parts.", f"{param}.content")
    parts: list[Item] = []
    for j, part in enumerate(content):
        where = f"{param}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append(_text_part(text_type, part["text"]))
        elif kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
            parts.append({"type": "refusal", "refusal": part["refusal"]})
        elif kind == "input_image" and role != "assistant":
            url = part.get("image_url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:image/")):
                raise _bad(
                    "input_image needs an 'image_url' (http(s) or data:image/ URL); file ids are not "
                    "supported.",
                    f"{where}.image_url",
                )
            detail = part.get("detail") or "auto"
            parts.append({"type": "input_image", "image_url": url, "detail": detail})
        else:
            raise _bad(
                f"Content part type {kind!r} is not supported here.", f"{where}.type", "unsupported_parameter"
            )
    return parts


def _text_part(kind: str, text: str) -> Item:
    if kind == "output_text":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


def check_capabilities(req: CreateResponse, items: list[Item], caps: dict[str, object], model: str) -> None:
    """Refuse what the model cannot do, naming the parameter (never a silent drop)."""

    def refuse(what: str, param: str) -> ApiError:
        return ApiError("unsupported_capability", f"The model '{model}' does not support {what}.", param)

    if req.tools and not caps.get("tools"):
        raise refuse("tools (function calling)", "tools")
    kind = req.text_format().get("type")
    if kind in ("json_schema", "json_object") and not caps.get(str(kind)):
        raise refuse(f"structured output ({kind})", "text.format")
    if req.stream and not caps.get("streaming", True):
        raise refuse("streaming", "stream")
    for i, item in enumerate(items):
        for j, part in enumerate(item.get("content") or []):
            if part.get("type") == "input_image" and not caps.get("vision"):
                raise refuse("image input (vision)", f"input[{i}].content[{j}]")
