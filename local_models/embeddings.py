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

__all__ = ["DIMENSIONS", "MAX_SEQ_LENGTH", "Batch", "EmbeddingModel", "EmbeddingResult"]

DIMENSIONS = 384
MAX_SEQ_LENGTH = 256
# Texts are run in sub-batches of at most this many texts and padded tokens: padding is per
# sub-batch, so one long text does not make every short text of a 2048-input request pay for 256
# positions, memory stays bounded, and each sub-batch is one job of the fair queue (fairqueue.py):
# another organization's request waits for at most one of them, not for the whole batch.
_SUB_BATCH = 32
_SUB_BATCH_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: npt.NDArray[np.float32]
    """Shape ``(len(texts), 384)``, rows L2-normalised, in input order."""
    token_counts: list[int]
    """Tokens the model read per text, special tokens included, after truncation."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Tokenised texts, cut into sub-batches of similar lengths (the jobs of one request)."""

    token_counts: list[int]
    chunks: list[tuple[list[int], list[list[int]]]]
    """(indices into the texts, their token ids), shortest texts first."""

    @property
    def tokens(self) -> int:
        return sum(self.token_counts)


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

    def tokenize(self, texts: list[str]) -> Batch:
        """Tokenise (truncated to 256) and cut into sub-batches. Sorting by length before cutting
        keeps similar lengths together (less padding); results go back to their positions."""
        ids = [e.ids for e in self._tokenizer.encode_batch(texts)]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        chunks: list[tuple[list[int], list[list[int]]]] = []
        current: list[int] = []
        for i in order:
            # Sorted ascending: the chunk's width is the newest text's length.
            if current and (len(current) >= _SUB_BATCH or (len(current) + 1) * len(ids[i]) > _SUB_BATCH_TOKENS):
                chunks.append((current, [ids[j] for j in current]))
                current = []
            current.append(i)
        if current:
            chunks.append((current, [ids[j] for j in current]))
        return Batch(token_counts=[len(x) for x in ids], chunks=chunks)

    def run(self, rows: list[list[int]]) -> npt.NDArray[np.float32]:
        """The vectors of one sub-batch of token ids (one fair-queue job)."""
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        outputs = self._session.run(None, {k: v for k, v in feeds.items() if k in self._input_names})
        hidden = np.asarray(outputs[0], dtype=np.float32)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: npt.NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return vectors

    def embed(self, texts: list[str]) -> EmbeddingResult:
        """Everything in the calling thread (benchmarks, tests); the server runs `run` per chunk."""
        batch = self.tokenize(texts)
        vectors = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        for indices, rows in batch.chunks:
            vectors[indices] = self.run(rows)
        return EmbeddingResult(vectors=vectors, token_counts=batch.token_counts)
