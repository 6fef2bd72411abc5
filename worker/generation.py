"""One Generate request's life beside the others: prompt, tokens, limits, output, stats.

`Generation.prepare` renders, tokenizes and fits a request into a `GenerationStream`; the
engine (worker/engine.py) runs the stream in a slot and feeds it the pieces its slot
samples. Everything here runs on the engine thread (it calls the backend). Failures are
raised as BackendError carrying their protocol ErrorInfo; the engine turns them into Failed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

from worker.backend import Backend, BackendError, Piece, Sampling, StopReason, option_number
from worker.capability import thinking_tags
from worker.output import Delta, OutputParser
from worker.prompt import RenderedPrompt, TemplateError, build_prompt, tool_call_tag
from worker.protocol import Chunk, Done, Embed, ErrorCode, ErrorInfo, Generate

log = logging.getLogger(__name__)

# Ollama's wording, so clients that match on it keep working.
PROMPT_TOO_LONG = "the prompt is longer than the context length currently available to the model"
INPUT_TOO_LONG = "the input length exceeds the context length"

NUM_KEEP_DEFAULT = 4  # Ollama's num_keep: tokens kept at the start when a prompt is cut
UNBOUNDED_PREDICT_FACTOR = 10  # Ollama caps "unbounded" num_predict at 10 x num_ctx
NORM_FLOOR = 1e-12  # Ollama's guard against dividing by a zero norm
DEFAULT_THINK = ("<think>", "</think>")


class GenerationStream:
    """One Generate request in a slot: its prompt, parser, counts and clock. Engine thread only.

    Lifecycle: made by `Generation.prepare`; `begin(reused)` when its slot starts; then
    `on_piece` for every sampled token until it says the request is complete or the backend
    ends the slot; then `done` once. A cancelled or failed stream is simply dropped.
    """

    def __init__(
        self, req: Generate, prompt: list[int], sampling: Sampling, parser: OutputParser
    ) -> None:
        self.request_id = req.id
        self.prompt = prompt
        self.sampling = sampling  # sampling.num_predict is the token budget
        self._keep_context = not (req.raw or req.chat)
        self._parser = parser
        self._generated: list[int] = []
        self._evaluated = 0
        self._started = time.perf_counter_ns()
        self._first: int | None = None

    @property
    def budget(self) -> int:
        return self.sampling.num_predict

    def begin(self, reused: int) -> None:
        """The slot started; it holds `reused` prompt tokens already and evaluates the rest."""
        self._evaluated = len(self.prompt) - reused
        self._started = time.perf_counter_ns()

    def on_piece(self, piece: Piece) -> tuple[list[Chunk], bool]:
        """Take one sampled token; its Chunks, and True when the request is now complete."""
        self._first = self._first or time.perf_counter_ns()
        self._generated.append(piece.token)
        chunks = _chunks(self.request_id, self._parser.feed(piece.text_bytes))
        return chunks, self._parser.stopped or len(self._generated) >= self.budget

    def done(self, reason: StopReason | None) -> list[Chunk | Done]:
        """The last Chunks and the Done; `reason` is the backend's, None if we ended it."""
        replies: list[Chunk | Done] = list(_chunks(self.request_id, self._parser.finish()))
        ended = time.perf_counter_ns()
        first = self._first or ended
        hit_limit = reason is StopReason.LENGTH or (
            not self._parser.stopped and len(self._generated) >= self.budget
        )
        replies.append(
            Done(
                id=self.request_id,
                done_reason="length" if hit_limit else "stop",
                prompt_eval_count=self._evaluated,
                prompt_eval_duration_ns=first - self._started,
                eval_count=len(self._generated),
                eval_duration_ns=ended - first,
                tool_calls=list(self._parser.tool_calls),
                context=[*self.prompt, *self._generated] if self._keep_context else [],
            )
        )
        return replies


class Generation:
    """Prepares Generate requests for one backend; stateless between requests."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def prepare(self, req: Generate) -> GenerationStream:
        """Render, tokenize, fit to the context and set the limits; raises BackendError."""
        facts = self._backend.facts
        stop = _stop_strings(req.options)
        grammar = self._grammar(req.format)
        rendered = self._render(req)
        prompt = self._fit(req, self._tokens(rendered.text))
        budget = _token_budget(req.options, facts.n_ctx, len(prompt))
        sampling = Sampling.from_options(
            req.options, n_ctx=facts.n_ctx, num_predict=budget, grammar=grammar
        )
        parser = OutputParser(
            stop=stop, think=_think_on(req.think), thinking_open=rendered.thinking_open,
            tool_tag=tool_call_tag(req.template, facts.chat_template) if req.tools else None,
            think_tags=(thinking_tags(req.template) if req.template else None) or DEFAULT_THINK,
        )
        log.info("event=generate id=%d prompt_tokens=%d budget=%d", req.id, len(prompt), budget)
        return GenerationStream(req, prompt, sampling, parser)

    def _render(self, req: Generate) -> RenderedPrompt:
        try:
            rendered = build_prompt(req, self._backend.facts, lambda t: len(self._tokens(t)))
        except TemplateError as exc:  # Ollama answers a broken template with a 500
            raise BackendError(ErrorInfo(ErrorCode.INTERNAL, str(exc))) from exc
        if rendered.truncated_messages:
            log.info(
                "event=prompt_truncated id=%d dropped_messages=%d",
                req.id, rendered.truncated_messages,
            )
        return rendered

    def _tokens(self, text: str) -> list[int]:
        """Tokenize a rendered prompt, adding BOS unless the template already wrote it."""
        facts = self._backend.facts
        has_bos = bool(facts.bos_token) and text.startswith(facts.bos_token)
        add_special = facts.add_bos and not has_bos
        return self._backend.tokenize(text, add_special=add_special, parse_special=True)

    def _fit(self, req: Generate, tokens: list[int]) -> list[int]:
        """Leave room for at least one token: cut the middle (truncate) or fail.

        Mirrors Ollama's runner: keep the first num_keep tokens (plus BOS), drop from the
        middle down to num_ctx - max((num_ctx - num_keep) / 2, 1) tokens.
        """
        n_ctx = self._backend.facts.n_ctx
        if len(tokens) < n_ctx:
            return tokens
        if not req.truncate:
            raise BackendError(ErrorInfo(ErrorCode.CONTEXT_OVERFLOW, PROMPT_TOO_LONG))
        num_keep = option_number(req.options, "num_keep")
        keep = NUM_KEEP_DEFAULT if num_keep is None else max(int(num_keep), 0)
        keep = min(keep + (1 if self._backend.facts.add_bos else 0), n_ctx // 2)
        target = n_ctx - max((n_ctx - keep) // 2, 1)
        cut = [*tokens[:keep], *tokens[len(tokens) - (target - keep) :]]
        log.warning(
            "event=prompt_truncated id=%d tokens_before=%d tokens_after=%d n_ctx=%d",
            req.id, len(tokens), len(cut), n_ctx,
        )
        return cut

    def _grammar(self, fmt: str | dict[str, object] | None) -> str | None:
        if fmt is None or fmt == "":
            return None
        if fmt == "json":
            return self._backend.json_grammar(None)
        if isinstance(fmt, dict):
            return self._backend.json_grammar(fmt)
        message = f'invalid format: {fmt!r}; expected "json" or a valid JSON Schema object'
        raise BackendError(ErrorInfo(ErrorCode.BAD_REQUEST, message))


def embed_inputs(
    backend: Backend, slot: int, req: Embed, is_cancelled: Callable[[], bool]
) -> tuple[list[list[float]], int]:
    """Embed each input in free `slot` (cut to the context if `truncate`); vectors, tokens."""
    facts = backend.facts
    limit = min(facts.n_ctx, facts.n_ctx_train) if facts.n_ctx_train > 0 else facts.n_ctx
    vectors: list[list[float]] = []
    count = 0
    for text in req.inputs:
        if is_cancelled():
            raise BackendError(ErrorInfo(ErrorCode.CANCELLED, "request cancelled"))
        tokens = backend.tokenize(text, add_special=True, parse_special=True)
        if len(tokens) > limit:
            if not req.truncate:
                raise BackendError(ErrorInfo(ErrorCode.BAD_REQUEST, INPUT_TOO_LONG))
            log.info("event=input_truncated id=%d tokens=%d limit=%d", req.id, len(tokens), limit)
            tokens = tokens[:limit]
        vectors.append(l2_normalized(backend.embed(slot, tokens)))
        count += len(tokens)
    return vectors, count


def l2_normalized(vector: Sequence[float]) -> list[float]:
    """Scale to unit length (Ollama's guard for a zero norm); NaN or Inf is an error."""
    if not all(math.isfinite(v) for v in vector):
        raise BackendError(ErrorInfo(ErrorCode.INTERNAL, "embedding contains NaN or Inf"))
    norm = math.sqrt(math.fsum(v * v for v in vector))
    scale = 1.0 / max(norm, NORM_FLOOR)
    return [v * scale for v in vector]


def _token_budget(options: dict[str, object], n_ctx: int, prompt_len: int) -> int:
    """Tokens this request may generate: num_predict, capped, never past the context.

    Ollama treats num_predict < 0 (and, with llama-server, 0) as unbounded and caps that
    internally at 10 x num_ctx.
    """
    value = option_number(options, "num_predict")
    wanted = -1 if value is None else int(value)
    cap = UNBOUNDED_PREDICT_FACTOR * n_ctx if wanted <= 0 else wanted
    return max(0, min(cap, n_ctx - prompt_len))


def _stop_strings(options: dict[str, object]) -> list[str]:
    value = options.get("stop")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        message = "option 'stop' must be a list of strings"
        raise BackendError(ErrorInfo(ErrorCode.BAD_REQUEST, message))
    return [s for s in value if s]


def _think_on(think: bool | str | None) -> bool:
    """True for think=true or a level ("low", "medium", "high", "max")."""
    return think is True or (isinstance(think, str) and think not in ("", "false"))


def _chunks(request_id: int, deltas: Sequence[Delta]) -> list[Chunk]:
    return [Chunk(request_id, d.text, d.thinking) for d in deltas if d.text or d.thinking]
