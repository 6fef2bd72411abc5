"""Benchmark 2: time to first token through corral for a short prompt on a loaded model,
minus the same in-process with llama-cpp-python's low-level API.

corral's figure is client-side: from sending a streamed raw /api/generate to the first
chunk carrying a token. The in-process figure runs from tokenizing the same text to the
first greedy token sampled, on a cleared cache. Each run uses a different prompt opening, so
no prompt-prefix reuse can help either side; both sides see the same prompts in the same
order, and each starts 0.1 s after the other ended (llama.cpp's threads spin a while after
a decode, and a request sent into that spin waits for the cores). The overhead is the
median of the round-by-round differences, with a 95% interval.

    .venv/bin/python -m bench.first_token --model {smollm2,big,PATH} [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    QUIET_S,
    ModelChoice,
    base_parser,
    corral_options,
    corral_server,
    fmt,
    fmt_interval,
    idle_cpu_percent,
    machine,
    median,
    median_interval,
    resolve_model,
    scratch_dir,
    script_main,
    settle,
    settled,
)
from bench.decode_speed import EngineProcess
from bench.stream_client import (
    Stream,
    StreamClient,
    stream_corral,
)

NUM_CTX = 2048
SUBJECTS = (
    "Rivers",
    "Glaciers",
    "Volcanoes",
    "Deserts",
    "Forests",
    "Comets",
    "Bridges",
    "Lighthouses",
    "Orchards",
    "Harbors",
    "Canyons",
    "Islands",
)


def prompts(repeat: int) -> list[str]:
    """Short prompts (8 or 9 tokens) that differ from their first word on and that the
    model continues (a prompt ending a sentence may get end-of-text at once)."""
    return [
        f"{SUBJECTS[i % len(SUBJECTS)]} are interesting to study because they"
        for i in range(repeat + 1)
    ]


async def _interleaved(
    url: str, engine: EngineProcess, model: str, threads: int, tokens: int, texts: list[str]
) -> tuple[list[dict[str, float]], list[Stream]]:
    """Both sides get each prompt in turn; the first prompt is a warm-up on both."""
    options = corral_options(threads, tokens, NUM_CTX)
    inproc, corral = [], []
    async with StreamClient(url) as client:
        for text in texts:
            await asyncio.sleep(QUIET_S)
            inproc.append(engine.generate(text, tokens))
            await asyncio.sleep(QUIET_S)
            body = {"model": model, "prompt": text, "raw": True, "options": options}
            corral.append(await stream_corral(client, "/api/generate", body))
            if len(corral) == 1:
                await settle()  # after the warm-up, which loaded the model
    return inproc[1:], corral[1:]


def measure(model: ModelChoice, threads: int, tokens: int, repeat: int) -> dict[str, Any]:
    before = machine()
    with (
        EngineProcess("lowlevel", model.path, threads, NUM_CTX) as engine,
        scratch_dir("bench-ttft-") as tmp,
        corral_server(tmp / "models", {"CORRAL_NUM_PARALLEL": "1"}) as server,
    ):
        name = server.import_model(model)
        texts = prompts(repeat)
        runs = _interleaved(server.url, engine, name, threads, tokens, texts)
        inproc, corral = asyncio.run(runs)
        idle = idle_cpu_percent(server.proc.pid)  # model still loaded, nothing asked
    inproc_s = median([r["ttft_s"] for r in inproc])
    corral_s = median([r.ttft_s for r in corral])
    differences = [(c.ttft_s - i["ttft_s"]) * 1e3 for c, i in zip(corral, inproc, strict=True)]
    overhead_ms = median(differences)
    interval = median_interval(differences)
    return {
        "benchmark": "first_token",
        "model": model.key,
        "threads": threads,
        "repeat": repeat,
        "machine": before,
        "loadavg_1m_after": machine()["loadavg_1m"],
        "prompt_tokens": {
            "inprocess": [r["prompt_tokens"] for r in inproc],
            "corral": [r.prompt_tokens for r in corral],
        },
        "inprocess_ttft_ms": inproc_s * 1e3,
        "corral_ttft_ms": corral_s * 1e3,
        "overhead_ms": overhead_ms,
        "overhead_interval_95_ms": interval,
        "overhead_of_medians_ms": (corral_s - inproc_s) * 1e3,
        "corral_idle_cpu_percent": idle,
        "goal": "<= 15 ms",
        "met": overhead_ms <= 15.0,
        "settled": settled(interval, 15.0),
        "corral_server_prompt_eval_ms": median(
            [r.final["prompt_eval_duration"] / 1e6 for r in corral]
        ),
        "runs_ms": {
            "inprocess": [r["ttft_s"] * 1e3 for r in inproc],
            "corral": [r.ttft_s * 1e3 for r in corral],
        },
    }


def rows(r: dict[str, Any]) -> list[list[str]]:
    prompt = str(round(median(r["prompt_tokens"]["inprocess"])))
    return [
        [
            r["model"],
            prompt,
            fmt(r["inprocess_ttft_ms"]),
            fmt(r["corral_ttft_ms"]),
            fmt(r["overhead_ms"]),
            fmt_interval(r["overhead_interval_95_ms"], 1),
            "yes" if r["met"] else "NO",
        ]
    ]


HEADERS = [
    "model",
    "prompt tokens",
    "in-process TTFT ms",
    "corral TTFT ms",
    "overhead ms",
    "95% interval",
    "<= 15 ms",
]


def parser() -> argparse.ArgumentParser:
    return base_parser(__doc__.splitlines()[0], tokens=4, repeat=21)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return measure(resolve_model(args.model), args.threads, args.tokens, args.repeat)


if __name__ == "__main__":
    sys.exit(script_main(sys.modules[__name__]))
