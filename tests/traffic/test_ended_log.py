"""The sidecar's reader of Envoy's access log (proxy_plugins/sidecar/ended.py): Fluentd forward
messages split out of a TCP byte stream wherever it breaks, and what each ending releases."""

from __future__ import annotations

import msgspec

from proxy_plugins.sidecar.ended import decode_forward, from_record, split_messages


def _message(n: int) -> bytes:
    records = [[1796300000 + i, {"id": f"req_{i}", "rl": "[]", "idem": None, "hold": "1,2,3,4",
                                 "flags": "UF" if i % 2 else "-", "code": 503, "up_sent": i * 700,
                                 "blob": "x" * (i * 40)}] for i in range(n)]
    return msgspec.msgpack.encode(["nx.ended", records])


def test_messages_are_split_out_of_a_stream_at_any_break() -> None:
    stream = _message(1) + _message(3) + _message(12)
    for cut in range(len(stream) + 1):
        first, rest = split_messages(stream[:cut])
        second, tail = split_messages(rest + stream[cut:])
        assert tail == b"" and b"".join(first + second) == stream
        assert len(first + second) == 3


def test_an_ending_says_whether_the_adapter_was_reached() -> None:
    ended = decode_forward(_message(3))
    assert [e.request_id for e in ended] == ["req_0", "req_1", "req_2"]
    assert [e.reached for e in ended] == [False, False, True]  # no byte upstream; UF; answered
    assert ended[0].held and ended[0].idem is None
    died = from_record({"id": "req_x", "flags": "UC", "up_sent": "1288"})
    assert died is not None and died.reached and "UC" in died.flags
    assert from_record({"id": "-"}) is None
