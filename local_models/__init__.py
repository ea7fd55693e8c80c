"""Local model backends: the platform's embedded, offline, OpenAI-compatible default.

Two models, both served by one process (``python -m local_models.server``):

- ``gemma-3-270m``: Gemma 3 270M (GGUF Q4_K_M) on llama.cpp, for ``/v1/chat/completions`` and
  ``/v1/completions``. It is a base model, so chat messages are rendered into a plain-text prompt.
- ``all-minilm-l6-v2``: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, for ``/v1/embeddings``.

Weights are fetched with ``python -m local_models.fetch`` into a models directory with the stable
layout described by :data:`TEXT_MODEL_FILE`, :data:`EMBEDDING_MODEL_FILE` and
:data:`EMBEDDING_TOKENIZER_FILE`.
"""

from pathlib import PurePosixPath

__all__ = [
    "DEFAULT_MODELS_DIR",
    "EMBEDDING_MODEL_FILE",
    "EMBEDDING_MODEL_ID",
    "EMBEDDING_TOKENIZER_FILE",
    "TEXT_MODEL_FILE",
    "TEXT_MODEL_ID",
]

TEXT_MODEL_ID = "gemma-3-270m"
EMBEDDING_MODEL_ID = "all-minilm-l6-v2"

DEFAULT_MODELS_DIR = "data/models"

# Paths relative to the models directory. One folder per model id so that adding a model never
# renames an existing file, and the server can decide availability per model.
TEXT_MODEL_FILE = PurePosixPath(TEXT_MODEL_ID) / "model.gguf"
EMBEDDING_MODEL_FILE = PurePosixPath(EMBEDDING_MODEL_ID) / "model.onnx"
EMBEDDING_TOKENIZER_FILE = PurePosixPath(EMBEDDING_MODEL_ID) / "tokenizer.json"
