"""The inference adapter: the process behind Envoy for POST /v1/chat/completions, /v1/embeddings
and /v1/responses (`python -m proxy_plugins.adapter`, port `settings.adapter_port`).

Envoy sends a request here only after the sidecar has authorized it, with `x-nx-model` (canonical
model id), `x-nx-backend`, `x-nx-org`, `x-nx-project`, `x-nx-key`, `x-nx-internal` and
`x-request-id`. The adapter turns those into a `RequestContext` (context.py), picks the handler for
the path (app.py `ROUTES`), and the handler talks to the model backend through `Backends`
(backends.py) and answers through an `Exchange` (exchange.py), which stamps the response metadata
headers (metering.py) on every answer, success or failure.

Plugging a new endpoint in: write `async def handle(ctx, body, exchange) -> None`, raise
`core.errors.ApiError` for anything refused before the answer starts, fill `ctx.usage`,
and add the path to `ROUTES` in app.py.
"""
