"""Gemma 3 270M on llama.cpp: one loaded model, a token loop with our own stop handling.

Why ``Llama.generate`` and not ``Llama.create_completion``: the token loop is where this server
needs control. It counts exactly the tokens sampled (usage must be accurate for billing, and
``create_completion`` reports no usage when streaming), checks a cancellation flag between tokens so
a disconnected client stops generation within one token, holds back text that might be the start of
a stop sequence so a stream never emits part of a role marker, and decodes UTF-8 incrementally so a
multi-byte character split across tokens is never emitted broken.

Methods run on the text worker thread only (llama.cpp contexts are not thread-safe); the one
exception is :meth:`TextModel.count_tokens`, which reads the vocabulary only.
"""

from __future__ import annotations

import codecs
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
from llama_cpp.llama_grammar import LlamaGrammar

__all__ = ["GenerationParams", "GenerationResult", "TextModel"]


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str | None = None
    """GBNF text; compiled in the worker thread because the compiled grammar is mutable state."""


@dataclass(slots=True)
class GenerationResult:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    """``stop`` (end of text or a stop sequence), ``length`` (max_tokens or context) or
    ``cancelled`` (the client went away; never sent to anyone)."""
    stopped_on: str | None = field(default=None)


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class TextModel:
    def __init__(self, model_path: Path, *, n_ctx: int = 4096, threads: int | None = None) -> None:
        self._llm = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.n_ctx = n_ctx

    def tokenize(self, text: str) -> list[int]:
        # add_bos: Gemma is trained with <bos> first; special=False so that user text that looks
        # like a control token (e.g. "<end_of_turn>") stays plain text.
        tokens: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        return tokens

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def generate(
        self,
        prompt_tokens: list[int],
        params: GenerationParams,
        cancelled: threading.Event,
        emit: Callable[[str], None],
    ) -> GenerationResult:
        """Run one generation, calling ``emit`` with each piece of text that is safe to send."""
        llm = self._llm
        result = GenerationResult(prompt_tokens=len(prompt_tokens))
        budget = min(params.max_tokens, self.n_ctx - len(prompt_tokens))
        if budget <= 0:
            result.finish_reason = "length"
            return result
        # A fixed seed only when asked for: llama.cpp's default seed is fixed, which would make
        # every sampled answer identical across requests.
        llm.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
        grammar = LlamaGrammar.from_string(params.grammar, verbose=False) if params.grammar else None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""  # decoded text not yet emitted (may hold the start of a stop sequence)
        emitted: list[str] = []
        vocab = llm._model.vocab
        tokens = llm.generate(
            prompt_tokens,
            temp=params.temperature,
            top_p=params.top_p,
            # llama.cpp's defaults; OpenAI exposes neither, and min_p keeps a 270M model from
            # wandering into the long tail at temperature 1.
            top_k=40,
            min_p=0.05,
            repeat_penalty=1.0,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            grammar=grammar,
        )
        result.finish_reason = "length"
        try:
            for token in tokens:
                if cancelled.is_set():
                    result.finish_reason = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    result.finish_reason = "stop"
                    break
                result.completion_tokens += 1
                pending += decoder.decode(llm.detokenize([token]))
                cut = self._stop_index(pending, params.stop)
                if cut is not None:
                    index, stop = cut
                    pending = pending[:index]
                    result.finish_reason, result.stopped_on = "stop", stop
                    break
                keep = _held_back(pending, params.stop)
                ready, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
                if ready:
                    emitted.append(ready)
                    emit(ready)
                if result.completion_tokens >= budget:
                    break
        finally:
            # Closing the generator stops llama.cpp from evaluating the token just sampled.
            tokens.close()
        pending += decoder.decode(b"", final=True)
        if pending and result.finish_reason != "cancelled":
            emitted.append(pending)
            emit(pending)
        result.text = "".join(emitted)
        return result

    @staticmethod
    def _stop_index(text: str, stops: tuple[str, ...]) -> tuple[int, str] | None:
        found: tuple[int, str] | None = None
        for stop in stops:
            index = text.find(stop)
            if index != -1 and (found is None or index < found[0]):
                found = (index, stop)
        return found

    def close(self) -> None:
        self._llm.close()
