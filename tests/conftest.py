"""Shared fixtures: the generated tiny GGUF and a store directory per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few-hundred-KB random-weight llama GGUF with a chat template in its metadata."""
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_embed_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with mean pooling: an embedding model."""
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-embed.gguf", embedding=True)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


SMOLLM2 = Path(__file__).resolve().parents[1] / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The default model, fetched by `make model` (a dependency of `make test`)."""
    if not SMOLLM2.exists():
        pytest.skip("SmolLM2 GGUF not fetched; run `make model`")
    return SMOLLM2
