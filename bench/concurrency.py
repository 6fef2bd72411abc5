"""Benchmark 3: aggregate tokens per second with 1, 2, 4 and 8 concurrent streaming clients,
corral beside llama.cpp's own llama-server with as many parallel slots, same model and threads.

For each client count N, corral runs with CORRAL_NUM_PARALLEL=N and llama-server with
`-np N -c N*NUM_CTX` (each slot gets NUM_CTX tokens on both). After a warm-up burst, each
run starts N streamed requests at once, each with its own prompt, and the aggregate is all
generated tokens over the wall time from the first request sent to the last reply ended
(prompt processing included). llama-server gets `ignore_eos`; corral's token counts come from
eval_count. llama-server is built by bench/build_llama_server.sh on first use.

    .venv/bin/python -m bench.concurrency --model {smollm2,big,PATH} [--clients 1,2,4,8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    LLAMA_SERVER,
    QUIET_S,
    REPO,
    ModelChoice,
    base_parser,
    corral_options,
    corral_server,
    fmt,
    fmt_interval,
    free_port,
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
    stop_process,
    wait_http,
)
from bench.stream_client import (
    Stream,
    StreamClient,
    stream_corral,
    stream_llama_server,
)

NUM_CTX = 1024
Send = Callable[[int, int], Awaitable[Stream]]  # (client index, tokens) -> one stream


def prompt(i: int) -> str:
    """A different opening per client; SmolLM2 keeps counting on for hundreds of tokens."""
    start = 100 * (i + 1)
    return f"Count on from {start}: {start}, {start + 1}, {start + 2}, {start + 3},"


def ensure_llama_server() -> Path:
    if not LLAMA_SERVER.exists():
        subprocess.run(["bash", str(REPO / "bench" / "build_llama_server.sh")], check=True)
    return LLAMA_SERVER


@contextlib.contextmanager
def llama_server(
    model: ModelChoice, threads: int, slots: int, log_dir: Path
) -> Iterator[tuple[str, int]]:
    """Run llama-server until the block ends; yields its URL and process id."""
    port = free_port()
    log_path = log_dir / f"llama-server-{port}.log"
    argv = [
        str(ensure_llama_server()),
        "-m",
        str(model.path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "-np",
        str(slots),
        "-c",
        str(NUM_CTX * slots),
        "-b",
        "512",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", proc, lambda: log_path.read_text(errors="replace"))
        yield url, proc.pid
    finally:
        stop_process(proc)


async def burst(send: Send, clients: int, tokens: int) -> dict[str, Any]:
    streams = await asyncio.gather(*(send(i, tokens) for i in range(clients)))
    wall = max(s.end for s in streams) - min(s.sent for s in streams)
    total = sum(s.tokens for s in streams)
    return {
        "aggregate_tps": total / wall,
        "wall_s": wall,
        "tokens": [s.tokens for s in streams],
        "ttft_s": median([s.ttft_s for s in streams]),
        "per_client_decode_tps": median([s.decode_tps for s in streams]),
    }


def corral_sender(client: StreamClient, name: str, threads: int) -> Send:
    async def send(i: int, n: int) -> Stream:
        options = corral_options(threads, n, NUM_CTX)
        body = {"model": name, "prompt": prompt(i), "raw": True, "options": options}
        return await stream_corral(client, "/api/generate", body)

    return send


def llama_server_sender(client: StreamClient) -> Send:
    async def send(i: int, n: int) -> Stream:
        body = {
            "prompt": prompt(i),
            "n_predict": n,
            "temperature": 0,
            "seed": 0,
            "ignore_eos": True,
            "cache_prompt": True,
        }
        return await stream_llama_server(client, body)

    return send


async def alternate(
    senders: dict[str, tuple[Send, int]], clients: int, tokens: int, repeat: int
) -> dict[str, dict[str, Any]]:
    """Warm each server up, check that it rests when idle (both stay up, so one that spun
    would slow the other), then burst them in turn, so load that drifts hits both, each
    QUIET_S after the other's burst."""
    for send, _pid in senders.values():
        await burst(send, clients, 4)  # loads the model, touches every slot
    await settle()
    idle = {key: idle_cpu_percent(pid) for key, (_send, pid) in senders.items()}
    done: dict[str, list[dict[str, Any]]] = {key: [] for key in senders}
    for _ in range(repeat):
        for key, (send, _pid) in senders.items():
            await asyncio.sleep(QUIET_S)
            done[key].append(await burst(send, clients, tokens))
    return {
        key: {
            "aggregate_tps": median([r["aggregate_tps"] for r in runs]),
            "idle_cpu_percent": idle[key],
            "runs": runs,
        }
        for key, runs in done.items()
    }


def measure_point(
    model: ModelChoice, threads: int, clients: int, tokens: int, repeat: int, tmp: Path
) -> dict[str, Any]:
    env = {"CORRAL_NUM_PARALLEL": str(clients)}
    with (
        llama_server(model, threads, clients, tmp) as (ls_url, ls_pid),
        corral_server(tmp / "models", env) as server,
    ):
        name = server.import_model(model)

        async def go() -> dict[str, dict[str, Any]]:
            async with StreamClient(ls_url) as ls, StreamClient(server.url) as co:
                senders = {
                    "llama_server": (llama_server_sender(ls), ls_pid),
                    "corral": (corral_sender(co, name, threads), server.proc.pid),
                }
                return await alternate(senders, clients, tokens, repeat)

        out = asyncio.run(go())
    co_tps, ls_tps = out["corral"]["aggregate_tps"], out["llama_server"]["aggregate_tps"]
    rounds = [[r["aggregate_tps"] for r in out[key]["runs"]] for key in ("corral", "llama_server")]
    return {
        "clients": clients,
        "corral_tps": co_tps,
        "llama_server_tps": ls_tps,
        "ratio": paired_ratio(*rounds),
        "ratio_interval_95": paired_ratio_interval(*rounds),
        "ratio_of_medians": co_tps / ls_tps,
        **out,
    }


def measure(
    model: ModelChoice, threads: int, tokens: int, repeat: int, clients: list[int]
) -> dict[str, Any]:
    before = machine()
    with scratch_dir("bench-concurrency-") as tmp:
        points = [measure_point(model, threads, n, tokens, repeat, tmp) for n in clients]
    judged = [p for p in points if p["clients"] in (4, 8)]
    return {
        "benchmark": "concurrency",
        "model": model.key,
        "threads": threads,
        "tokens": tokens,
        "repeat": repeat,
        "num_ctx_per_slot": NUM_CTX,
        "machine": before,
        "loadavg_1m_after": machine()["loadavg_1m"],
        "points": points,
        "goal": "corral >= llama-server at 4 and 8 clients",
        "met": bool(judged) and all(p["ratio"] >= 1.0 for p in judged),
        "settled": bool(judged) and all(settled(p["ratio_interval_95"], 1.0) for p in judged),
    }


def rows(r: dict[str, Any]) -> list[list[str]]:
    out = []
    for p in r["points"]:
        goal = ("yes" if p["ratio"] >= 1.0 else "NO") if p["clients"] in (4, 8) else ""
        out.append(
            [
                r["model"],
                str(p["clients"]),
                fmt(p["llama_server_tps"]),
                fmt(p["corral_tps"]),
                fmt(p["ratio"], "", 3),
                fmt_interval(p["ratio_interval_95"]),
                goal,
            ]
        )
    return out


HEADERS = [
    "model",
    "clients",
    "llama-server agg tok/s",
    "corral agg tok/s",
    "ratio",
    "95% interval",
    ">= llama-server",
]


def parser() -> argparse.ArgumentParser:
    parser = base_parser(__doc__.splitlines()[0], tokens=128, repeat=15)
    parser.add_argument("--clients", default="1,2,4,8", help="comma-separated client counts")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    return measure(
        resolve_model(args.model),
        args.threads,
        args.tokens,
        args.repeat,
        [int(c) for c in args.clients.split(",")],
    )


if __name__ == "__main__":
    sys.exit(script_main(sys.modules[__name__]))
