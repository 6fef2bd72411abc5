"""Shared benchmark plumbing: models, a private corral server, streaming clients, JSON + table.

Every benchmark script runs from the repository root as `.venv/bin/python -m bench.<name>`
(or `.venv/bin/python bench/<name>.py`), prints one JSON object, then a short table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = REPO / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD = REPO / "bench" / ".build"
LLAMA_SERVER = BUILD / "llama-server"


# ---- models and arguments ----


@dataclass(frozen=True)
class ModelChoice:
    """A benchmark model: `key` as given on the command line, corral's name for it, the file."""

    key: str
    name: str
    path: Path


def resolve_model(spec: str) -> ModelChoice:
    """`smollm2`, `big` (written on first use) or a path to a GGUF file."""
    if spec == "smollm2":
        if not SMOLLM2.exists():
            raise SystemExit(f"{SMOLLM2} is missing: run `make model` first")
        return ModelChoice("smollm2", "bench-smollm2:latest", SMOLLM2)
    if spec == "big":
        from bench.make_model import ensure_big_model

        return ModelChoice("big", "bench-big:latest", ensure_big_model())
    path = Path(spec).resolve()
    if not path.is_file():
        raise SystemExit(f"no such model file: {spec}")
    return ModelChoice(str(path), "bench-custom:latest", path)


def base_parser(description: str, *, tokens: int, repeat: int) -> argparse.ArgumentParser:
    """The options every benchmark takes. Also makes SIGTERM unwind like Ctrl-C, so the
    servers a benchmark started are stopped when it is killed (e.g. by `timeout`)."""
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="smollm2", help="smollm2, big, or a GGUF path")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tokens", type=int, default=tokens, help="tokens to generate")
    parser.add_argument("--repeat", type=int, default=repeat, help="runs; medians are reported")
    return parser


def exit_on_sigterm() -> None:
    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def paired_ratio(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """The median of round-by-round ratios `ours[i] / theirs[i]`.

    The sides take turns within each round, so a round's two figures saw the same load;
    this VM's speed drifts 10-20% between rounds, which a ratio of two medians would mix in.
    """
    return median(_ratios(ours, theirs))


def paired_ratio_interval(ours: Sequence[float], theirs: Sequence[float]) -> list[float]:
    """A 95% interval for `paired_ratio`'s median (see `median_interval`)."""
    return median_interval(_ratios(ours, theirs))


def _ratios(ours: Sequence[float], theirs: Sequence[float]) -> list[float]:
    return [a / b for a, b in zip(ours, theirs, strict=True)]


def median_interval(values: Sequence[float], level: float = 0.95) -> list[float]:
    """A distribution-free interval for the median of `values`: [x(k), x(n+1-k)] in sorted
    order, with the largest k that leaves at most (1 - level) / 2 on each side; the number
    of values below the true median is Binomial(n, 1/2). Rounds are assumed independent.
    NaN for both ends when there are too few values (fewer than 6 at 95%)."""
    ordered = sorted(values)
    n, tail, below, k = len(ordered), (1 - level) / 2, 0.0, 0
    while k < n:
        below += math.comb(n, k) / 2**n  # P(exactly k values below the median)
        if below > tail:
            break
        k += 1
    if k == 0:
        return [float("nan"), float("nan")]
    return [ordered[k - 1], ordered[n - k]]


def settled(interval: Sequence[float], threshold: float) -> bool:
    """Whether the whole interval lies on one side of `threshold` (the verdict is not noise)."""
    low, high = interval
    return low >= threshold or high < threshold


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def machine() -> dict[str, Any]:
    """Where the figures come from: CPU model, cores, and the load when asked."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        names = [
            ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")
        ]
        model = names[0] if names else model
    engine = "unknown"
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        engine = importlib.metadata.version("llama-cpp-python")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "llama_cpp_python": engine,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


# ---- a private corral server ----


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_DIGESTS: dict[Path, str] = {}


def file_digest(path: Path) -> str:
    if path not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _DIGESTS[path] = "sha256:" + h.hexdigest()
    return _DIGESTS[path]


@dataclass
class Corral:
    """A running `python -m supervisor` on a free port with its own model store."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def import_model(self, model: ModelChoice) -> str:
        """Upload the GGUF as a blob if the store lacks it, create `model.name`, return it."""
        digest = file_digest(model.path)
        with httpx.Client(base_url=self.url, timeout=600) as client:
            if client.head(f"/api/blobs/{digest}").status_code != 200:
                with model.path.open("rb") as f:
                    client.post(f"/api/blobs/{digest}", content=f).raise_for_status()
            body = {"model": model.name, "files": {model.path.name: digest}, "stream": False}
            client.post("/api/create", json=body).raise_for_status()
        return model.name

    def loaded(self) -> list[str]:
        reply = httpx.get(self.url + "/api/ps", timeout=30).json()
        return [m["name"] for m in reply.get("models", [])]

    def unload(self, name: str, wait_s: float = 60.0) -> None:
        """Ask for `name` to be unloaded (keep_alive 0) and wait until /api/ps drops it."""
        httpx.post(self.url + "/api/generate", json={"model": name, "keep_alive": 0}, timeout=60)
        deadline = time.monotonic() + wait_s
        while name in self.loaded():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} still loaded after {wait_s}s")
            time.sleep(0.05)


@contextlib.contextmanager
def corral_server(
    store: Path, env: Mapping[str, str] | None = None, module: Sequence[str] = ("supervisor",)
) -> Iterator[Corral]:
    """Run corral on a free port over the store `store` until the block ends; always reap.

    `module` is what `python -m` runs: corral's supervisor, or a diagnostic around it."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "OLLAMA_"))}
    full_env |= {"CORRAL_HOST": f"127.0.0.1:{port}", "CORRAL_MODELS": str(store)}
    full_env |= dict(env or {})
    log_path = store.parent / f"corral-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", *module],
            cwd=REPO,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Corral(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_http(server.url + "/", proc, server.log)
        yield server
    finally:
        stop_process(proc)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder holding a model store (`models/`) and server logs."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        (Path(tmp) / "models").mkdir()
        yield Path(tmp)


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Any, startup_s: float = 120.0) -> None:
    """Poll `url` until it answers 200 (an OS fact: something listens and is ready)."""
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not answer within {startup_s}s:\n{log()}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def idle_cpu_percent(pid: int, seconds: float = 1.0) -> float:
    """CPU used by process `pid` and its descendants over `seconds`, in % of one core.

    Taken while nothing is asked of the server: a server that spins when idle would steal
    the cores from whatever runs beside it.
    """
    import psutil

    def total() -> float:
        root = psutil.Process(pid)
        spent = 0.0
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                spent += times.user + times.system
        return spent

    before = total()
    time.sleep(seconds)
    return (total() - before) / seconds * 100


# After a cold load corral starts a new spare worker (1 s later; its imports take about half
# a second of one core). Benchmarks wait this long after their warm-up, so that background
# start never lands inside a measurement.
SPARE_SETTLE_S = 2.5


async def settle() -> None:
    await asyncio.sleep(SPARE_SETTLE_S)


# llama.cpp's threads spin for a while after a decode before they sleep. When two sides
# take turns, each waits this long before it starts, so neither starts into the other's spin
# (a request sent straight after the other side's decode found both cores taken).
QUIET_S = 0.1


def corral_options(threads: int, tokens: int, num_ctx: int, **more: Any) -> dict[str, Any]:
    """Request options every corral benchmark sends: greedy, fixed length, fixed threads."""
    return {
        "temperature": 0,
        "seed": 0,
        "num_predict": tokens,
        "num_thread": threads,
        "num_ctx": num_ctx,
        **more,
    }


# ---- output ----


def fmt(value: float, unit: str = "", digits: int = 1) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.{digits}f}{unit}"


def fmt_interval(interval: Sequence[float], digits: int = 3) -> str:
    low, high = interval
    return "-" if low != low else f"{low:.{digits}f}-{high:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def script_main(script: ModuleType, argv: list[str] | None = None) -> int:
    """A benchmark script's `python -m bench.<name>`: its `parser`, `run`, then `emit`
    with its `HEADERS` and `rows` (the same four names `run_all` uses)."""
    result = script.run(script.parser().parse_args(argv))
    emit(result, script.HEADERS, script.rows(result))
    return 0


def emit(result: Mapping[str, Any], headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print the result as JSON, then the table."""
    print(json.dumps(result, indent=2, default=str))
    print()
    print(table(headers, rows))
    sys.stdout.flush()
