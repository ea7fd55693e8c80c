"""What the server process holds: each model loaded at most once, and one bounded worker per model."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from local_models import EMBEDDING_MODEL_ID, TEXT_MODEL_ID
from local_models.embeddings import EmbeddingModel
from local_models.text import TextModel
from local_models.worker import BoundedWorker

__all__ = ["KNOWN_MODELS", "ServerState"]

KNOWN_MODELS = {TEXT_MODEL_ID, EMBEDDING_MODEL_ID}


@dataclass(slots=True)
class ServerState:
    text_worker: BoundedWorker
    embed_worker: BoundedWorker
    text: TextModel | None = None
    embed: EmbeddingModel | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    load_errors: dict[str, str] = field(default_factory=dict)

    def admitted(self) -> dict[str, int]:
        """Requests each model's worker has admitted (running plus waiting), as /health shows them."""
        return {TEXT_MODEL_ID: self.text_worker.admitted, EMBEDDING_MODEL_ID: self.embed_worker.admitted}

    def statuses(self) -> dict[str, str]:
        return {
            TEXT_MODEL_ID: "ready" if self.text is not None else "unavailable",
            EMBEDDING_MODEL_ID: "ready" if self.embed is not None else "unavailable",
        }
