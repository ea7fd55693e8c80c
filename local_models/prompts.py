"""Turning chat requests into plain-text prompts and GBNF grammars for a base model.

Gemma 3 270M as shipped here is a base model: it has no chat template and was never taught turn
tokens, so llama.cpp's own chat endpoint returns empty text for it. A transcript in the shape of a
play script ("System: ...", "User: ...", "Assistant:") is something a base model continues
naturally, and the next role marker is a reliable end of turn, hence :data:`ROLE_STOPS`.

Structured output is enforced, not requested: ``response_format`` and tool calls become a llama.cpp
grammar (GBNF) so the sampler can only produce text matching the schema. A 270M model's answers
will be weak, but they will parse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from local_models.errors import bad_request
from local_models.schemas import ChatMessage, ResponseFormat, Tool, ToolChoiceObject

__all__ = ["ROLE_STOPS", "ToolMode", "grammar_for", "render_chat"]

_ROLE_NAMES = {
    "system": "System",
    "developer": "System",
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",
}
ROLE_STOPS: tuple[str, ...] = ("\nUser:", "\nSystem:", "\nAssistant:", "\nTool:")


@dataclass(frozen=True, slots=True)
class ToolMode:
    """How tool calls are produced: ``forced`` means the whole answer is one call."""

    names: tuple[str, ...]
    forced: bool


def _text_of(message: ChatMessage, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    parts: list[str] = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise bad_request(
                f"Content part type {part.type!r} is not supported by this text-only model.",
                param=f"messages[{index}].content",
            )
        parts.append(part.text)
    return "\n".join(parts)


def _tools_preamble(tools: list[Tool]) -> str:
    lines = [
        "You can call these functions. To call one, answer with only a JSON object "
        '{"name": <function name>, "arguments": <object>}.'
    ]
    for tool in tools:
        spec = {
            "name": tool.function.name,
            "description": tool.function.description or "",
            "parameters": tool.function.parameters or {"type": "object"},
        }
        lines.append(json.dumps(spec, separators=(",", ":")))
    return "\n".join(lines)


def render_chat(messages: list[ChatMessage], tools: list[Tool] | None) -> str:
    """Render the conversation as a transcript ending in an open ``Assistant:`` turn."""
    if not messages:
        raise bad_request("'messages' must contain at least one message.", param="messages")
    lines: list[str] = []
    if tools:
        lines.append(f"System: {_tools_preamble(tools)}")
    for index, message in enumerate(messages):
        role = _ROLE_NAMES.get(message.role)
        if role is None:
            raise bad_request(f"Unknown role {message.role!r}.", param=f"messages[{index}].role")
        text = _text_of(message, index)
        if message.tool_calls:
            calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls]
            text = "\n".join(filter(None, [text, *(json.dumps(c) for c in calls)]))
        lines.append(f"{role}: {text.strip()}")
    lines.append("Assistant:")
    return "\n".join(lines)


def _schema_grammar(schema: dict[str, Any], param: str) -> str:
    try:
        grammar: str = json_schema_to_gbnf(json.dumps(schema))
        return grammar
    except Exception as exc:  # the converter raises bare Exceptions for unsupported schemas
        raise bad_request(f"Unsupported JSON schema: {exc}", param=param) from exc


def _tool_call_schema(tools: list[Tool]) -> dict[str, Any]:
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": t.function.name},
                    "arguments": t.function.parameters or {"type": "object"},
                },
                "required": ["name", "arguments"],
            }
            for t in tools
        ]
    }


def grammar_for(
    response_format: ResponseFormat | None,
    tools: list[Tool] | None,
    tool_choice: str | ToolChoiceObject | None,
) -> tuple[str | None, ToolMode | None]:
    """The GBNF grammar constraining the answer (or None) and how tool calls are produced."""
    grammar: str | None = None
    if response_format is not None and response_format.type != "text":
        if response_format.type == "json_object":
            grammar = _schema_grammar({"type": "object"}, "response_format")
        elif response_format.type == "json_schema":
            spec = response_format.json_schema
            if spec is None or spec.schema is None:
                raise bad_request(
                    "'response_format.json_schema.schema' is required.", param="response_format.json_schema"
                )
            grammar = _schema_grammar(spec.schema, "response_format.json_schema.schema")
        else:
            raise bad_request(
                f"Unsupported response_format type {response_format.type!r}.", param="response_format.type"
            )
    if not tools or tool_choice == "none":
        return grammar, None
    if grammar is not None:
        raise bad_request(
            "'response_format' cannot be combined with 'tools' on this model.", param="response_format"
        )
    for index, tool in enumerate(tools):
        if tool.type != "function":
            raise bad_request(f"Tool type {tool.type!r} is not supported.", param=f"tools[{index}].type")
    if isinstance(tool_choice, ToolChoiceObject):
        chosen = [t for t in tools if t.function.name == tool_choice.function.name]
        if not chosen:
            raise bad_request(
                f"tool_choice names unknown function {tool_choice.function.name!r}.", param="tool_choice"
            )
        tools = chosen
    elif tool_choice not in (None, "auto", "required"):
        raise bad_request(f"Unsupported tool_choice {tool_choice!r}.", param="tool_choice")
    call = _schema_grammar(_tool_call_schema(tools), "tools")
    names = tuple(t.function.name for t in tools)
    if tool_choice is None or tool_choice == "auto":
        # Either a call (the answer starts with "{") or free text (it does not): the model
        # chooses with its first token, and a call, once begun, must complete.
        # An optional leading space on either branch: the transcript ends in "Assistant:", so the
        # model's natural first token carries a space.
        call = re.sub(r"^root ::=", "call ::=", call, count=1, flags=re.MULTILINE)
        free = 'root ::= " "? call | " "? free\nfree ::= [^{ ] [^\\x00]*\n'
        return free + call, ToolMode(names, forced=False)
    return call, ToolMode(names, forced=True)
