"""Pure: a request's model and options -> the ModelSpec the scheduler places."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from registry.options import RUNNER_OPTIONS
from supervisor.catalog import LocalModel
from supervisor.config import Settings
from supervisor.memory import ModelShape, choose_num_parallel, estimate
from supervisor.scheduler import ModelSpec

MIN_CTX = 4


def runner_options(
    local: LocalModel, options: Mapping[str, Any], settings: Settings
) -> dict[str, Any]:
    """Load-time options: defaults < Modelfile PARAMETERs < request options."""
    merged: dict[str, Any] = {
        "num_ctx": settings.context_length,
        "num_batch": 512,
        "num_gpu": -1,
        "num_thread": 0,
        "use_mmap": True,
        "num_parallel": settings.num_parallel,
    }
    for source in (local.params, options):
        merged.update({k: v for k, v in source.items() if k in RUNNER_OPTIONS and v is not None})
    train = local.gguf.context_length if local.gguf else None
    ctx = max(int(merged["num_ctx"]), MIN_CTX)
    merged["num_ctx"] = min(ctx, train) if train else ctx  # Ollama clamps to n_ctx_train
    if local.gguf is not None and local.gguf.is_embedding:
        merged["num_parallel"] = 1  # Ollama forces 1 slot for embedding models
    # Accepted as Ollama accepts them, but nothing in a worker uses them (one device, no
    # draft model), so they must not make a reload either.
    merged.pop("main_gpu", None)
    merged.pop("draft_num_predict", None)
    return merged


def shape_of(local: LocalModel) -> ModelShape:
    info = local.gguf
    size = local.model_path.stat().st_size if local.model_path else 0
    if info is None:
        return ModelShape(size, 0, 0, 1, 1, 0, 0)
    n_head = info.head_count or 1
    return ModelShape(
        file_bytes=size,
        n_layer=info.block_count or 0,
        n_embd=info.embedding_length or 0,
        n_head=n_head,
        n_head_kv=info.head_count_kv or n_head,
        n_ctx_train=info.context_length or 0,
        vocab_size=info.vocab_size or 0,
    )


def model_spec(
    local: LocalModel,
    options: Mapping[str, Any],
    settings: Settings,
    free_memory_bytes: Callable[[], int],
) -> ModelSpec:
    """The scheduler's view of this request's model; num_parallel 0 is chosen from free memory.

    The choice stays out of `runner_options` (which keep the asked 0): those make the key a
    loaded worker is matched by, and free memory drops once the model itself is loaded, so
    a choice in the key would force a reload at the next request.
    """
    runner = runner_options(local, options, settings)
    shape = shape_of(local)
    ctx = int(runner["num_ctx"])
    parallel = int(runner["num_parallel"])
    if parallel <= 0:
        # The estimate counts the KV cache of every slot, so slots are added only if they fit.
        parallel = choose_num_parallel(
            lambda n: estimate(shape, ctx, n).total_bytes, free_memory_bytes()
        )
    return ModelSpec(
        name=local.display,
        path=str(local.model_path),
        digest=local.stored.digest_hex,
        runner_options=tuple(sorted(runner.items())),
        estimate_bytes=estimate(shape, ctx, parallel).total_bytes,
        num_parallel=parallel,
        is_embedding=bool(local.gguf and local.gguf.is_embedding),
    )
