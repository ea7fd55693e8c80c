"""A provider simulator for tests and benchmarks: OpenAI (chat completions, embeddings, responses,
models) and Anthropic Messages wire formats, with injectable behaviour and a record of every
request it received.

Behaviour is asked for inside the request itself, so concurrent tests never share state: a
directive `[[sim key=value ...]]` anywhere in the body (a message, an embedding input) sets:

- `status=N` answer with that error status (`message=...`, `retry_after=S` for 429s);
  `echo_key=1` puts the credential it received into the error message (to prove it is scrubbed)
- `first_byte_ms=N` wait before the response starts; `chunk_ms=N` wait between stream events
- `chunks=N` number of text deltas; `cut_after=N` drop the connection after N deltas
- `float_only=1` (embeddings) ignore `encoding_format` and answer floats
- `model=X` in a directive: its settings apply only to requests for the upstream model X (route
  tests make one target fail while another answers)

`python -m tests.simulator --port N --api-key K --anthropic-key K2` runs it; tests use
`tests.simulator.server.SimulatorProcess`. `GET /_sim/requests?contains=X` lists the recorded
requests whose raw body contains X: path, headers, body, and whether the client disconnected.
"""
