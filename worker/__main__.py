"""argv -> LoadOptions/FakeSwitches; run server.serve(); map fatal errors to protocol exit codes.

The worker is configured entirely by argv (no environment reads), so a test can build it:

    python -m worker --endpoint ipc://... --model PATH --backend {llama,fake} --model-name NAME
        --num-ctx N --num-parallel N --num-batch N --num-gpu N --num-thread N
        [--use-mmap/--no-mmap] [--embedding]
        [--fake-tokens a,b,c | --fake-tokens-file PIECES.json] [--fake-delay-ms N]
        [--fake-crash {load,load-error,stream}] [--fake-crash-after N]
        [--fake-hang [{load,stream}]] [--fake-ignore-sigterm]

Logs go to stderr as `event key=value` lines; the supervisor re-logs them with a prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from functools import partial

from worker.backend import Backend, FakeSwitches, LoadOptions, load_backend
from worker.protocol import EXIT_PROTOCOL_ERROR
from worker.server import serve
from worker.transport import ChannelError, connect_channel

log = logging.getLogger("worker")

# Bounded: long enough for the last reply (LoadFailed, a final Done) to reach a live
# supervisor, short enough that a dead one never holds the exit up.
FINAL_LINGER_MS = 2000
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker", description="Serve one model to the corral supervisor."
    )
    parser.add_argument("--endpoint", required=True, help="ipc:// endpoint bound by the supervisor")
    parser.add_argument("--model", required=True, help="path of the GGUF file")
    parser.add_argument("--backend", choices=("llama", "fake"), default="llama")
    parser.add_argument("--model-name", default="", help="display name (default: the path)")
    parser.add_argument("--num-ctx", type=int, default=4096)
    parser.add_argument("--num-parallel", type=int, default=1)
    parser.add_argument("--num-batch", type=int, default=512)
    parser.add_argument("--num-gpu", type=int, default=-1)
    parser.add_argument("--num-thread", type=int, default=0)
    parser.add_argument("--use-mmap", dest="use_mmap", action="store_true", default=True)
    parser.add_argument("--no-mmap", dest="use_mmap", action="store_false")
    parser.add_argument("--embedding", action="store_true")
    fake = parser.add_argument_group("fake backend (tests)")
    fake.add_argument("--fake-tokens", help="comma-separated canned output pieces")
    fake.add_argument(
        "--fake-tokens-file", help="a JSON array of canned output pieces (any characters)"
    )
    fake.add_argument("--fake-delay-ms", type=int, default=0)
    fake.add_argument("--fake-crash", choices=("load", "load-error", "stream"))
    fake.add_argument("--fake-crash-after", type=int, default=2)
    fake.add_argument("--fake-hang", nargs="?", const="load", choices=("load", "stream"))
    fake.add_argument("--fake-ignore-sigterm", action="store_true")
    return parser


def load_options(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(
        model_path=args.model,
        model_name=args.model_name or args.model,
        num_ctx=args.num_ctx,
        num_parallel=args.num_parallel,
        num_batch=args.num_batch,
        num_gpu=args.num_gpu,
        num_thread=args.num_thread,
        use_mmap=args.use_mmap,
        embedding=args.embedding,
    )


def fake_switches(args: argparse.Namespace) -> FakeSwitches | None:
    if args.backend != "fake":
        return None
    tokens = tuple(args.fake_tokens.split(",")) if args.fake_tokens is not None else None
    if args.fake_tokens_file is not None:
        with open(args.fake_tokens_file, encoding="utf-8") as file:
            tokens = tuple(str(piece) for piece in json.load(file))
    return FakeSwitches(
        tokens=tokens,
        delay_ms=args.fake_delay_ms,
        crash=args.fake_crash,
        crash_after=args.fake_crash_after,
        hang=args.fake_hang,
        ignore_sigterm=args.fake_ignore_sigterm,
    )


def die_with_parent() -> None:
    """Ask Linux to SIGKILL us when the supervisor dies, even by SIGKILL (no orphans)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def main(argv: Sequence[str] | None = None) -> int:
    parent_pid = os.getppid()  # first thing: the supervisor may die while we start
    die_with_parent()
    if os.getppid() != parent_pid:
        return EXIT_PROTOCOL_ERROR  # the supervisor died before the death signal was armed
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s %(message)s"
    )
    options = load_options(args)
    fake = fake_switches(args)
    if fake is not None and fake.ignore_sigterm:
        # Here and not in the fake backend: only the main thread may change signal handling.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log.info(
        "event=start backend=%s model=%s num_ctx=%d num_parallel=%d num_gpu=%d",
        args.backend, options.model_name, options.num_ctx, options.num_parallel, options.num_gpu,
    )
    load = partial(load_backend, args.backend, options, fake)
    try:
        return asyncio.run(_serve(args.endpoint, options, load, parent_pid))
    except ChannelError as exc:
        log.error("event=fatal reason=channel error=%r", str(exc))
        return EXIT_PROTOCOL_ERROR


async def _serve(
    endpoint: str, options: LoadOptions, load: Callable[[], Backend], parent_pid: int
) -> int:
    channel = connect_channel(endpoint)
    try:
        return await serve(channel, options, load, parent_pid)
    finally:
        channel.close(linger_ms=FINAL_LINGER_MS)


if __name__ == "__main__":
    sys.exit(main())
