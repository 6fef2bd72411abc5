"""Benchmark 4: time to first token of the fifth turn of a chat with a long history, beside
the first turn's.

Each session is a streamed /api/chat conversation that opens with a long system message
(about 1,500 tokens) and goes on for five turns; every reply is appended to the history as
the assistant's message before the next question. The first turn has to process the whole
prompt; by the fifth, a server that reuses the cached prefix processes only what was added
since the previous turn. Times are client-side, send to first content chunk. Sessions use
different system messages, so one session's cache cannot help the next one's first turn.

    .venv/bin/python -m bench.chat_reuse --model {smollm2,big,PATH} [--parallel N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
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
    machine,
    median,
    resolve_model,
    scratch_dir,
    script_main,
    settle,
)
from bench.stream_client import (
    StreamClient,
    stream_corral,
)

NUM_CTX = 4096
TURNS = 5
QUESTIONS = (
    "Summarise the notes above in two sentences.",
    "Which of the stations in the notes is the oldest?",
    "What do the notes say about the harbour?",
    "List three places the notes mention.",
    "Which detail in the notes surprised you most?",
)
WORDS = (
    "station",
    "harbour",
    "keeper",
    "lantern",
    "ridge",
    "valley",
    "ferry",
    "market",
    "archive",
    "bridge",
    "signal",
    "orchard",
    "granary",
    "tower",
    "canal",
    "meadow",
    "quarry",
    "mill",
    "chapel",
    "garrison",
    "beacon",
    "wharf",
    "terrace",
    "spring",
)


def history_text(session: int, sentences: int = 55) -> str:
    """A deterministic pseudo-document of about 1,500 tokens, different for each session."""
    rng = random.Random(session)
    lines = [f"Field notes, volume {session + 1}."]
    for i in range(sentences):
        a, b, c = rng.sample(WORDS, 3)
        year = rng.randint(1700, 1990)
        lines.append(
            f"Entry {i + 1}: the {a} near the {b} was rebuilt in {year}, and the "
            f"{c} keeps its old records."
        )
    return " ".join(lines)


async def session(client: Any, model: str, threads: int, tokens: int, index: int) -> list[Any]:
    """One five-turn chat; returns each turn's stream."""
    messages: list[dict[str, str]] = [{"role": "system", "content": history_text(index)}]
    turns = []
    for question in QUESTIONS[:TURNS]:
        messages.append({"role": "user", "content": question})
        body = {
            "model": model,
            "messages": messages,
            "options": corral_options(threads, tokens, NUM_CTX),
        }
        stream = await stream_corral(client, "/api/chat", body)
        messages.append({"role": "assistant", "content": stream.text})
        turns.append(stream)
    return turns


async def _sessions(url: str, model: str, threads: int, tokens: int, repeat: int) -> list[Any]:
    async with StreamClient(url) as client:
        warm = {
            "model": model,
            "messages": [{"role": "user", "content": "Hello"}],
            "options": corral_options(threads, 2, NUM_CTX),
        }
        await stream_corral(client, "/api/chat", warm)  # loads the model
        await settle()
        return [await session(client, model, threads, tokens, i) for i in range(repeat)]


def measure(
    model: ModelChoice, threads: int, tokens: int, repeat: int, parallel: int
) -> dict[str, Any]:
    env = {"CORRAL_NUM_PARALLEL": str(parallel)}
    with scratch_dir("bench-chat-") as tmp, corral_server(tmp / "models", env) as server:
        name = server.import_model(model)
        sessions = asyncio.run(_sessions(server.url, name, threads, tokens, repeat))
    per_turn = [median([s[t].ttft_s for s in sessions]) * 1e3 for t in range(TURNS)]
    prompt_tokens = [[s[t].prompt_tokens for t in range(TURNS)] for s in sessions]
    ratio = per_turn[-1] / per_turn[0]
    return {
        "benchmark": "chat_reuse",
        "model": model.key,
        "threads": threads,
        "tokens": tokens,
        "repeat": repeat,
        "num_parallel": parallel,
        "num_ctx": NUM_CTX,
        "machine": machine(),
        "ttft_ms_by_turn": per_turn,
        "first_turn_ttft_ms": per_turn[0],
        "fifth_turn_ttft_ms": per_turn[-1],
        "ratio": ratio,
        "goal": "fifth < first / 3",
        "met": ratio < 1 / 3,
        "prompt_eval_count_by_session": prompt_tokens,
        "ttft_ms_by_session": [[round(t.ttft_s * 1e3, 2) for t in s] for s in sessions],
    }


def rows(r: dict[str, Any]) -> list[list[str]]:
    tokens = r["prompt_eval_count_by_session"][0]
    return [
        [
            r["model"],
            f"{tokens[0]} / {tokens[-1]}",
            fmt(r["first_turn_ttft_ms"]),
            fmt(r["fifth_turn_ttft_ms"]),
            fmt(r["ratio"], "", 3),
            "yes" if r["met"] else "NO",
        ]
    ]


HEADERS = [
    "model",
    "prompt_eval_count turn 1 / 5",
    "turn 1 TTFT ms",
    "turn 5 TTFT ms",
    "ratio",
    "< 1/3",
]


def parser() -> argparse.ArgumentParser:
    parser = base_parser(__doc__.splitlines()[0], tokens=24, repeat=3)
    parser.add_argument("--parallel", type=int, default=4, help="CORRAL_NUM_PARALLEL")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    return measure(resolve_model(args.model), args.threads, args.tokens, args.repeat, args.parallel)


if __name__ == "__main__":
    sys.exit(script_main(sys.modules[__name__]))
