"""Continuous batching with real llama.cpp: several requests share each step, alone-equal.

Three levels: the backend's slots on the tiny GGUF; the Engine (worker/engine.py) stepped
on the test's thread, which plays the engine thread; and real worker processes, on SmolLM2
where real text matters. Assertions are on exact tokens, counts and replies, never timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from tests.support.tiny_gguf import write_tiny_gguf  # noqa: E402
from tests.support.worker_harness import WorkerClient, run_worker  # noqa: E402
from worker.backend import Ended, LoadOptions, Sampled, Sampling  # noqa: E402
from worker.engine import Engine, Job, JobReply  # noqa: E402
from worker.llama_backend import LlamaBackend  # noqa: E402
from worker.protocol import Cancel, Chunk, Done, ErrorCode, Failed, Generate, Reply  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.llama, pytest.mark.timeout(300)]

TEXTS = ["the cat sat on the mat", "hello there world", "a quick brown fox", "in the start"]
GREEDY = {"temperature": 0, "num_predict": 24}
PLAIN = "{{ .Prompt }}"  # a template, so Done.context carries the token ids


def _load(path: Path, slots: int, *, num_batch: int = 512, num_ctx: int = 128) -> LlamaBackend:
    return LlamaBackend(
        LoadOptions(
            model_path=str(path), model_name="m", num_ctx=num_ctx, num_parallel=slots,
            num_batch=num_batch, num_gpu=0, num_thread=1, use_mmap=True, embedding=False,
        )  # fmt: skip
    )


def _generate(
    backend: LlamaBackend, prompts: dict[int, list[int]], late_step: int = 0
) -> dict[int, list[int]]:
    """Greedy tokens by slot until every slot ends; slots >= 2 start at step `late_step`."""
    sampling = Sampling(temperature=0.0, num_predict=24)
    out: dict[int, list[int]] = {slot: [] for slot in prompts}
    waiting = dict(prompts)
    live: set[int] = set()
    for step in range(10_000):
        for slot in [s for s in waiting if s < 2 or step >= late_step]:
            backend.start(slot, waiting.pop(slot), sampling)
            live.add(slot)
        if not live and not waiting:
            return out
        for event in backend.step():
            if isinstance(event, Sampled):
                out[event.slot].append(event.piece.token)
            elif isinstance(event, Ended):
                live.remove(event.slot)
    raise AssertionError("generation did not end")


@pytest.mark.parametrize(
    ("num_batch", "late_step"), [(512, 0), (64, 3)], ids=["together", "staggered"]
)
def test_batching_backend_concurrent_greedy_matches_alone(
    tiny_gguf: Path, num_batch: int, late_step: int
) -> None:
    alone: list[list[int]] = []
    for text in TEXTS:
        single = _load(tiny_gguf, 1)
        try:
            prompt = single.tokenize(text * 4, add_special=True, parse_special=False)
            alone.append(_generate(single, {0: prompt})[0])
        finally:
            single.close()
    batched = _load(tiny_gguf, 4, num_batch=num_batch)
    try:
        prompts = {
            i: batched.tokenize(t * 4, add_special=True, parse_special=False)
            for i, t in enumerate(TEXTS)
        }
        together = _generate(batched, prompts, late_step)
    finally:
        batched.close()
    assert [together[i] for i in range(4)] == alone


class _Stepper:
    """An Engine stepped on this thread, collecting every reply it emits."""

    def __init__(self, backend: LlamaBackend) -> None:
        self.replies: list[JobReply] = []
        self.engine = Engine(backend, self.replies.extend)

    def submit(self, request_id: int, text: str, **options: object) -> Job:
        opts: dict[str, object] = {**GREEDY, **options}
        job = Job(Generate(id=request_id, prompt=text, template=PLAIN, options=opts))
        self.engine.accept(job)
        return job

    def step(self) -> list[JobReply]:
        before = len(self.replies)
        self.engine.step()
        return self.replies[before:]

    def finish(self) -> None:
        while self.engine.busy:
            self.engine.step()

    def end_of(self, request_id: int) -> JobReply:
        return [r for r in self.replies if r.id == request_id][-1]


@pytest.fixture
def tiny(tiny_gguf: Path) -> Iterator[LlamaBackend]:
    backend = _load(tiny_gguf, 2)
    yield backend
    backend.close()


def _alone(tiny_gguf: Path, text: str, **options: object) -> Done:
    backend = _load(tiny_gguf, 1)
    try:
        stepper = _Stepper(backend)
        stepper.submit(1, text, **options)
        stepper.finish()
        done = stepper.end_of(1)
        assert isinstance(done, Done)
        return done
    finally:
        backend.close()


def test_batching_engine_cancel_frees_the_slot_within_one_step(
    tiny: LlamaBackend, tiny_gguf: Path
) -> None:
    stepper = _Stepper(tiny)
    cancelled = stepper.submit(1, TEXTS[0], num_predict=60)  # slot 0
    stepper.submit(2, TEXTS[1], num_predict=60)  # slot 1
    stepper.submit(3, TEXTS[2])  # waits: both slots are taken
    for _ in range(3):
        stepper.step()
    assert not any(isinstance(r, Done | Failed) for r in stepper.replies)
    cancelled.cancel()
    ended = [r for r in stepper.step() if isinstance(r, Done | Failed)]
    assert [(r.id, r.error.code) for r in ended if isinstance(r, Failed)] == [
        (1, ErrorCode.CANCELLED)
    ]
    assert len(ended) == 1
    # In that same step request 3 took slot 0 and evaluated its whole prompt.
    prompt3 = tiny.tokenize(TEXTS[2], add_special=True, parse_special=True)
    assert list(tiny.cached(0)[: len(prompt3)]) == prompt3
    stepper.finish()
    for request_id, text, options in ((2, TEXTS[1], {"num_predict": 60}), (3, TEXTS[2], {})):
        done = stepper.end_of(request_id)
        assert isinstance(done, Done)
        assert done.context == _alone(tiny_gguf, text, **options).context


def test_batching_engine_overflow_fails_only_its_own_request(
    tiny: LlamaBackend, tiny_gguf: Path
) -> None:
    stepper = _Stepper(tiny)
    stepper.submit(1, TEXTS[0], num_predict=60)
    stepper.step()
    job = Job(Generate(id=2, prompt="the " * 200, raw=True, truncate=False, options=GREEDY))
    stepper.engine.accept(job)
    stepper.submit(3, "the cat " * 40, num_predict=-1)  # fills its 128-token context
    stepper.finish()
    failed = stepper.end_of(2)
    assert isinstance(failed, Failed) and failed.error.code is ErrorCode.CONTEXT_OVERFLOW
    full = stepper.end_of(3)
    assert isinstance(full, Done) and full.done_reason == "length"
    assert len(full.context) == 128
    done = stepper.end_of(1)
    assert isinstance(done, Done) and done.eval_count == 60
    assert done.context == _alone(tiny_gguf, TEXTS[0], num_predict=60).context


def test_batching_engine_reuses_the_longest_prefix(tiny: LlamaBackend) -> None:
    stepper = _Stepper(tiny)
    base = "the cat sat on the mat and the dog sat on the log " * 3
    stepper.submit(1, "hello there")  # slot 0
    stepper.submit(2, base)  # slot 1
    stepper.finish()
    first = stepper.end_of(2)
    assert isinstance(first, Done) and first.prompt_eval_count > 60
    stepper.submit(3, base + "again")  # slot 1 holds `base`: only the new end is evaluated
    stepper.finish()
    second = stepper.end_of(3)
    assert isinstance(second, Done)
    added = len(second.context) - second.eval_count - (len(first.context) - first.eval_count)
    assert second.prompt_eval_count <= added + 1 < first.prompt_eval_count // 4


def _text(replies: list[Reply]) -> str:
    return "".join(r.text for r in replies if isinstance(r, Chunk))


async def _ask(worker: WorkerClient, request_id: int, prompt: str) -> tuple[str, Done]:
    replies = await worker.request(
        Generate(id=request_id, prompt=prompt, options={"temperature": 0, "num_predict": 40})
    )
    done = replies[-1]
    assert isinstance(done, Done), done
    return _text(replies), done


QUESTIONS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours.",
    "Explain gravity to a child.",
]


async def test_batching_worker_concurrent_greedy_matches_alone(smollm2_gguf: Path) -> None:
    async with run_worker("llama", model=str(smollm2_gguf), num_ctx=512) as single:
        alone = [await _ask(single, i, q) for i, q in enumerate(QUESTIONS)]
    async with run_worker("llama", model=str(smollm2_gguf), num_ctx=512, num_parallel=4) as w:
        assert w.ready is not None and w.ready.n_parallel == 4
        together = await asyncio.gather(*(_ask(w, i, q) for i, q in enumerate(QUESTIONS)))
    assert [text for text, _ in together] == [text for text, _ in alone]
    assert [done.context for _, done in together] == [done.context for _, done in alone]
    assert all(text.strip() for text, _ in together)


async def test_batching_worker_chat_pays_only_for_the_new_turn(smollm2_gguf: Path) -> None:
    options: dict[str, object] = {"temperature": 0, "num_predict": 24}
    history: list[dict[str, object]] = [{"role": "user", "content": QUESTIONS[0]}]
    async with run_worker("llama", model=str(smollm2_gguf), num_ctx=512, num_parallel=2) as w:
        first = await w.request(Generate(id=1, messages=history, chat=True, options=options))
        history += [
            {"role": "assistant", "content": _text(first)},
            {"role": "user", "content": "And of Italy?"},
        ]
        second = await w.request(Generate(id=2, messages=history, chat=True, options=options))
    done1, done2 = first[-1], second[-1]
    assert isinstance(done1, Done) and isinstance(done2, Done)
    # The second prompt holds the whole first one and the answer, yet costs a few tokens.
    assert done2.prompt_eval_count < min(20, done1.prompt_eval_count)


@pytest.fixture(scope="module")
def long_tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a 4096-token context, for a stream long enough to cancel."""
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-long.gguf", n_ctx=4096)


async def test_batching_worker_cancel_lets_the_others_finish(long_tiny_gguf: Path) -> None:
    endless = {"temperature": 0, "num_predict": -1}  # runs to the end of its 4096 tokens
    async with run_worker("llama", model=str(long_tiny_gguf), num_ctx=4096, num_parallel=2) as w:
        await w.send(Generate(id=1, prompt=TEXTS[0], options=endless))
        await w.send(Generate(id=2, prompt=TEXTS[1], options={**GREEDY, "num_predict": 100}))
        stream = w.replies_for(1)
        assert isinstance(await anext(stream), Chunk)
        await w.send(Cancel(id=1))
        third = asyncio.ensure_future(w.request(Generate(id=3, prompt=TEXTS[2], options=GREEDY)))
        rest = [r async for r in stream]
        others = [r async for r in w.replies_for(2)], await third
    assert isinstance(rest[-1], Failed) and rest[-1].error.code is ErrorCode.CANCELLED
    assert isinstance(others[0][-1], Done) and others[0][-1].eval_count == 100
    assert isinstance(others[1][-1], Done) and others[1][-1].eval_count == 24
