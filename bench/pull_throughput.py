"""Pull throughput from a local registry, next to one plain HTTP GET of the same bytes.

Starts Debian's docker-registry on a loopback port, pushes a model whose weights are a
random blob of ``--size-mb`` megabytes, then measures:

- ``raw GET``: one streamed HTTP GET of the blob, bytes discarded (the ceiling);
- ``raw GET + sha256``: the same, hashing as it reads (the ceiling for a verified copy);
- ``corral pull``: ``registry.pull`` into an empty store, parallel ranged parts, written to
  disk and sha256-verified before the blob is committed (what ``/api/pull`` does).

Each is run ``--repeat`` times; the table shows the best and the median in MB/s (10^6 B/s),
and MB per CPU-second of this process (all its threads), which a busy machine disturbs less.

    .venv/bin/python -m bench.pull_throughput --size-mb 300 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bench.common import emit, fmt, machine
from registry.client import RegistryClient
from registry.digest import sha256_digest
from registry.manifest import LAYER_MODEL, MEDIA_TYPE_CONFIG, Layer, Manifest
from registry.names import ModelName
from registry.pull import BlobDownloads, start_pull
from registry.push import start_push
from registry.store import ModelStore
from registry.transfer import MiB, TransferPolicy
from tests.support.oci_registry import run_registry


def _seed_model(models: Path, name: str, size: int) -> str:
    store = ModelStore(models)
    with store.blob_writer() as writer:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 * MiB))
            writer.write(chunk)
            left -= len(chunk)
        digest, size = writer.commit()
    cdigest, csize = store.write_blob_bytes(b'{"model_format":"gguf"}\n')
    manifest = Manifest(
        Layer(MEDIA_TYPE_CONFIG, cdigest, csize), (Layer(LAYER_MODEL, digest, size),)
    )
    store.write_manifest(ModelName.parse(name), manifest.to_bytes())
    return digest


async def _push(models: Path, name: str) -> None:
    async with RegistryClient() as client:
        async for _ in start_push(ModelStore(models), client, ModelName.parse(name), insecure=True):
            pass


async def _raw_get(url: str, hash_it: bool) -> None:
    digest = hashlib.sha256()
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as reply,
    ):
        reply.raise_for_status()
        async for chunk in reply.aiter_raw(1024 * 1024):
            if hash_it:
                digest.update(chunk)


async def _pull(name: str, target: Path, policy: TransferPolicy) -> None:
    async with RegistryClient() as client:
        lines = start_pull(
            ModelStore(target), client, BlobDownloads(), ModelName.parse(name),
            insecure=True, policy=policy,
        )  # fmt: skip
        async for _ in lines:
            pass


@dataclass
class Runs:
    """Wall and CPU (this process, all threads) seconds of each run."""

    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)


def _measure(
    run: Callable[[], Awaitable[None]], repeat: int, setup: Callable[[], None] = lambda: None
) -> Runs:
    runs = Runs()
    for _ in range(repeat):
        setup()
        wall, cpu = time.perf_counter(), time.process_time()
        asyncio.run(run())  # type: ignore[arg-type]
        runs.wall_s.append(time.perf_counter() - wall)
        runs.cpu_s.append(time.process_time() - cpu)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300, help="blob size in MB (10^6 B)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=TransferPolicy.parts_in_flight)
    parser.add_argument("--part-min-mib", type=int, default=TransferPolicy.part_min_bytes // MiB)
    args = parser.parse_args()
    size = args.size_mb * 1000 * 1000
    policy = TransferPolicy(parts_in_flight=args.in_flight, part_min_bytes=args.part_min_mib * MiB)
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        scratch = Path(tmp)
        with run_registry(scratch / "registry") as registry:
            name = f"{registry.host}/library/bench:latest"
            digest = _seed_model(scratch / "source", name, size)
            asyncio.run(_push(scratch / "source", name))
            url = f"{registry.url}/v2/library/bench/blobs/{digest}"
            target = scratch / "pulled"

            def clear() -> None:
                shutil.rmtree(target, ignore_errors=True)

            rows = [
                ("raw GET", _measure(lambda: _raw_get(url, False), args.repeat)),
                ("raw GET + sha256", _measure(lambda: _raw_get(url, True), args.repeat)),
                ("corral pull", _measure(lambda: _pull(name, target, policy), args.repeat, clear)),
            ]
            pulled = ModelStore(target).blob_path(digest)
            assert sha256_digest(pulled.read_bytes()) == digest
    mb = size / 1e6
    result = {
        "benchmark": "pull_throughput",
        "machine": machine(),
        "blob_mb": mb,
        "repeat": args.repeat,
        "policy": {"in_flight": policy.parts_in_flight, "part_min_bytes": policy.part_min_bytes},
        "runs": {label: asdict(runs) for label, runs in rows},
        "best_mb_s": {label: round(mb / min(runs.wall_s), 1) for label, runs in rows},
    }
    table = [
        [
            label,
            fmt(mb / min(runs.wall_s)),
            fmt(mb / statistics.median(runs.wall_s)),
            fmt(mb / statistics.median(runs.cpu_s)),
            fmt(min(runs.wall_s), "s", 2),
        ]
        for label, runs in rows
    ]
    headers = ["method", "best MB/s", "median MB/s", "MB per CPU-s", "best time"]
    emit(result, headers, table)


if __name__ == "__main__":
    main()
