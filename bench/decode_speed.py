"""Benchmark 1: decode speed of one streamed /api/generate through corral vs llama-cpp-python.

The reference is llama-cpp-python in-process through its low-level API: one `llama_decode`
per token and a greedy sampler in C (the engine's own limit). The high-level `Llama.generate`
speed is reported beside it. Decode speed everywhere is (tokens - 1) / (time of the last
token - time of the first token), so prompt processing is left out; corral's is measured by
the client from the streamed chunks. The engines run in their own processes and the three
sides take turns, so load that drifts hits them all. The ratio comes with a 95% interval
for its median (`median_interval`): the verdict is settled only when that interval lies
wholly on one side of 0.95. `InProcess` and `EngineProcess` are shared with first_token
and cold_start.

    .venv/bin/python -m bench.decode_speed --model {smollm2,big,PATH} [--threads N] [--tokens N]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import ctypes
import multiprocessing
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ModelChoice,
    base_parser,
    corral_options,
    corral_server,
    fmt,
    fmt_interval,
    idle_cpu_percent,
    machine,
    median,
    paired_ratio,
    paired_ratio_interval,
    resolve_model,
    scratch_dir,
    script_main,
    settle,
    settled,
)
from bench.stream_client import StreamClient, stream_corral_blocking

T = TypeVar("T")
NUM_CTX = 2048
# A prompt that greedy decoding continues for hundreds of tokens on SmolLM2 (it counts on);
# on the generated model no end-of-text is reachable at all.
PROMPT = "Count to one thousand: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


class InProcess:
    """llama-cpp-python's low-level API in this process: load, prefill, greedy decode."""

    def __init__(self, path: Path, threads: int, n_ctx: int, n_seq_max: int = 1) -> None:
        import llama_cpp as lc

        self.lc = lc
        self._quiet = lc.llama_log_callback(lambda _level, _text, _data: None)
        lc.llama_log_set(self._quiet, ctypes.c_void_p(0))
        started = time.perf_counter()
        lc.llama_backend_init()
        model_params = lc.llama_model_default_params()
        self.model = lc.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise RuntimeError(f"could not load {path}")
        self.model_load_s = time.perf_counter() - started
        params = lc.llama_context_default_params()
        params.n_ctx = n_ctx * n_seq_max
        params.n_seq_max = n_seq_max
        params.n_batch = 512
        params.n_threads = params.n_threads_batch = threads
        self.ctx = lc.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError("could not create a context")
        self.load_s = time.perf_counter() - started
        self.n_batch = lc.llama_n_batch(self.ctx)
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.memory = lc.llama_get_memory(self.ctx)
        self.sampler = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        lc.llama_sampler_chain_add(self.sampler, lc.llama_sampler_init_greedy())
        self._piece = ctypes.create_string_buffer(256)

    def tokenize(self, text: str) -> list[int]:
        lc, data = self.lc, text.encode()
        buf = (lc.llama_token * (len(data) + 8))()
        n = lc.llama_tokenize(self.vocab, data, len(data), buf, len(buf), True, True)
        return list(buf[:n])

    def _decode(self, tokens: list[int]) -> None:
        for i in range(0, len(tokens), self.n_batch):
            chunk = tokens[i : i + self.n_batch]
            arr = (self.lc.llama_token * len(chunk))(*chunk)
            if self.lc.llama_decode(self.ctx, self.lc.llama_batch_get_one(arr, len(chunk))) != 0:
                raise RuntimeError("llama_decode failed")

    def _next(self) -> int:
        token = int(self.lc.llama_sampler_sample(self.sampler, self.ctx, -1))
        self.lc.llama_token_to_piece(self.vocab, token, self._piece, 256, 0, False)
        return token

    def generate(self, text: str, n: int) -> dict[str, float]:
        """Fresh cache; tokenize, prefill, then `n` greedy tokens (end-of-text ignored)."""
        self.lc.llama_memory_clear(self.memory, True)
        self.lc.llama_sampler_reset(self.sampler)
        start = time.perf_counter()
        prompt = self.tokenize(text)
        self._decode(prompt)
        token = self._next()
        first = time.perf_counter()
        for _ in range(n - 1):
            self._decode([token])
            token = self._next()
        last = time.perf_counter()
        tps = (n - 1) / (last - first) if n > 1 else float("nan")
        return {"ttft_s": first - start, "decode_tps": tps, "prompt_tokens": len(prompt)}


def isolated(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` in a fresh spawned process, so nothing of llama.cpp stays behind here."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


class HighLevel:
    """llama-cpp-python's `Llama` class, timed like InProcess (reference only)."""

    def __init__(self, path: Path, threads: int, n_ctx: int) -> None:
        from llama_cpp import Llama

        self.llm: Any = Llama(
            str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
        )

    def generate(self, text: str, n: int) -> dict[str, float]:
        self.llm.reset()
        start = time.perf_counter()
        prompt = self.llm.tokenize(text.encode(), add_bos=True, special=True)
        stamps = []
        for _token in self.llm.generate(prompt, temp=0.0, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) == n:
                break
        tps = (n - 1) / (stamps[-1] - stamps[0]) if n > 1 else float("nan")
        return {"ttft_s": stamps[0] - start, "decode_tps": tps, "prompt_tokens": len(prompt)}


_ENGINE: InProcess | HighLevel | None = None


def _start_engine(kind: str, path: Path, threads: int, n_ctx: int) -> None:
    global _ENGINE
    engine = InProcess if kind == "lowlevel" else HighLevel
    _ENGINE = engine(path, threads, n_ctx)


def _engine_generate(text: str, n: int) -> dict[str, float]:
    assert _ENGINE is not None
    return _ENGINE.generate(text, n)


class EngineProcess:
    """An in-process engine ("lowlevel" or "highlevel") living in its own spawned process,
    so its runs can be interleaved with corral's and nothing of llama.cpp loads here."""

    def __init__(self, kind: str, path: Path, threads: int, n_ctx: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pool = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=context, initializer=_start_engine, initargs=(kind, path, threads, n_ctx)
        )

    def generate(self, text: str, n: int) -> dict[str, float]:
        return self._pool.submit(_engine_generate, text, n).result()

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown()


def _interleaved(
    url: str, engines: dict[str, EngineProcess], model: str, threads: int, tokens: int, repeat: int
) -> dict[str, list[Any]]:
    """Warm every side up, then run them in turn `repeat` times (drifting load hits all).

    corral is read on a blocking socket: one stream, so no event loop in the client."""
    options = corral_options(threads, tokens, NUM_CTX)
    body = {"model": model, "prompt": PROMPT, "raw": True, "options": options}
    warm = {**body, "options": {**options, "num_predict": 8}}
    out: dict[str, list[Any]] = {"corral": [], **{k: [] for k in engines}}
    client = StreamClient(url)
    stream_corral_blocking(client, "/api/generate", warm)
    asyncio.run(settle())
    for engine in engines.values():
        engine.generate(PROMPT, 8)
    for _ in range(repeat):
        for kind, engine in engines.items():
            out[kind].append(engine.generate(PROMPT, tokens))
        out["corral"].append(stream_corral_blocking(client, "/api/generate", body))
    return out


def measure(model: ModelChoice, threads: int, tokens: int, repeat: int) -> dict[str, Any]:
    before = machine()
    with (
        EngineProcess("lowlevel", model.path, threads, NUM_CTX) as low,
        EngineProcess("highlevel", model.path, threads, NUM_CTX) as high,
        scratch_dir("bench-decode-") as tmp,
        corral_server(tmp / "models", {"CORRAL_NUM_PARALLEL": "1"}) as server,
    ):
        name = server.import_model(model)
        engines = {"lowlevel": low, "highlevel": high}
        runs = _interleaved(server.url, engines, name, threads, tokens, repeat)
        idle = idle_cpu_percent(server.proc.pid)  # model still loaded, nothing asked
    corral = runs["corral"]
    low_runs = [r["decode_tps"] for r in runs["lowlevel"]]
    low_tps = median(low_runs)
    corral_tps = median([r.decode_tps for r in corral])
    ratio = paired_ratio([r.decode_tps for r in corral], low_runs)
    interval = paired_ratio_interval([r.decode_tps for r in corral], low_runs)
    server_tps = [r.server_decode_tps for r in corral]
    return {
        "benchmark": "decode_speed",
        "model": model.key,
        "threads": threads,
        "tokens": tokens,
        "repeat": repeat,
        "machine": before,
        "loadavg_1m_after": machine()["loadavg_1m"],
        "inprocess_lowlevel_tps": low_tps,
        "inprocess_highlevel_tps": median([r["decode_tps"] for r in runs["highlevel"]]),
        "corral_tps": corral_tps,
        "corral_server_reported_tps": median(server_tps),
        "ratio": ratio,
        "ratio_interval_95": interval,
        "ratio_of_medians": corral_tps / low_tps,
        "goal": ">= 0.95",
        "met": ratio >= 0.95,
        "settled": settled(interval, 0.95),
        "corral_tokens": [r.tokens for r in corral],
        "corral_idle_cpu_percent": idle,
        "runs": {
            "inprocess_lowlevel": [r["decode_tps"] for r in runs["lowlevel"]],
            "inprocess_highlevel": [r["decode_tps"] for r in runs["highlevel"]],
            "corral": [r.decode_tps for r in corral],
            "corral_server_reported": server_tps,
        },
    }


def rows(r: dict[str, Any]) -> list[list[str]]:
    return [
        [
            r["model"],
            fmt(r["inprocess_lowlevel_tps"]),
            fmt(r["inprocess_highlevel_tps"]),
            fmt(r["corral_tps"]),
            fmt(r["corral_server_reported_tps"]),
            fmt(r["ratio"], "", 3),
            fmt_interval(r["ratio_interval_95"]),
            "yes" if r["met"] else "NO",
        ]
    ]


HEADERS = [
    "model",
    "llama-cpp low-level tok/s",
    "Llama.generate tok/s",
    "corral tok/s",
    "corral (server-side) tok/s",
    "ratio",
    "95% interval",
    ">= 0.95",
]


def parser() -> argparse.ArgumentParser:
    return base_parser(__doc__.splitlines()[0], tokens=128, repeat=31)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return measure(resolve_model(args.model), args.threads, args.tokens, args.repeat)


if __name__ == "__main__":
    sys.exit(script_main(sys.modules[__name__]))
