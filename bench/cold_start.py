"""Benchmark 5: cold start, from request to first token on a model that is not loaded, beside
llama-cpp-python's own load time.

corral's figure is client-side: a streamed raw /api/generate for a model that /api/ps does
not list, from sending to the first token chunk; it covers spawning the worker process,
importing llama-cpp-python, loading, and the first token. The reference runs in a fresh
process: load the model and create the context through the low-level API (`load`), then the
first token of the same prompt (`ttft`); the import of llama_cpp is timed separately.
corral's addition is its cold time minus (load + ttft); a second figure also subtracts the
import, which corral's worker must pay too. The file is in the page cache on both sides (one
discarded run each first), with CORRAL_NUM_PARALLEL=1 and the same context size.

corral runs twice: as shipped, where a spare worker (started ahead of need, imports done)
takes the load, and with CORRAL_SPARE_WORKER=0, where every cold load spawns a process.
Each cold request comes SETTLE_S after the previous model was unloaded: a cold model on a
server that was idle a moment, which is when the spare is there (a new one starts 1 s after
the last was used and needs about half a second to import).

    .venv/bin/python -m bench.cold_start --model {smollm2,big,PATH} [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Corral,
    ModelChoice,
    base_parser,
    corral_options,
    corral_server,
    fmt,
    machine,
    median,
    resolve_model,
    scratch_dir,
    script_main,
)
from bench.decode_speed import isolated
from bench.stream_client import (
    StreamClient,
    stream_corral,
)

NUM_CTX = 2048
SETTLE_S = 3.0
PROMPT = "Rivers are interesting to study because they"


def inprocess_cold(path: Path, threads: int) -> dict[str, float]:
    """In a fresh process: import llama_cpp, load model and context, first token."""
    started = time.perf_counter()
    import llama_cpp  # noqa: F401  (timed: the import itself)

    import_s = time.perf_counter() - started
    from bench.decode_speed import InProcess

    engine = InProcess(path, threads, NUM_CTX)
    first = engine.generate(PROMPT, 1)
    return {
        "import_s": import_s,
        "load_s": engine.load_s,
        "model_load_s": engine.model_load_s,
        "ttft_s": first["ttft_s"],
    }


def corral_cold(server: Corral, name: str, threads: int) -> dict[str, float]:
    if name in server.loaded():
        server.unload(name)
    time.sleep(SETTLE_S)
    body = {
        "model": name,
        "prompt": PROMPT,
        "raw": True,
        "options": corral_options(threads, 1, NUM_CTX),
    }

    async def go() -> Any:
        async with StreamClient(server.url) as client:
            return await stream_corral(client, "/api/generate", body)

    stream = asyncio.run(go())
    return {"cold_ttft_s": stream.ttft_s, "load_duration_s": stream.final["load_duration"] / 1e9}


def measure(model: ModelChoice, threads: int, repeat: int) -> dict[str, Any]:
    inproc = [isolated(inprocess_cold, model.path, threads) for _ in range(repeat + 1)][1:]
    cold: dict[str, list[dict[str, float]]] = {}
    for spare in ("1", "0"):
        env = {"CORRAL_NUM_PARALLEL": "1", "CORRAL_SPARE_WORKER": spare}
        with scratch_dir("bench-cold-") as tmp, corral_server(tmp / "models", env) as server:
            name = server.import_model(model)
            cold[spare] = [corral_cold(server, name, threads) for _ in range(repeat + 1)][1:]
    load = median([r["load_s"] for r in inproc])
    ttft = median([r["ttft_s"] for r in inproc])
    imp = median([r["import_s"] for r in inproc])
    corral_s = median([r["cold_ttft_s"] for r in cold["1"]])
    no_spare_s = median([r["cold_ttft_s"] for r in cold["0"]])
    added_ms = (corral_s - load - ttft) * 1e3
    return {
        "benchmark": "cold_start",
        "model": model.key,
        "threads": threads,
        "repeat": repeat,
        "machine": machine(),
        "inprocess_import_ms": imp * 1e3,
        "inprocess_load_ms": load * 1e3,
        "inprocess_ttft_ms": ttft * 1e3,
        "corral_cold_ttft_ms": corral_s * 1e3,
        "corral_load_duration_ms": median([r["load_duration_s"] for r in cold["1"]]) * 1e3,
        "added_ms": added_ms,
        "added_beyond_import_ms": added_ms - imp * 1e3,
        "no_spare_cold_ttft_ms": no_spare_s * 1e3,
        "no_spare_added_ms": (no_spare_s - load - ttft) * 1e3,
        "goal": "added < 300 ms",
        "met": added_ms < 300.0,
        "detail": {"inprocess": inproc, "corral": cold["1"], "corral_no_spare": cold["0"]},
    }


def rows(r: dict[str, Any]) -> list[list[str]]:
    return [
        [
            r["model"],
            fmt(r["inprocess_import_ms"]),
            fmt(r["inprocess_load_ms"]),
            fmt(r["inprocess_ttft_ms"]),
            fmt(r["corral_cold_ttft_ms"]),
            fmt(r["added_ms"]),
            fmt(r["added_beyond_import_ms"]),
            fmt(r["no_spare_added_ms"]),
            "yes" if r["met"] else "NO",
        ]
    ]


HEADERS = [
    "model",
    "import ms",
    "load ms",
    "1st token ms",
    "corral cold ms",
    "added ms",
    "added - import ms",
    "added, no spare ms",
    "< 300 ms",
]


def parser() -> argparse.ArgumentParser:
    return base_parser(__doc__.splitlines()[0], tokens=1, repeat=5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return measure(resolve_model(args.model), args.threads, args.repeat)


if __name__ == "__main__":
    sys.exit(script_main(sys.modules[__name__]))
