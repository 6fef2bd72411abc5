"""Build a slot's sampler from a request's Sampling options, and sample with it.

The stages run in llama.cpp's C samplers over a candidate array that numpy refills from the
logits row in C (`Candidates`): Python never holds a row of logits. The chain order follows
llama.cpp's own default (penalties, top-k, typical, top-p, min-p, temperature, then the
final pick); a grammar, when given, comes first so every later stage only sees tokens the
grammar allows. Samplers that would be no-ops for the given values are left out, since each
stage walks the candidate list once per token.

Greedy decoding (temperature 0, no grammar, no penalties) is the argmax of the logits
row, taken by numpy over llama.cpp's own buffer in place (`greedy_pick`): the same token
llama.cpp's greedy stage picks (the first maximum), without the candidate array. On a
49k vocabulary that stage costs ~0.1 ms plus ~0.03 ms to refill the array, and after a
decode has streamed the weights through the cache, 0.2-0.3 ms per slot per step; the
argmax reads the 200 KB row once. Every other chain runs in llama.cpp.

One stage is ours: the repetition penalties (`Penalties`). llama.cpp's penalties sampler
looks every one of the n_vocab candidates up in a hash map per token (~0.18 ms for a 49k
vocabulary here, per slot per step, whenever a request or a Modelfile sets repeat_penalty,
frequency_penalty or presence_penalty), while only the at most repeat_last_n tokens of its
window can change. `Penalties` keeps the same window and
counts and changes exactly those logits, with llama.cpp's float32 arithmetic, before the
chain runs; the grammar's masking does not depend on that order.
"""

from __future__ import annotations

import collections
import ctypes
import math
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp
import numpy as np

from worker.backend import Sampling

__all__ = [
    "Candidates",
    "GrammarError",
    "Penalties",
    "SlotSampler",
    "build_sampler",
    "greedy_pick",
    "seed_for",
]

# llama_sampler_init_dist treats this value as "pick a random seed".
_RANDOM_SEED = llama_cpp.LLAMA_DEFAULT_SEED
_MIN_KEEP = 1


class GrammarError(ValueError):
    """llama.cpp rejected the GBNF text (it logs the parse error itself)."""


class Candidates:
    """One reusable candidate array for `llama_sampler_apply` (engine thread only).

    `llama_sampler_sample` allocates and fills a fresh n_vocab-entry array on every call,
    about 0.4 ms for a 49k vocabulary here, most of it the fresh memory; that is paid per
    token per slot, beside a batched step of 10-30 ms. This array lives as long as the
    context, and numpy refills it (ids, logits, zero probabilities) straight from the
    logits row in C, as llama.cpp would. The sampler chain itself is unchanged, and the
    selection and `accept` follow `llama_sampler_sample` exactly.

    A plain greedy sampler skips the array (`greedy_pick`).
    """

    _DTYPE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])

    def __init__(self, ctx: llama_cpp.llama_context_p, n_vocab: int) -> None:
        assert self._DTYPE.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)
        self._ctx = ctx
        self._n_vocab = n_vocab
        self._buffer = (llama_cpp.llama_token_data * n_vocab)()
        self._rows = np.frombuffer(memoryview(self._buffer).cast("B"), dtype=self._DTYPE)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._array = llama_cpp.llama_token_data_array(
            data=self._buffer, size=n_vocab, selected=-1, sorted=False
        )
        self._logits_type = ctypes.c_float * n_vocab

    def sample(self, sampler: SlotSampler, row: int) -> int:
        """The token `sampler` picks from output row `row` of the last decode, accepted."""
        address = ctypes.cast(llama_cpp.llama_get_logits_ith(self._ctx, row), ctypes.c_void_p)
        if not address.value:
            raise RuntimeError(f"no logits for output row {row}")
        row_data = memoryview(self._logits_type.from_address(address.value)).cast("B")
        logits = np.frombuffer(row_data, dtype=np.float32)
        if sampler.greedy and sampler.penalties is None:
            token = greedy_pick(logits)
            if token is not None:
                llama_cpp.llama_sampler_accept(sampler.chain, token)
                return token
        rows = self._rows
        rows["id"] = self._ids
        rows["logit"] = logits
        rows["p"] = 0.0
        if sampler.penalties is not None:
            sampler.penalties.apply(rows["logit"])
        array = self._array
        array.size, array.selected, array.sorted = self._n_vocab, -1, False
        llama_cpp.llama_sampler_apply(sampler.chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise RuntimeError(f"sampler selected {array.selected} of {array.size}")
        token = int(self._buffer[array.selected].id)
        llama_cpp.llama_sampler_accept(sampler.chain, token)
        if sampler.penalties is not None:
            sampler.penalties.accept(token)
        return token


class Penalties:
    """llama.cpp's repetition penalties over a window of the last `last_n` tokens.

    The same window and counts as `llama_sampler_init_penalties`, the same float32 formula
    (a positive logit divided by `repeat`, a negative one multiplied, then
    `count * freq + present` subtracted), applied only to the ids in the window.
    """

    def __init__(self, last_n: int, repeat: float, freq: float, present: float) -> None:
        self._window: collections.deque[int] = collections.deque(maxlen=last_n)
        self._counts: collections.Counter[int] = collections.Counter()
        self._repeat = np.float32(repeat)
        self._freq = np.float32(freq)
        self._present = np.float32(present)

    def accept(self, token: int) -> None:
        window = self._window
        if len(window) == window.maxlen:
            old = window[0]
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]
        window.append(token)
        self._counts[token] += 1

    def apply(self, logits: np.ndarray) -> None:
        """Penalise, in place, the logits (indexed by token id) of the tokens in the window."""
        if not self._counts:
            return
        n = len(self._counts)
        ids = np.fromiter(self._counts.keys(), dtype=np.int64, count=n)
        counts = np.fromiter(self._counts.values(), dtype=np.float32, count=n)
        values = logits[ids]
        values = np.where(values <= 0, values * self._repeat, values / self._repeat)
        logits[ids] = values - (counts * self._freq + self._present)


@dataclass(slots=True)
class SlotSampler:
    """A slot's llama.cpp sampler chain and, when they are on, its repetition penalties."""

    chain: llama_cpp.llama_sampler_p
    penalties: Penalties | None
    greedy: bool = False
    """The chain is llama.cpp's greedy stage alone: its pick is the row's argmax."""

    def free(self) -> None:
        llama_cpp.llama_sampler_free(self.chain)


def seed_for(seed: int) -> int:
    """Map Ollama's seed (-1 or any negative: random) onto llama.cpp's uint32 seed."""
    return _RANDOM_SEED if seed < 0 else seed & 0xFFFFFFFF


def build_sampler(
    vocab: llama_cpp.llama_vocab_p,
    sampling: Sampling,
    *,
    n_ctx: int,
    history: Sequence[int],
) -> SlotSampler:
    """Return a new slot sampler; the caller frees it with `free()`.

    `n_ctx` is the per-sequence context (what repeat_last_n=-1 means, as in Ollama).
    `history` is the prompt: its last repeat_last_n tokens seed the repetition penalties,
    as Ollama's runner does, without passing through the grammar.
    Raises GrammarError when the grammar does not parse.
    """
    params = llama_cpp.llama_sampler_chain_default_params()
    params.no_perf = True
    chain: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_chain_init(params)
    try:
        _add_stages(chain, vocab, sampling)
    except BaseException:
        llama_cpp.llama_sampler_free(chain)
        raise
    greedy = sampling.grammar is None and sampling.temperature <= 0
    return SlotSampler(chain, _penalties(sampling, n_ctx=n_ctx, history=history), greedy)


def greedy_pick(logits: np.ndarray) -> int | None:
    """The id llama.cpp's greedy stage picks from this row: the first maximum.

    None when the maximum is not finite (a NaN row, or nothing above -inf): the caller
    then runs the chain itself, so such rows behave exactly as in llama.cpp.
    """
    token = int(logits.argmax())
    return token if math.isfinite(logits[token]) else None


def _add_stages(
    chain: llama_cpp.llama_sampler_p, vocab: llama_cpp.llama_vocab_p, sampling: Sampling
) -> None:
    """Append the stages in order; the chain owns each stage once added."""
    add = llama_cpp.llama_sampler_chain_add
    if sampling.grammar is not None:
        grammar = llama_cpp.llama_sampler_init_grammar(
            vocab, sampling.grammar.encode("utf-8"), b"root"
        )
        if not grammar:
            raise GrammarError("invalid grammar")
        add(chain, grammar)
    if sampling.temperature <= 0:
        # Ollama: temperature 0 means greedy; the filters below cannot change the argmax.
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return
    if sampling.top_k > 0:
        add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
    if 0 < sampling.typical_p < 1:
        add(chain, llama_cpp.llama_sampler_init_typical(sampling.typical_p, _MIN_KEEP))
    if 0 < sampling.top_p < 1:
        add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, _MIN_KEEP))
    if sampling.min_p > 0:
        add(chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, _MIN_KEEP))
    add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
    add(chain, llama_cpp.llama_sampler_init_dist(seed_for(sampling.seed)))


def _penalties(sampling: Sampling, *, n_ctx: int, history: Sequence[int]) -> Penalties | None:
    """The repetition penalties, primed with the prompt's tail; None when neutral."""
    last_n = n_ctx if sampling.repeat_last_n < 0 else sampling.repeat_last_n
    neutral = (
        sampling.repeat_penalty == 1.0
        and sampling.frequency_penalty == 0.0
        and sampling.presence_penalty == 0.0
    )
    if last_n == 0 or neutral:
        return None
    penalties = Penalties(
        last_n, sampling.repeat_penalty, sampling.frequency_penalty, sampling.presence_penalty
    )
    for token in history[-last_n:]:
        penalties.accept(token)
    return penalties
