"""corral with its streamed chunks dropped at one point: a diagnostic for `cost_split`.

    python -m bench.chunk_drop supervisor   # the supervisor drops Chunk replies on arrival
    python -m bench.chunk_drop worker       # every worker drops them before they are sent

Everything else is corral as shipped: the worker still decodes, samples and detokenizes
every token, and the final reply (with `eval_count` and `eval_duration`) still arrives,
so the server-reported decode speed stays comparable. With "supervisor" the per-token
frames still cross zmq and are decoded and routed, but never reach the HTTP response;
with "worker" no per-token frame leaves the worker at all. The patches replace one private
method each (`WorkerHandle._route`, `WorkerServer._emit`): this is a measuring tool, and
it breaks loudly (AttributeError) if those names change.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker import protocol as p

WHERE = ("supervisor", "worker")


def _without_chunks(method: Any) -> Any:
    def patched(self: Any, replies: list[Any]) -> None:
        kept = [r for r in replies if not isinstance(r, p.Chunk)]
        if kept:
            method(self, kept)

    return patched


def run_supervisor(drop_in_worker: bool) -> int:
    from supervisor import __main__ as supervisor_main
    from supervisor import workers

    if drop_in_worker:
        argv = workers.WorkerCommand.argv

        def patched_argv(self: workers.WorkerCommand, endpoint: str) -> list[str]:
            args = argv(self, endpoint)
            at = args.index("worker")  # [python, -m, worker, ...] -> this module's worker entry
            return [*args[:at], "bench.chunk_drop", "worker-entry", *args[at + 1 :]]

        workers.WorkerCommand.argv = patched_argv  # type: ignore[method-assign]
    else:
        route = workers.WorkerHandle._route

        def patched_route(self: workers.WorkerHandle, msg: p.Message) -> None:
            if not isinstance(msg, p.Chunk):
                route(self, msg)

        workers.WorkerHandle._route = patched_route  # type: ignore[method-assign]
    return supervisor_main.main()


def run_worker(argv: list[str]) -> int:
    from worker import __main__ as worker_main
    from worker import server

    server.WorkerServer._emit = _without_chunks(server.WorkerServer._emit)  # type: ignore[method-assign]
    return worker_main.main(argv)


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker-entry"]:
        return run_worker(argv[1:])
    if len(argv) != 1 or argv[0] not in WHERE:
        raise SystemExit(f"usage: python -m bench.chunk_drop {{{','.join(WHERE)}}}")
    return run_supervisor(drop_in_worker=argv[0] == "worker")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
