"""What the server process holds: each model loaded at most once, one fair queue per model, and
the bounds on one request's work."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from local_models import EMBEDDING_MODEL_ID, TEXT_MODEL_ID
from local_models.embeddings import EmbeddingModel
from local_models.fairqueue import FairQueue
from local_models.text import TextModel

__all__ = ["KNOWN_MODELS", "ServerState"]

KNOWN_MODELS = {TEXT_MODEL_ID, EMBEDDING_MODEL_ID}


@dataclass(slots=True)
class ServerState:
    text_worker: FairQueue
    embed_worker: FairQueue
    max_output_tokens: int = 1024
    """Tokens one text generation may produce, whatever it asks (the catalog's max_output_tokens)."""
    max_embedding_tokens: int = 32_768
    """Tokens one embeddings request may make the model read (inputs x length, after truncation)."""
    text: TextModel | None = None
    embed: EmbeddingModel | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    load_errors: dict[str, str] = field(default_factory=dict)

    def admitted(self) -> dict[str, int]:
        """Requests each model's worker has admitted (running plus waiting), as /health shows them."""
        return {TEXT_MODEL_ID: self.text_worker.admitted, EMBEDDING_MODEL_ID: self.embed_worker.admitted}

    def queues(self) -> dict[str, dict[str, int]]:
        """Per model: requests admitted (running or waiting), the tenants they are for, jobs waiting."""
        return {TEXT_MODEL_ID: self.text_worker.stats(), EMBEDDING_MODEL_ID: self.embed_worker.stats()}

    def statuses(self) -> dict[str, str]:
        return {
            TEXT_MODEL_ID: "ready" if self.text is not None else "unavailable",
            EMBEDDING_MODEL_ID: "ready" if self.embed is not None else "unavailable",
        }
