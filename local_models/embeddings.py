"""all-MiniLM-L6-v2 sentence embeddings on onnxruntime (int8 ONNX, 384 dimensions).

Reproduces sentence-transformers' pipeline for this model without torch: BERT WordPiece tokens
truncated to the model's 256-token ``max_seq_length``, the transformer's ``last_hidden_state``,
mean pooling over the attention mask, then L2 normalisation (cosine >= 0.9995 against
sentence-transformers on the project's machines).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

__all__ = ["DIMENSIONS", "MAX_SEQ_LENGTH", "EmbeddingModel", "EmbeddingResult"]

DIMENSIONS = 384
MAX_SEQ_LENGTH = 256
# Texts are run in sub-batches of this size: padding is per sub-batch, so one long text does not
# make every short text in a 2048-input request pay for 256 positions, and memory stays bounded.
_SUB_BATCH = 32


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: npt.NDArray[np.float32]
    """Shape ``(len(texts), 384)``, rows L2-normalised, in input order."""
    token_counts: list[int]
    """Tokens the model read per text, special tokens included, after truncation."""


class EmbeddingModel:
    """Loaded once per process; :meth:`embed` is thread-safe (onnxruntime sessions are)."""

    def __init__(self, model_path: Path, tokenizer_path: Path, threads: int | None = None) -> None:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # The shipped tokenizer.json pads every text to 128 and truncates at 128; the model was
        # trained and is used by sentence-transformers with 256, and padding to the batch's
        # longest text is what keeps single short texts fast.
        tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {i.name for i in self._session.get_inputs()}

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text).ids)

    def embed(self, texts: list[str]) -> EmbeddingResult:
        vectors = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        # Sorting by length before cutting sub-batches keeps similar lengths together (less
        # padding); results are scattered back to their original positions.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        counts_by_index = [0] * len(texts)
        for start in range(0, len(order), _SUB_BATCH):
            chunk = order[start : start + _SUB_BATCH]
            encodings = self._tokenizer.encode_batch([texts[i] for i in chunk])
            width = max(len(e.ids) for e in encodings)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, encoding in enumerate(encodings):
                n = len(encoding.ids)
                ids[row, :n] = encoding.ids
                mask[row, :n] = 1
                counts_by_index[chunk[row]] = n
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            outputs = self._session.run(None, {k: v for k, v in feeds.items() if k in self._input_names})
            hidden = np.asarray(outputs[0], dtype=np.float32)
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            vectors[chunk] = pooled / np.clip(norms, 1e-12, None)
        return EmbeddingResult(vectors=vectors, token_counts=counts_by_index)
