"""``python -m local_models.server``: both local models behind one OpenAI-compatible HTTP server.

Why not llama-cpp-python's own server (``llama_cpp.server``): it is the natural first choice and
works offline for ``/v1/completions``, but (1) its ``/v1/chat/completions`` returns empty text for
this base model, which has no chat template; (2) it has no bounded queue: excess requests wait on a
lock without limit instead of getting a 503 the edge can act on; (3) it serves no ONNX embedding
model, so a second process would be needed; and (4) it pulls FastAPI, pydantic-settings and
sse-starlette into a platform built on msgspec. So this is a thin server over ``llama_cpp.Llama``.

Each model is loaded once, before the port opens. A model whose files are missing or fail to load
is reported ``unavailable`` (``/health``) and answers 503 ``model_unavailable``; the other model
and the server keep working, so the platform's one command never fails for want of weights.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import uvicorn

from local_models import (
    DEFAULT_MODELS_DIR,
    EMBEDDING_MODEL_FILE,
    EMBEDDING_MODEL_ID,
    EMBEDDING_TOKENIZER_FILE,
    TEXT_MODEL_FILE,
    TEXT_MODEL_ID,
)
from local_models.api import routes
from local_models.asgi import App
from local_models.fairqueue import FairQueue
from local_models.state import ServerState

__all__ = ["build_app", "load_models", "main"]

log = logging.getLogger("local_models")


def load_models(state: ServerState, models_dir: Path, *, n_ctx: int, threads: int | None) -> None:
    """Load every model whose files exist; record why the others are unavailable."""
    gguf = models_dir / TEXT_MODEL_FILE
    if gguf.is_file():
        started = time.perf_counter()
        try:
            # Imported here so a missing llama-cpp-python only makes this one model unavailable.
            from local_models.text import TextModel

            state.text = TextModel(gguf, n_ctx=n_ctx, threads=threads)
            log.warning("%s loaded in %.2f s", TEXT_MODEL_ID, time.perf_counter() - started)
        except Exception as exc:  # any failure: report unavailable rather than refuse to start
            state.load_errors[TEXT_MODEL_ID] = f"{type(exc).__name__}: {exc}"
    else:
        state.load_errors[TEXT_MODEL_ID] = f"missing {gguf}; run python -m local_models.fetch"
    onnx, tokenizer = models_dir / EMBEDDING_MODEL_FILE, models_dir / EMBEDDING_TOKENIZER_FILE
    if onnx.is_file() and tokenizer.is_file():
        started = time.perf_counter()
        try:
            from local_models.embeddings import EmbeddingModel

            state.embed = EmbeddingModel(onnx, tokenizer, threads=threads)
            log.warning("%s loaded in %.2f s", EMBEDDING_MODEL_ID, time.perf_counter() - started)
        except Exception as exc:
            state.load_errors[EMBEDDING_MODEL_ID] = f"{type(exc).__name__}: {exc}"
    else:
        state.load_errors[EMBEDDING_MODEL_ID] = (
            f"missing {onnx} or {tokenizer}; run python -m local_models.fetch"
        )
    for model, reason in state.load_errors.items():
        log.warning("%s unavailable: %s", model, reason)


def build_app(state: ServerState) -> App:
    async def shutdown() -> None:
        state.text_worker.shutdown()
        state.embed_worker.shutdown()

    return App(routes(state), on_shutdown=shutdown)


def _weights(parser: argparse.ArgumentParser, pairs: list[str]) -> dict[str, float]:
    weights: dict[str, float] = {}
    for pair in pairs:
        tenant, _, value = pair.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = 0.0
        if not tenant or not weight > 0:
            parser.error(f"--tenant-weight expects TENANT=WEIGHT with a positive weight, got {pair!r}")
        weights[tenant] = weight
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_models.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--models-dir", type=Path, default=Path(DEFAULT_MODELS_DIR))
    parser.add_argument(
        "--max-queue",
        type=int,
        default=16,
        help="requests waiting per model beyond the one running; more get 503",
    )
    parser.add_argument(
        "--max-per-tenant",
        type=int,
        default=4,
        help="requests of one tenant (x-nx-tenant) queued or running per model; more get 429",
    )
    parser.add_argument(
        "--tenant-weight",
        action="append",
        default=[],
        metavar="TENANT=WEIGHT",
        help="a tenant's share of the models relative to others (default 1); repeatable",
    )
    parser.add_argument(
        "--max-output-tokens", type=int, default=1024, help="tokens one text generation may produce"
    )
    parser.add_argument(
        "--max-embedding-tokens",
        type=int,
        default=32_768,
        help="tokens one embeddings request may make the model read (inputs x length); more get 400",
    )
    parser.add_argument("--n-ctx", type=int, default=4096, help="text model context, in tokens")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads per model (default: all cores)"
    )
    args = parser.parse_args(argv)
    if args.max_queue < 0:
        parser.error("--max-queue must be >= 0")
    for name in ("max_per_tenant", "max_output_tokens", "max_embedding_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    weights = _weights(parser, args.tenant_weight)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state = ServerState(
        text_worker=FairQueue("text", args.max_queue, args.max_per_tenant, weights),
        embed_worker=FairQueue("embed", args.max_queue, args.max_per_tenant, weights),
        max_output_tokens=args.max_output_tokens,
        max_embedding_tokens=args.max_embedding_tokens,
    )
    load_models(state, args.models_dir, n_ctx=args.n_ctx, threads=args.threads or os.cpu_count())
    try:
        import uvloop  # noqa: F401 - only probing that it is installed

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    uvicorn.run(
        build_app(state),
        host=args.host,
        port=args.port,
        loop=loop,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
