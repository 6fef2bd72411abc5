"""argv -> LoadOptions/FakeSwitches; run server.serve(); map fatal errors to protocol exit codes.

The worker is configured entirely by argv (no environment reads), so a test can build it:

    python -m worker --endpoint ipc://... [--supervisor-pid N] --model PATH
        --backend {llama,fake} --model-name NAME --num-ctx N --num-parallel N
        --num-batch N --num-gpu N --num-thread N [--use-mmap/--no-mmap] [--embedding]
        [--stream-interval-ms N]
    python -m worker --spare --endpoint ipc://... --backend {llama,fake}

A spare worker imports its backend (llama-cpp-python's import alone is 100-180 ms), connects,
and waits for one `Load` message carrying what the model options above carry; from there it
is an ordinary worker. The supervisor keeps one ready so a cold model skips that start-up.
        [--fake-tokens a,b,c | --fake-tokens-file PIECES.json] [--fake-delay-ms N]
        [--fake-crash {load,load-error,stream,release}] [--fake-crash-after N]
        [--fake-hang [{load,stream}]] [--fake-ignore-sigterm]

Logs go to stderr as `event key=value` lines; the supervisor re-logs them with a prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from functools import partial

from worker.backend import FakeSwitches, LoadOptions, load_backend, preload_backend
from worker.protocol import EXIT_OK, EXIT_PROTOCOL_ERROR, Load, Message, Shutdown
from worker.server import parent_gone, serve
from worker.transport import Channel, ChannelError, connect_channel

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
    parser.add_argument(
        "--supervisor-pid", type=int, default=0, help="exit at once if this is not our parent"
    )
    parser.add_argument("--model", help="path of the GGUF file (required unless --spare)")
    parser.add_argument(
        "--spare", action="store_true", help="start ahead of need; the model comes in a Load"
    )
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
    parser.add_argument(
        "--stream-interval-ms", type=int, default=0, help="longest wait to join streamed chunks"
    )
    fake = parser.add_argument_group("fake backend (tests)")
    fake.add_argument("--fake-tokens", help="comma-separated canned output pieces")
    fake.add_argument(
        "--fake-tokens-file", help="a JSON array of canned output pieces (any characters)"
    )
    fake.add_argument("--fake-delay-ms", type=int, default=0)
    fake.add_argument("--fake-crash", choices=("load", "load-error", "stream", "release"))
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
        stream_interval_ms=args.stream_interval_ms,
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.spare and not args.model:
        parser.error("--model is required (unless --spare)")
    # The supervisor may die while we start (imports take a while): compare with the pid it
    # gave us, since by now we may already have been re-parented.
    parent_pid = args.supervisor_pid or os.getppid()
    die_with_parent()
    if os.getppid() != parent_pid:
        return EXIT_PROTOCOL_ERROR  # the supervisor died before the death signal was armed
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s %(message)s"
    )
    fake = fake_switches(args)
    if fake is not None and fake.ignore_sigterm:
        # Here and not in the fake backend: only the main thread may change signal handling.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        return asyncio.run(_serve(args, fake, parent_pid))
    except ChannelError as exc:
        log.error("event=fatal reason=channel error=%r", str(exc))
        return EXIT_PROTOCOL_ERROR


async def _serve(args: argparse.Namespace, fake: FakeSwitches | None, parent_pid: int) -> int:
    channel = connect_channel(args.endpoint)
    try:
        if args.spare:
            preload_backend(args.backend)
            log.info("event=spare_ready backend=%s", args.backend)
            load_msg = await _await_load(channel, parent_pid)
            if load_msg is None:
                return EXIT_OK
            if not isinstance(load_msg, Load):
                log.error("event=protocol_error message=%r", f"spare got {load_msg.TAG}")
                return EXIT_PROTOCOL_ERROR
            options = options_from_load(load_msg)
        else:
            options = load_options(args)
        log.info(
            "event=start backend=%s model=%s num_ctx=%d num_parallel=%d num_gpu=%d spare=%s",
            args.backend, options.model_name, options.num_ctx, options.num_parallel,
            options.num_gpu, args.spare,
        )  # fmt: skip
        load = partial(load_backend, args.backend, options, fake)
        return await serve(channel, options, load, parent_pid)
    finally:
        channel.close(linger_ms=FINAL_LINGER_MS)


async def _await_load(channel: Channel, parent_pid: int) -> Message | None:
    """A spare's first message; None when told to shut down or the supervisor died first."""
    receiving = asyncio.ensure_future(channel.recv())
    parent = asyncio.ensure_future(parent_gone(parent_pid))
    try:
        await asyncio.wait({receiving, parent}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        parent.cancel()
        if not receiving.done():
            receiving.cancel()
    if not receiving.done() or receiving.cancelled():
        log.warning("event=parent_gone phase=spare action=exit")
        return None
    msg = receiving.result()
    return None if isinstance(msg, Shutdown) else msg


def options_from_load(msg: Load) -> LoadOptions:
    """The Load message carries LoadOptions' fields, by the same names."""
    fields = {f.name: getattr(msg, f.name) for f in dataclasses.fields(LoadOptions)}
    return dataclasses.replace(LoadOptions(**fields), model_name=msg.model_name or msg.model_path)


if __name__ == "__main__":
    sys.exit(main())
