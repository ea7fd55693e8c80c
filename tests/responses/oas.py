"""Validate objects and stream events against OpenAI's official OpenAPI document (tests/data)."""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
import msgspec
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.compat.openapi_schema import SPEC_PATH


@functools.cache
def _registry() -> Registry[Any]:
    doc = yaml.load(SPEC_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (safe loader)
    return Registry().with_resource("urn:oas", Resource.from_contents(doc, default_specification=DRAFT202012))


@functools.cache
def _validator(schema: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$ref": f"urn:oas#/components/schemas/{schema}"}, registry=_registry()
    )


def validate(obj: Any, schema: str) -> None:
    """Raise `jsonschema.ValidationError` unless `obj` (builtins or Structs) matches `schema`."""
    data = msgspec.json.decode(msgspec.json.encode(obj))
    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(data))
    if error is not None:
        raise AssertionError(f"{schema}: {error.message} at {list(error.absolute_path)}: {str(data)[:500]}")


EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.queued": "ResponseQueuedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.failed": "ResponseFailedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.refusal.delta": "ResponseRefusalDeltaEvent",
    "response.refusal.done": "ResponseRefusalDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "error": "ResponseErrorEvent",
}


def validate_events(events: list[dict[str, Any]]) -> None:
    """Every event against its own schema (and the `ResponseStreamEvent` union), with
    `sequence_number` strictly increasing."""
    last = -1
    for event in events:
        data = msgspec.json.decode(msgspec.json.encode(event))
        validate(data, EVENT_SCHEMAS[data["type"]])
        assert data["sequence_number"] > last, f"sequence_number not increasing at {data['type']}"
        last = data["sequence_number"]
