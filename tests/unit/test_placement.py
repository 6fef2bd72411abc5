"""supervisor/placement.py: load options and the parallel-slot choice of a request's model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from registry.manifest import Layer, Manifest
from registry.names import ModelName
from registry.store import StoredModel
from supervisor.catalog import LocalModel
from supervisor.config import Settings
from supervisor.placement import model_spec

GIB = 1 << 30


def _local(tmp_path: Path, params: dict[str, Any] | None = None) -> LocalModel:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"\0" * 4096)
    name = ModelName("registry.ollama.ai", "library", "tiny", "latest")
    config = Layer("application/vnd.docker.container.image.v1+json", "sha256:" + "0" * 64, 2)
    stored = StoredModel(name, Manifest(config=config, layers=()), b"{}", "ab" * 32, 0.0)
    return LocalModel(name, stored, weights, None, params=params or {})


@pytest.mark.parametrize(("free_bytes", "slots"), [(64 * GIB, 4), (5000, 1)])
def test_placement_auto_parallel_follows_free_memory(
    tmp_path: Path, free_bytes: int, slots: int
) -> None:
    spec = model_spec(_local(tmp_path), {}, Settings(num_parallel=0), lambda: free_bytes)
    assert spec.num_parallel == slots
    assert dict(spec.runner_options)["num_parallel"] == 0


def test_placement_auto_parallel_keeps_the_worker_key_as_memory_drops(tmp_path: Path) -> None:
    """Loading the model lowers free memory; the next request must still match its worker."""
    local = _local(tmp_path)
    before = model_spec(local, {}, Settings(num_parallel=0), lambda: 64 * GIB)
    after = model_spec(local, {}, Settings(num_parallel=0), lambda: 5000)
    assert before.num_parallel != after.num_parallel
    assert before.key == after.key


@pytest.mark.parametrize(
    ("setting", "params", "options", "slots"),
    [
        (3, {}, {}, 3),  # CORRAL_NUM_PARALLEL
        (0, {"num_parallel": 2}, {}, 2),  # Modelfile PARAMETER num_parallel
        (4, {"num_parallel": 2}, {}, 2),  # the Modelfile wins over the setting
        (4, {"num_parallel": 2}, {"num_parallel": 1}, 1),  # and a request's option over both
    ],
)
def test_placement_explicit_parallel(
    tmp_path: Path, setting: int, params: dict[str, Any], options: dict[str, Any], slots: int
) -> None:
    spec = model_spec(_local(tmp_path, params), options, Settings(num_parallel=setting), lambda: 0)
    assert spec.num_parallel == slots
    assert dict(spec.runner_options)["num_parallel"] == slots


def test_placement_unused_runner_options_never_force_a_reload(tmp_path: Path) -> None:
    # Ollama accepts main_gpu and draft_num_predict; corral's workers use neither, so a
    # request that sets them must reuse the loaded worker (the same spec).
    local = _local(tmp_path, {"draft_num_predict": 4})
    plain = model_spec(local, {}, Settings(num_parallel=1), lambda: 0)
    unused = {"draft_num_predict": 8, "main_gpu": 1}
    other = model_spec(local, unused, Settings(num_parallel=1), lambda: 0)
    assert plain == other
    assert "draft_num_predict" not in dict(plain.runner_options)
