"""The dependency rules of DESIGN.md, checked: layers import only downwards."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_layering_supervisor_never_imports_llama_cpp() -> None:
    loaded = _imported_after("supervisor.app")
    assert "supervisor.app" in loaded
    assert not any(m == "llama_cpp" or m.startswith("llama_cpp.") for m in loaded)


def test_layering_registry_imports_nothing_of_ours() -> None:
    loaded = _imported_after("registry.store, registry.gguf, registry.modelfile")
    assert not {m.split(".")[0] for m in loaded} & {"supervisor", "worker", "cli"}


def test_layering_cli_never_imports_supervisor() -> None:
    loaded = _imported_after("cli.__main__")
    assert not any(m.split(".")[0] == "supervisor" for m in loaded)


def _sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_layering_only_config_reads_the_environment() -> None:
    pattern = re.compile(r"os\.environ|os\.getenv|environ\.get")
    offenders = [
        str(p.relative_to(REPO))
        for pkg in ("supervisor", "worker", "registry")
        for p in _sources(pkg)
        if pattern.search(p.read_text())
        and p.name != "config.py"
        and p.relative_to(REPO).as_posix() != "supervisor/workers.py"  # GPU passthrough only
    ]
    assert offenders == []
