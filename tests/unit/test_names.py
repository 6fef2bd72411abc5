"""Model-name parsing, validation and display, as a table after Ollama's name_test.go."""

from __future__ import annotations

import pytest

from registry.errors import InvalidName
from registry.names import MISSING_PART, ModelName, is_valid_part

P80 = "8" * 80
P350 = "3" * 350


@pytest.mark.parametrize(
    ("text", "parts", "scheme"),
    [
        (
            "registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
            ("registry.ollama.ai", "library", "dolphin-mistral", "7b-v2.6-dpo-laser-q6_K"),
            "https",
        ),
        ("host/namespace/model:tag", ("host", "namespace", "model", "tag"), "https"),
        ("host:port/namespace/model:tag", ("host:port", "namespace", "model", "tag"), "https"),
        ("host/namespace/model", ("host", "namespace", "model", "latest"), "https"),
        ("host:port/namespace/model", ("host:port", "namespace", "model", "latest"), "https"),
        ("namespace/model", ("registry.ollama.ai", "namespace", "model", "latest"), "https"),
        ("model", ("registry.ollama.ai", "library", "model", "latest"), "https"),
        ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest"), "https"),
        ("user/m:7b", ("registry.ollama.ai", "user", "m", "7b"), "https"),
        ("localhost:5000/ns/m", ("localhost:5000", "ns", "m", "latest"), "https"),
        (
            "127.0.0.1:5000/library/tiny:latest",
            ("127.0.0.1:5000", "library", "tiny", "latest"),
            "https",
        ),
        ("http://host/ns/m:t", ("host", "ns", "m", "t"), "http"),
        ("HTTP://host/ns/m:t", ("host", "ns", "m", "t"), "http"),
        ("https://host/ns/m", ("host", "ns", "m", "latest"), "https"),
        ("h/nn/mm:t", ("h", "nn", "mm", "t"), "https"),
        ("_why/_the/_lucky:_stiff", ("_why", "_the", "_lucky", "_stiff"), "https"),
        ("host:https/namespace/model:tag", ("host:https", "namespace", "model", "tag"), "https"),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            ("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"),
            "https",
        ),
        ("  llama3.2:1b \n", ("registry.ollama.ai", "library", "llama3.2", "1b"), "https"),
        (f"{P80}/{P80}/{P80}:{P80}", (P80, P80, P80, P80), "https"),
        (f"{P350}/{P80}/{P80}:{P80}", (P350, P80, P80, P80), "https"),
        ("a./b/c.d:e.f", ("a.", "b", "c.d", "e.f"), "https"),
    ],
)
def test_names_parse_fills_defaults(
    text: str, parts: tuple[str, str, str, str], scheme: str
) -> None:
    name = ModelName.parse(text)
    assert name.parts() == parts
    assert name.scheme == scheme


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        # empty parts, promised by a separator
        "/n/m:t",
        "h//m:t",
        "h/n/:t",
        "h/n/m:",
        "h/n/:",
        "mm:",
        ":t",
        "/nn/mm",
        "//",
        "//mm",
        "hh//",
        "//mm:@",
        "n/m:",
        # bad characters or first characters
        "^",
        "00@",
        "@",
        "m@d",
        "@t",
        "h/n/m:t@d",
        "model@sha256:" + "1" * 64,
        "-hh/nn/mm:tt",
        "hh/-nn/mm:tt",
        "hh/nn/-mm:tt",
        "hh/nn/mm:-tt",
        "host/name:space/model:tag",
        "localhost:5000/model",
        "a b",
        "m!",
        "mödel",
        "m\x00",
        "m\n:t",
        "(m)",
        "ns/m~1",
        # hostile paths
        "../x",
        "..",
        ".",
        "a/../b",
        "../../etc/passwd",
        "h/../m:t",
        "h/n/..:t",
        "h/n/m:..",
        "/abs/path",
        "/etc/passwd",
        "x\\y",
        "h/n\\..\\x/m",
        "m:t\\..",
        ".hidden",
        "ns/.hidden",
        "h/n/m:.t",
        ".h/n/m:t",
        "name.space/model",
        "h/n.s/m:t",
        "h/n/m/extra:t",
        "a/b/c/d",
        "file:///etc/passwd",
        "https://ns/m",
        "1ab://h/n/m",
        "scheme://host:port/namespace/model:tag",
        "ftp://h/n/m",
        # over-long parts
        "m" * 81,
        f"n/{'m' * 81}",
        f"{'n' * 81}/m",
        f"m:{'t' * 81}",
        f"{'h' * 351}/n/m:t",
        f"x{P350}/{P80}/{P80}:{P80}",
        f"{P350}/x{P80}/{P80}:{P80}",
        f"{P350}/{P80}/x{P80}:{P80}",
        f"{P350}/{P80}/{P80}:x{P80}",
        MISSING_PART,
        f"h/{MISSING_PART}/m:t",
    ],
)
def test_names_parse_rejects_invalid(text: str) -> None:
    with pytest.raises(InvalidName):
        ModelName.parse(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("h/n/m:t", ("h", "n", "m", "t", "")),
        ("scheme://h/n/m:t", ("h", "n", "m", "t", "scheme")),
        ("n/m", ("", "n", "m", "", "")),
        ("m", ("", "", "m", "", "")),
        ("m:", ("", "", "m", MISSING_PART, "")),
        ("/m", ("", MISSING_PART, "m", "", "")),
        ("h//m", ("h", MISSING_PART, "m", "", "")),
        ("host:5000/m", ("", "host:5000", "m", "", "")),
        ("", ("", "", "", "", "")),
    ],
)
def test_names_parse_bare_keeps_missing_parts(text: str, expected: tuple[str, ...]) -> None:
    name = ModelName.parse_bare(text)
    assert (name.host, name.namespace, name.model, name.tag, name.scheme) == expected


@pytest.mark.parametrize(
    ("kind", "part", "valid"),
    [
        ("host", "", False),
        ("host", "a", True),
        ("host", "a.", True),
        ("host", "a.b", True),
        ("host", "a:123", True),
        ("host", "a:123/aa/bb", False),
        ("host", "h" * 350, True),
        ("host", "h" * 351, False),
        ("namespace", "bb", True),
        ("namespace", "a.", False),
        ("namespace", "a:b", False),
        ("namespace", "n" * 80, True),
        ("namespace", "n" * 81, False),
        ("model", "-h", False),
        ("model", "_h", True),
        ("model", "m.1-2_3", True),
        ("model", "m:1", False),
        ("model", "..", False),
        ("tag", ".", False),
        ("tag", "t" * 80, True),
        ("tag", "t" * 81, False),
        ("tag", "t\n", False),
    ],
)
def test_names_is_valid_part_table(kind: str, part: str, valid: bool) -> None:
    assert is_valid_part(kind, part) is valid


@pytest.mark.parametrize(
    ("text", "shortest"),
    [
        ("registry.ollama.ai/library/model:latest", "model:latest"),
        ("registry.ollama.ai/library/model:tag", "model:tag"),
        ("registry.ollama.ai/namespace/model:tag", "namespace/model:tag"),
        ("host/namespace/model:tag", "host/namespace/model:tag"),
        ("host/library/model:tag", "host/library/model:tag"),
        ("REGISTRY.ollama.AI/Library/Model:Tag", "Model:Tag"),
        ("llama3.2", "llama3.2:latest"),
        ("user/m", "user/m:latest"),
        ("localhost:5000/library/tiny", "localhost:5000/library/tiny:latest"),
    ],
)
def test_names_display_shortest(text: str, shortest: str) -> None:
    assert ModelName.parse(text).display_shortest() == shortest


@pytest.mark.parametrize(
    ("text", "full"),
    [
        ("xx", "registry.ollama.ai/library/xx:latest"),
        ("http://h:1/n/m:t", "h:1/n/m:t"),
        ("Ns/Model:TAG", "registry.ollama.ai/Ns/Model:TAG"),
    ],
)
def test_names_str_is_full_name_without_scheme(text: str, full: str) -> None:
    assert str(ModelName.parse(text)) == full


@pytest.mark.parametrize(
    "text", ["h/n/m:t", "_why/_the/_lucky:_stiff", "host:https/namespace/model:tag"]
)
def test_names_str_round_trips_full_names(text: str) -> None:
    assert str(ModelName.parse_bare(text)) == text
    assert str(ModelName.parse(text)) == text


@pytest.mark.parametrize(
    ("left", "right", "same"),
    [
        ("llama3.2", "LLaMA3.2:Latest", True),
        ("Registry.Ollama.AI/Library/Mistral", "mistral", True),
        ("mistral", "mistral:7b", False),
        ("user/m", "m", False),
        ("http://h/n/m", "https://h/n/m", True),
    ],
)
def test_names_match_ignores_case(left: str, right: str, same: bool) -> None:
    a, b = ModelName.parse(left), ModelName.parse(right)
    assert a.matches(b) is same
    assert (a.key() == b.key()) is same


def test_names_key_is_lower_case_and_keeps_spelling() -> None:
    name = ModelName.parse("HF.co/Bartowski/Llama-GGUF:Q4_K_M")
    assert name.key() == ("hf.co", "bartowski", "llama-gguf", "q4_k_m")
    assert name.parts() == ("HF.co", "Bartowski", "Llama-GGUF", "Q4_K_M")


@pytest.mark.parametrize(
    "parts",
    [
        ("..", "n", "m", "t"),
        ("h", "..", "m", "t"),
        ("h", "n", "..", "t"),
        ("h", "n", "m", ".."),
        ("h", "n/x", "m", "t"),
        ("h", "n", "m\\x", "t"),
        ("", "n", "m", "t"),
        ("h", "n", "m", ""),
        ("h", ".n", "m", "t"),
        ("/", "n", "m", "t"),
    ],
)
def test_names_invalid_parts_never_become_a_path(parts: tuple[str, str, str, str]) -> None:
    name = ModelName(*parts)
    assert not name.is_valid()
    with pytest.raises(InvalidName):
        name.parts()
    with pytest.raises(InvalidName):
        ModelName.from_parts(*parts)


def test_names_from_parts_accepts_a_stored_path() -> None:
    name = ModelName.from_parts("127.0.0.1:5000", "library", "tiny", "latest")
    assert str(name) == "127.0.0.1:5000/library/tiny:latest"
    assert name.scheme == "https"


def test_names_are_frozen_and_hashable() -> None:
    name = ModelName.parse("m")
    assert {name: 1}[ModelName.parse("m")] == 1
    with pytest.raises(AttributeError):
        name.model = "x"  # type: ignore[misc]
