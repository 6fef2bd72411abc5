"""Run every benchmark on both models, write bench/results.json, print one table per benchmark.

    .venv/bin/python -m bench.run_all [--models smollm2,big] [--threads N] [--repeat N]
        [--only decode_speed,first_token,concurrency,chat_reuse,cold_start]

Each benchmark keeps its own default token count and repeat count unless --repeat is given.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, exit_on_sigterm, machine, table

BENCHMARKS = ("decode_speed", "first_token", "concurrency", "chat_reuse", "cold_start")
RESULTS = REPO / "bench" / "results.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,big", help="comma-separated models")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=None, help="override every repeat count")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated names")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def run_one(name: str, model: str, threads: int, repeat: int | None) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{name}")
    argv = ["--model", model, "--threads", str(threads)]
    argv += ["--repeat", str(repeat)] if repeat is not None else []
    started = time.monotonic()
    print(f"== {name} on {model} ...", file=sys.stderr, flush=True)
    try:
        result: dict[str, Any] = module.run(module.parser().parse_args(argv))
    except Exception as exc:  # one failing benchmark must not lose the others' figures
        print(f"   {name} on {model} failed: {exc!r}", file=sys.stderr, flush=True)
        return {"benchmark": name, "model": model, "error": repr(exc)}
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print(f"   done in {result['elapsed_s']}s", file=sys.stderr, flush=True)
    return result


def summary(results: list[dict[str, Any]]) -> str:
    """One table per benchmark, then the goals."""
    parts = []
    for name in BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        done = [r for r in results if r["benchmark"] == name and "error" not in r]
        failed = [r for r in results if r["benchmark"] == name and "error" in r]
        if not done and not failed:
            continue
        rows = [row for r in done for row in module.rows(r)]
        rows += [
            [r["model"], f"failed: {r['error'][:60]}"] + [""] * (len(module.HEADERS) - 2)
            for r in failed
        ]
        parts.append(f"{name}\n{table(module.HEADERS, rows)}")
    goals = [
        [r["benchmark"], r["model"], r["goal"], "yes" if r["met"] else "NO", _sure(r)]
        for r in results
        if "error" not in r
    ]
    parts.append("goals\n" + table(["benchmark", "model", "goal", "met", "settled"], goals))
    return "\n\n".join(parts)


def _sure(result: dict[str, Any]) -> str:
    """For the goals judged on a median with an interval (benchmarks 1-3): whether this
    run's 95% interval lies wholly on one side of the threshold (it covers the noise
    between rounds, not between runs)."""
    if "settled" not in result:
        return ""
    return "yes" if result["settled"] else "no"


def revision() -> dict[str, Any]:
    """The corral checkout measured: commit, and whether it had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    status = git("status", "--porcelain", "--", "supervisor", "worker", "registry")
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_changes": bool(status)}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    exit_on_sigterm()
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    started = machine()
    results = [
        run_one(name, model, args.threads, args.repeat)
        for model in args.models.split(",")
        for name in names
    ]
    report = {
        "corral": revision(),
        "machine": started,
        "loadavg_1m_end": machine()["loadavg_1m"],
        "threads": args.threads,
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({"written": str(args.out), "machine": started, "corral": report["corral"]}))
    print()
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
