"""Streamed chunks held for a few steps and joined (worker/engine.py, `hold_s`, `coalesce`).

The Engine runs on this thread over the fake backend, with a clock the test moves: each
backend step takes `STEP_S` of it, so which frame each chunk leaves in is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.backend import FakeSwitches, LoadOptions, SlotEvent
from worker.engine import Engine, Job, JobReply, coalesce
from worker.fake_backend import FakeBackend
from worker.protocol import Chunk, Done, ErrorCode, ErrorInfo, Failed, Generate

STEP_S = 0.010
PIECES = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class TimedBackend:
    """The fake backend, each step taking `step_s` of the test's clock."""

    inner: FakeBackend
    clock: Clock
    step_s: float = STEP_S

    def step(self) -> list[SlotEvent]:
        self.clock.now += self.step_s
        return self.inner.step()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@dataclass
class Harness:
    hold_s: float
    slots: int = 1
    clock: Clock = field(default_factory=Clock)
    frames: list[list[JobReply]] = field(default_factory=list)

    def __post_init__(self) -> None:
        options = LoadOptions(
            model_path="fake.gguf", model_name="fake", num_ctx=256, num_parallel=self.slots,
            num_batch=64, num_gpu=0, num_thread=1, use_mmap=True, embedding=False,
        )  # fmt: skip
        self.backend = TimedBackend(FakeBackend(options, FakeSwitches(tokens=PIECES)), self.clock)
        self.engine = Engine(
            self.backend,  # a wrapper: Backend's other attributes via __getattr__
            self.frames.append,
            hold_s=self.hold_s,
            clock=self.clock,
        )

    def submit(self, request_id: int, **options: object) -> Job:
        job = Job(Generate(id=request_id, prompt="hi", raw=True, options=dict(options)))
        self.engine.accept(job)
        return job

    def run(self, steps: int = 1000) -> None:
        for _ in range(steps):
            if not self.engine.busy:
                return
            self.engine.step()

    def texts(self, request_id: int) -> list[list[str]]:
        """Per frame, the texts of `request_id`'s chunks in it."""
        mine = [[r for r in f if isinstance(r, Chunk) and r.id == request_id] for f in self.frames]
        return [[c.text for c in chunks] for chunks in mine if chunks]


def test_without_a_hold_every_step_sends_its_own_frame() -> None:
    h = Harness(hold_s=0.0)
    h.submit(1)
    h.run()
    assert h.texts(1) == [[p] for p in PIECES]
    assert isinstance(h.frames[-1][-1], Done)


def test_held_chunks_leave_together_and_none_waits_past_the_interval() -> None:
    # 10 ms steps, 35 ms interval: after the first token (sent at once), three steps'
    # tokens share a frame; waiting for a fourth would pass the interval.
    h = Harness(hold_s=0.035)
    h.submit(1)
    h.run()
    assert h.texts(1) == [["a"], ["bcd"], ["efg"], ["hij"]]
    last = h.frames[-1]
    assert isinstance(last[0], Chunk) and isinstance(last[-1], Done)  # the end leaves at once
    assert last[-1].eval_count == len(PIECES)


def test_the_first_chunk_of_each_request_leaves_at_once() -> None:
    h = Harness(hold_s=10.0, slots=2)
    h.submit(1)
    h.engine.step()  # request 1's first token
    assert h.texts(1) == [["a"]]
    h.engine.step()  # held
    h.submit(2)  # a new request sends what was held: its prompt may make the next step long
    assert h.texts(1) == [["a"], ["b"]]
    h.engine.step()  # request 2's first token leaves at once, and request 1's with it
    assert h.texts(2) == [["a"]] and h.texts(1)[-1] == ["c"]
    h.run()  # request 1's end sends request 2's held chunks with it
    assert h.texts(1) == [["a"], ["b"], ["c"], ["defghij"]]
    assert h.texts(2) == [["a"], ["bcdefgh"], ["ij"]]


def test_a_step_longer_than_the_interval_sends_at_once() -> None:
    h = Harness(hold_s=0.035)
    h.backend.step_s = 0.050
    h.submit(1)
    h.run()
    assert h.texts(1) == [[p] for p in PIECES]


def test_a_cancelled_request_gets_its_held_text_then_its_failure() -> None:
    h = Harness(hold_s=10.0)
    job = h.submit(1)
    h.engine.step()
    h.engine.step()
    h.engine.step()
    assert h.texts(1) == [["a"]]
    job.cancel()
    h.engine.step()
    last = h.frames[-1]
    assert [type(r) for r in last] == [Chunk, Failed]
    assert isinstance(last[0], Chunk) and last[0].text == "bc"


def test_coalesce_joins_each_requests_run_of_chunks_in_order() -> None:
    error = ErrorInfo(ErrorCode.CANCELLED, "request cancelled")
    replies: list[JobReply] = [
        Chunk(1, "a"),
        Chunk(2, "x"),
        Chunk(1, "b"),
        Chunk(2, "y"),
        Failed(2, error),
        Chunk(1, "c"),
    ]
    assert coalesce(replies) == [Chunk(1, "abc"), Chunk(2, "xy"), Failed(2, error)]


def test_coalesce_keeps_thinking_ahead_of_the_text_it_came_before() -> None:
    thinking_then_text = [Chunk(1, "", "hmm"), Chunk(1, "", " ok"), Chunk(1, "Yes")]
    assert coalesce(thinking_then_text) == [Chunk(1, "Yes", "hmm ok")]
    text_then_thinking = [Chunk(1, "Yes"), Chunk(1, "", "again"), Chunk(1, "!")]
    assert coalesce(text_then_thinking) == [Chunk(1, "Yes"), Chunk(1, "!", "again")]
