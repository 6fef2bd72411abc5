"""Build a llama.cpp sampler chain from a request's Sampling options.

Every sampler runs in C: Python never sees a row of logits. The chain order follows
llama.cpp's own default (penalties, top-k, typical, top-p, min-p, temperature, then the
final pick); a grammar, when given, comes first so every later stage only sees tokens the
grammar allows. Samplers that would be no-ops for the given values are left out, since each
stage walks the candidate list once per token.
"""

from __future__ import annotations

from collections.abc import Sequence

import llama_cpp

from worker.backend import Sampling

__all__ = ["GrammarError", "build_sampler", "seed_for"]

# llama_sampler_init_dist treats this value as "pick a random seed".
_RANDOM_SEED = llama_cpp.LLAMA_DEFAULT_SEED
_MIN_KEEP = 1


class GrammarError(ValueError):
    """llama.cpp rejected the GBNF text (it logs the parse error itself)."""


def seed_for(seed: int) -> int:
    """Map Ollama's seed (-1 or any negative: random) onto llama.cpp's uint32 seed."""
    return _RANDOM_SEED if seed < 0 else seed & 0xFFFFFFFF


def build_sampler(
    vocab: llama_cpp.llama_vocab_p,
    sampling: Sampling,
    *,
    n_ctx: int,
    history: Sequence[int],
) -> llama_cpp.llama_sampler_p:
    """Return a new sampler chain; the caller frees it with llama_sampler_free.

    `n_ctx` is the per-sequence context (what repeat_last_n=-1 means, as in Ollama).
    `history` is the prompt: its last repeat_last_n tokens seed the repetition penalties,
    as Ollama's runner does, without passing through the grammar.
    Raises GrammarError when the grammar does not parse.
    """
    params = llama_cpp.llama_sampler_chain_default_params()
    params.no_perf = True
    chain: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_chain_init(params)
    try:
        _add_stages(chain, vocab, sampling, n_ctx=n_ctx, history=history)
    except BaseException:
        llama_cpp.llama_sampler_free(chain)
        raise
    return chain


def _add_stages(
    chain: llama_cpp.llama_sampler_p,
    vocab: llama_cpp.llama_vocab_p,
    sampling: Sampling,
    *,
    n_ctx: int,
    history: Sequence[int],
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
    penalties = _penalties(sampling, n_ctx=n_ctx, history=history)
    if penalties is not None:
        add(chain, penalties)
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


def _penalties(
    sampling: Sampling, *, n_ctx: int, history: Sequence[int]
) -> llama_cpp.llama_sampler_p | None:
    """The repetition-penalty stage, primed with the prompt's tail; None when neutral."""
    last_n = n_ctx if sampling.repeat_last_n < 0 else sampling.repeat_last_n
    neutral = (
        sampling.repeat_penalty == 1.0
        and sampling.frequency_penalty == 0.0
        and sampling.presence_penalty == 0.0
    )
    if last_n == 0 or neutral:
        return None
    stage: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_penalties(
        last_n,
        sampling.repeat_penalty,
        sampling.frequency_penalty,
        sampling.presence_penalty,
    )
    for token in history[-last_n:]:
        llama_cpp.llama_sampler_accept(stage, token)
    return stage
