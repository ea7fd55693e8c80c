"""The trace decision made from `traceparent`'s flags before the SDK is asked (core/telemetry/tracing.py):
an unsampled request gets no span at all, a sampled one continues its caller's trace."""

from __future__ import annotations

import tempfile

from opentelemetry import trace

from core.settings import load_settings
from core.telemetry import tracing
from tests.observability.otlp import Receiver

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"


def test_the_callers_flags_and_the_ratio_decide() -> None:
    receiver = Receiver().start()  # in this process, on an ephemeral loopback port
    try:
        for ratio, fresh in (("1", None), ("0", False)):
            _decide(receiver.url, ratio, fresh)
        assert {s.name for s in receiver.spans} == {"check"}  # the sampled span, exported; no other
    finally:
        receiver.stop()


def _decide(endpoint: str, ratio: str, fresh: bool | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tracing.setup("test", load_settings({"NX_DATA_DIR": tmp, "NX_OTEL_ENDPOINT": endpoint,
                                             "NX_TRACE_SAMPLE_RATIO": ratio}))
        try:
            assert tracing.extract([(b"traceparent", PARENT.format(flags="00").encode())]) is False
            assert tracing.span("x", False) is tracing.span("y", False)  # the shared no-op
            assert tracing.extract([]) is fresh  # a new trace: kept at the ratio
            assert tracing.extract([(b"traceparent", b"00-zz-yy-xx")]) is None  # malformed: a new trace
            sampled = tracing.extract([(b"traceparent", PARENT.format(flags="01").encode())])
            assert sampled is not None and not isinstance(sampled, bool)
            with tracing.span("check", sampled) as span:
                assert span is not None and span.is_recording()
                context = span.get_span_context()
                assert f"{context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
                headers: dict[str, str] = {}
                tracing.inject(headers)
                assert headers["traceparent"].split("-")[2] == f"{context.span_id:016x}"
            with tracing.child("orphan") as orphan:  # no recorded span around it: none
                assert orphan is None and not trace.get_current_span().is_recording()
        finally:
            tracing.shutdown()
            tracing._tracer = tracing._provider = None
