"""llama-cpp-python Backend: one GGUF loaded through the low-level API; llama errors -> ErrorInfo.

Lifecycle: `LlamaBackend(options)` loads the model and creates the context (or raises
BackendError(LOAD_FAILED)); then the Backend methods may be called any number of times;
`close()` frees everything and is idempotent. Every call must come from the one engine
thread (DESIGN.md, "one thread for llama.cpp"); nothing here starts a thread.

The context holds `num_parallel` KV sequences ("slots") of `num_ctx` tokens each (Ollama's
rule: n_ctx = num_ctx x num_parallel). The cache is not unified: each slot has a stream of
its own, so what one request computes never depends on what runs beside it, and a slot can
never take another's room. The slots' bookkeeping and the step live in `llama_decode.py`.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections import deque
from collections.abc import Sequence

import llama_cpp
import numpy as np
import psutil
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from worker.backend import BackendError, LoadOptions, ModelFacts, Sampling, SlotEvent
from worker.llama_decode import SlotDecoder
from worker.protocol import ErrorCode, ErrorInfo

__all__ = ["LlamaBackend", "default_threads"]

_ALL_LAYERS = 999  # n_gpu_layers meaning "offload every layer"; a no-op without a GPU device
_KV_BYTES_PER_VALUE = 2  # the KV cache is f16 by default


class _LlamaLog:
    """Receives llama.cpp's log: passes warnings and errors to stderr, drops the rest.

    Keeps the last few error lines so a load failure can quote llama.cpp's own reason.
    """

    # ggml_log_level values of this build (llama_cpp/_logger.py's table is stale).
    WARN, ERROR, CONT = 3, 4, 5

    def __init__(self) -> None:
        self.errors: deque[str] = deque(maxlen=4)
        self._keeping = False
        self.callback = llama_cpp.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
        if level != self.CONT:
            self._keeping = level in (self.WARN, self.ERROR)
        if not self._keeping or not text:
            return
        line = text.decode("utf-8", "replace")
        if level == self.ERROR:
            self.errors.append(line.strip())
        sys.stderr.write(line if level == self.CONT else f"llama.cpp: {line}")


_LOG: _LlamaLog | None = None


def _init_library() -> _LlamaLog:
    """Install the log filter and initialise llama.cpp, once per process."""
    global _LOG
    if _LOG is None:
        _LOG = _LlamaLog()
        llama_cpp.llama_log_set(_LOG.callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return _LOG


def _fail(code: ErrorCode, message: str) -> BackendError:
    return BackendError(ErrorInfo(code, message))


def default_threads() -> int:
    """CPU threads when num_thread is 0: the physical cores, as llama.cpp's own tools choose."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class LlamaBackend:
    """The Backend Protocol over llama-cpp-python's ctypes bindings (engine thread only)."""

    facts: ModelFacts
    n_slots: int

    def __init__(self, options: LoadOptions) -> None:
        self._log = _init_library()
        self._embedding = options.embedding
        self._model: llama_cpp.llama_model_p | None = None
        self._ctx: llama_cpp.llama_context_p | None = None
        self._decoder: SlotDecoder | None = None
        self._model = self._load_model(options)
        try:
            self._vocab = llama_cpp.llama_model_get_vocab(self._model)
            self._ctx = self._new_context(self._model, options)
            self.n_slots = llama_cpp.llama_n_seq_max(self._ctx)
            # llama.cpp rounds the cache up; promise what was asked (Ollama's num_ctx).
            slot_ctx = min(options.num_ctx, llama_cpp.llama_n_ctx(self._ctx) // self.n_slots)
            self._n_batch: int = llama_cpp.llama_n_batch(self._ctx)
            self._n_embd: int = llama_cpp.llama_model_n_embd(self._model)
            self._decoder = SlotDecoder(
                self._ctx, self._vocab, n_slots=self.n_slots, slot_ctx=slot_ctx,
                n_batch=self._n_batch,
            )  # fmt: skip
            self.facts = self._read_facts(slot_ctx)
        except BaseException:
            self.close()
            raise

    # ---- loading ----

    def _load_model(self, options: LoadOptions) -> llama_cpp.llama_model_p:
        if not os.path.isfile(options.model_path):
            raise _fail(ErrorCode.LOAD_FAILED, f"model file not found: {options.model_path}")
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = _ALL_LAYERS if options.num_gpu < 0 else options.num_gpu
        params.use_mmap = options.use_mmap
        self._log.errors.clear()
        path = options.model_path.encode()
        model: llama_cpp.llama_model_p | None = llama_cpp.llama_model_load_from_file(path, params)
        if not model:
            reason = "; ".join(self._log.errors) or "llama.cpp could not load the file"
            raise _fail(ErrorCode.LOAD_FAILED, f"failed to load model: {reason}")
        return model

    def _new_context(
        self, model: llama_cpp.llama_model_p, options: LoadOptions
    ) -> llama_cpp.llama_context_p:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = options.num_ctx * options.num_parallel
        params.n_seq_max = options.num_parallel
        params.kv_unified = False  # one stream per slot (see the module docstring)
        # Room for one running token per slot in every step, whatever num_batch says.
        params.n_batch = max(options.num_batch, options.num_parallel)
        threads = options.num_thread if options.num_thread > 0 else default_threads()
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        if options.embedding:
            params.embeddings = True
            # Pooled embeddings need a whole input in one micro-batch.
            params.n_batch = params.n_ubatch = max(options.num_batch, options.num_ctx)
            arch = self._meta(model, "general.architecture")
            if self._meta(model, f"{arch}.pooling_type") is None:
                params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        self._log.errors.clear()
        ctx: llama_cpp.llama_context_p | None = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            reason = "; ".join(self._log.errors) or "out of memory?"
            message = f"failed to create a context of {params.n_ctx} tokens: {reason}"
            raise _fail(ErrorCode.LOAD_FAILED, message)
        return ctx

    def _read_facts(self, slot_ctx: int) -> ModelFacts:
        assert self._model is not None
        template = llama_cpp.llama_model_chat_template(self._model, None)
        return ModelFacts(
            n_ctx=slot_ctx,
            n_ctx_train=llama_cpp.llama_model_n_ctx_train(self._model),
            chat_template=template.decode("utf-8", "replace") if template else None,
            bos_token=self._token_text(llama_cpp.llama_vocab_bos(self._vocab)),
            eos_token=self._token_text(llama_cpp.llama_vocab_eos(self._vocab)),
            add_bos=bool(llama_cpp.llama_vocab_get_add_bos(self._vocab)),
            memory_bytes=llama_cpp.llama_model_size(self._model) + self._kv_bytes(),
        )

    def _kv_bytes(self) -> int:
        """Estimated KV cache size: every cell of every layer, K and V, f16.

        Compute buffers are left out; llama.cpp exposes no query for them. Models with
        sliding-window layers hold less than this.
        """
        assert self._model is not None and self._ctx is not None
        if not llama_cpp.llama_get_memory(self._ctx):
            return 0
        model = self._model
        arch = self._meta(model, "general.architecture")
        head = llama_cpp.llama_model_n_embd(model) // max(1, llama_cpp.llama_model_n_head(model))
        key = int(self._meta(model, f"{arch}.attention.key_length") or head)
        value = int(self._meta(model, f"{arch}.attention.value_length") or head)
        layers: int = llama_cpp.llama_model_n_layer(model)
        kv_heads: int = llama_cpp.llama_model_n_head_kv(model)
        cells: int = llama_cpp.llama_n_ctx(self._ctx)
        return cells * layers * kv_heads * (key + value) * _KV_BYTES_PER_VALUE

    @staticmethod
    def _meta(model: llama_cpp.llama_model_p, key: str) -> str | None:
        """A scalar GGUF metadata value as text, None when the key is absent."""
        size = 256
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text: bytes = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", "replace")

    # ---- text ----

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 2
        while True:
            tokens = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), tokens, capacity, add_special, parse_special
            )
            if n >= 0:
                return list(tokens[:n])
            if n == -(2**31):
                raise _fail(ErrorCode.BAD_REQUEST, "text too long to tokenize")
            capacity = -n

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of `tokens`, control tokens included (the inverse of parse_special)."""
        ids = (llama_cpp.llama_token * len(tokens))(*tokens)
        capacity = max(16, len(tokens) * 8)
        while True:
            buf = ctypes.create_string_buffer(capacity)
            n: int = llama_cpp.llama_detokenize(
                self._vocab, ids, len(tokens), buf, capacity, False, True
            )
            if n >= 0:
                return buf.raw[:n].decode("utf-8", "replace")
            capacity = -n

    # ---- slots ----

    def _slots(self) -> SlotDecoder:
        if self._decoder is None:
            raise RuntimeError("the backend is closed")
        return self._decoder

    def cached(self, slot: int) -> Sequence[int]:
        return self._slots().cached(slot)

    def start(self, slot: int, prompt: Sequence[int], sampling: Sampling) -> int:
        """See Backend.start; num_predict <= 0 means unbounded (as Ollama's runner)."""
        if self._embedding:
            raise _fail(ErrorCode.BAD_REQUEST, "this model was loaded for embeddings only")
        return self._slots().start(slot, prompt, sampling)

    def step(self) -> list[SlotEvent]:
        return self._slots().step()

    def release(self, slot: int) -> None:
        self._slots().release(slot)

    # ---- embeddings and grammars ----

    def embed(self, slot: int, tokens: Sequence[int]) -> list[float]:
        """The pooled vector of `tokens`; the mean of per-token vectors without pooling."""
        assert self._ctx is not None
        slots = self._slots()
        prompt = slots.checked(tokens)
        slots.clear(slot)
        try:
            pooling = llama_cpp.llama_pooling_type(self._ctx)
            if self._embedding and pooling != llama_cpp.LLAMA_POOLING_TYPE_NONE:
                slots.evaluate(slot, prompt, 0)
                pooled = llama_cpp.llama_get_embeddings_seq(self._ctx, slot)
                if not pooled:
                    raise _fail(ErrorCode.INTERNAL, "llama.cpp returned no pooled embedding")
                return [float(x) for x in pooled[: self._n_embd]]
            return self._mean_embedding(slot, prompt)
        finally:
            slots.clear(slot)

    def _mean_embedding(self, slot: int, prompt: list[int]) -> list[float]:
        assert self._ctx is not None
        llama_cpp.llama_set_embeddings(self._ctx, True)
        try:
            total = np.zeros(self._n_embd, dtype=np.float64)
            for start in range(0, len(prompt), self._n_batch):
                chunk = prompt[start : start + self._n_batch]
                self._slots().evaluate(slot, chunk, start)
                rows = np.ctypeslib.as_array(
                    llama_cpp.llama_get_embeddings(self._ctx), shape=(len(chunk), self._n_embd)
                )
                total += rows.sum(axis=0, dtype=np.float64)
        finally:
            llama_cpp.llama_set_embeddings(self._ctx, self._embedding)
        return [float(x) for x in total / len(prompt)]

    def json_grammar(self, schema: dict[str, object] | None) -> str:
        """GBNF for any JSON object (Ollama's format "json") or for a JSON schema."""
        if schema is None:
            return JSON_GBNF
        try:
            return str(json_schema_to_gbnf(json.dumps(schema)))
        # The converter reports unsupported schemas with bare asserts and lookups.
        except (AssertionError, ValueError, LookupError, TypeError, RecursionError) as exc:
            raise _fail(ErrorCode.BAD_REQUEST, f"unsupported JSON schema: {exc}") from exc

    # ---- teardown ----

    def close(self) -> None:
        """Free the samplers, the context and the model; safe to call twice."""
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None
