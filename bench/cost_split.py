"""Where benchmark 1's gap goes: corral's decode speed with parts of the per-token path removed.

Five sides take turns with the in-process reference of `decode_speed` in every round:

    per-token    corral with CORRAL_STREAM_INTERVAL_MS=0: one frame and one chunk per token
    full         corral as shipped, the stream read line by line as it comes (as in decode_speed)
    lazy-client  the same server, its stream read four times a second instead
    no-http      the supervisor drops each token's chunk on arrival (bench/chunk_drop.py): the
                 frames still cross zmq and are decoded, but never reach HTTP or the client
    no-chunks    the worker sends no per-token frame at all (engine, detokenizer and the final
                 reply as shipped)

Speeds are the server-reported `eval_count / eval_duration` (the one figure every side has;
in decode_speed it agrees with the client's own to within 1%); each ratio is the median of
round-by-round ratios to the reference. Neighbouring sides differ by one part of the path:
no-chunks -> no-http is the two zmq hops and the supervisor's receiving, no-http ->
lazy-client is the supervisor's HTTP path, lazy-client -> full is the client's reading,
full -> per-token is what holding tokens for up to 50 ms saves.
A diagnostic, not one of the issue's figures; `run_all` does not run it.

    .venv/bin/python -m bench.cost_split --model {smollm2,big,PATH} [--threads N] [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ModelChoice,
    base_parser,
    corral_options,
    corral_server,
    fmt,
    fmt_interval,
    machine,
    median,
    paired_ratio,
    paired_ratio_interval,
    resolve_model,
    scratch_dir,
    script_main,
)
from bench.decode_speed import NUM_CTX, PROMPT, EngineProcess
from bench.stream_client import StreamClient, stream_corral_blocking

SIDES = ("per-token", "full", "lazy-client", "no-http", "no-chunks")
# The server behind each side: python -m ..., and its environment beside the common one
# (the lazy client reads corral as shipped).
SERVERS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "per-token": (("supervisor",), {"CORRAL_STREAM_INTERVAL_MS": "0"}),
    "full": (("supervisor",), {}),
    "no-http": (("bench.chunk_drop", "supervisor"), {}),
    "no-chunks": (("bench.chunk_drop", "worker"), {}),
}
LAZY_POLL_S = 0.25  # the lazy client reads four times a second


def _server_tps(side: str, url: str, request: dict[str, Any]) -> float:
    """One streamed generation on `side`; the decode speed the server reports for it."""
    poll_s = LAZY_POLL_S if side == "lazy-client" else 0.0
    stream = stream_corral_blocking(StreamClient(url), "/api/generate", request, poll_s)
    return stream.server_decode_tps


def measure(model: ModelChoice, threads: int, tokens: int, repeat: int) -> dict[str, Any]:
    before = machine()
    options = corral_options(threads, tokens, NUM_CTX)
    body = {"prompt": PROMPT, "raw": True, "options": options}
    env = {"CORRAL_NUM_PARALLEL": "1", "CORRAL_SPARE_WORKER": "false"}
    runs: dict[str, list[float]] = {"reference": [], **{side: [] for side in SIDES}}
    with contextlib.ExitStack() as stack:
        reference = stack.enter_context(EngineProcess("lowlevel", model.path, threads, NUM_CTX))
        urls: dict[str, str] = {}
        for side, (module, side_env) in SERVERS.items():
            tmp = stack.enter_context(scratch_dir(f"bench-split-{side}-"))
            server = stack.enter_context(corral_server(tmp / "models", env | side_env, module))
            server.import_model(model)
            urls[side] = server.url
        urls["lazy-client"] = urls["full"]
        request = {"model": model.name, **body}
        warm = {**request, "options": {**options, "num_predict": 8}}
        for url in {*urls.values()}:
            stream_corral_blocking(StreamClient(url), "/api/generate", warm)
        reference.generate(PROMPT, 8)
        for _ in range(repeat):
            runs["reference"].append(reference.generate(PROMPT, tokens)["decode_tps"])
            for side in SIDES:
                runs[side].append(_server_tps(side, urls[side], request))
    ratios = {side: paired_ratio(runs[side], runs["reference"]) for side in SIDES}
    return {
        "benchmark": "cost_split",
        "model": model.key,
        "threads": threads,
        "tokens": tokens,
        "repeat": repeat,
        "machine": before,
        "loadavg_1m_after": machine()["loadavg_1m"],
        "reference_tps": median(runs["reference"]),
        "tps": {side: median(runs[side]) for side in SIDES},
        "ratio": ratios,
        "ratio_interval_95": {
            side: paired_ratio_interval(runs[side], runs["reference"]) for side in SIDES
        },
        "runs": runs,
    }


def rows(r: dict[str, Any]) -> list[list[str]]:
    ratios = [
        f"{fmt(r['ratio'][s], '', 3)} ({fmt_interval(r['ratio_interval_95'][s])})" for s in SIDES
    ]
    return [[r["model"], fmt(r["reference_tps"]), *ratios]]


HEADERS = ["model", "llama-cpp low-level tok/s", *(f"{side} ratio (95%)" for side in SIDES)]


def parser() -> argparse.ArgumentParser:
    return base_parser(__doc__.splitlines()[0], tokens=128, repeat=15)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return measure(resolve_model(args.model), args.threads, args.tokens, args.repeat)


if __name__ == "__main__":
    sys.exit(script_main(sys.modules[__name__]))
