"""GGUF reading: the generated tiny model, hand-built valid files, and hostile files."""

from __future__ import annotations

import contextlib
import json
import random
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest

from registry.errors import GGUFError
from registry.gguf import GGUFInfo, TensorInfo, format_parameter_count, read_gguf
from tests.support.tiny_gguf import DEFAULT_CHAT_TEMPLATE, VOCAB_SIZE, write_tiny_gguf

# GGUF value type ids
U8, U32, I32, F32, BOOL, STR, ARR, U64, F64 = 0, 4, 5, 6, 7, 8, 9, 10, 12


# --- building GGUF bytes by hand -------------------------------------------------------


def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def array(etype: int, count: int, items: bytes = b"") -> bytes:
    return struct.pack("<IQ", etype, count) + items


def tensor(name: str, dims: tuple[int, ...], ggml_type: int = 0, offset: int = 0) -> bytes:
    head = gstr(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
    return head + struct.pack("<IQ", ggml_type, offset)


def gguf(
    kvs: list[bytes],
    tensors: Sequence[bytes] = (),
    data: bytes = b"",
    *,
    version: int = 3,
    n_kv: int | None = None,
    n_tensors: int | None = None,
) -> bytes:
    counts = (len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv)
    head = b"GGUF" + struct.pack("<IQQ", version, *counts) + b"".join(kvs) + b"".join(tensors)
    if data:
        head += b"\0" * (-len(head) % 32)
    return head + data


VALID_KVS = [
    kv("general.architecture", STR, gstr("llama")),
    kv("general.name", STR, gstr("hand")),
    kv("llama.context_length", U32, struct.pack("<I", 8)),
    kv("llama.rope.freq_base", F32, struct.pack("<f", 10000.0)),
    kv("llama.attention.layer_norm_rms_epsilon", F32, struct.pack("<f", 1e-5)),
    kv("tokenizer.ggml.add_bos_token", BOOL, b"\x01"),
    kv("small", ARR, array(I32, 3, struct.pack("<3i", 1, -2, 3))),
    kv("words", ARR, array(STR, 7, b"".join(gstr(w) for w in "abcdefg"))),
    kv("nested", ARR, array(ARR, 2, array(U8, 1, b"\x07") + array(U8, 2, b"\x08\x09"))),
]
VALID_TENSORS = [tensor("w", (4, 2), 0, 0), tensor("h", (16,), 1, 32)]
VALID = gguf(VALID_KVS, VALID_TENSORS, bytes(32) + bytes(32))  # data ends exactly at EOF


def write(tmp_path: Path, content: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --- the generated tiny model ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def tiny_path(tiny_dir: Path) -> Path:
    return write_tiny_gguf(tiny_dir / "tiny.gguf")


@pytest.fixture(scope="module")
def tiny_embed_path(tiny_dir: Path) -> Path:
    return write_tiny_gguf(tiny_dir / "tiny-embed.gguf", embedding=True)


@pytest.fixture(scope="module")
def tiny(tiny_path: Path) -> GGUFInfo:
    return read_gguf(tiny_path)


def test_gguf_tiny_model_header(tiny: GGUFInfo) -> None:
    assert tiny.version == 3
    assert tiny.architecture == "llama"
    assert tiny.file_type == "F32"
    assert (tiny.context_length, tiny.embedding_length, tiny.block_count) == (256, 64, 2)
    assert (tiny.head_count, tiny.head_count_kv) == (4, 4)
    assert tiny.chat_template == DEFAULT_CHAT_TEMPLATE
    assert tiny.tokenizer_model == "llama"
    assert (tiny.bos_token_id, tiny.eos_token_id) == (1, 2)
    assert tiny.vocab_size == VOCAB_SIZE == 285
    assert tiny.general_type is None
    assert not tiny.has_pooling and not tiny.is_embedding and not tiny.has_vision


def test_gguf_tiny_model_tensors(tiny: GGUFInfo) -> None:
    assert len(tiny.tensors) == 3 + 2 * 9
    by_name = {t.name: t for t in tiny.tensors}
    assert by_name["token_embd.weight"].shape == (64, VOCAB_SIZE)
    assert by_name["blk.1.ffn_down.weight"].shape == (128, 64)
    assert {t.type_name for t in tiny.tensors} == {"F32"}
    assert tiny.parameter_count == sum(t.n_elements for t in tiny.tensors) == 118_720


def test_gguf_tiny_model_file_is_small_and_deterministic(tiny_path: Path, tmp_path: Path) -> None:
    assert 300_000 < tiny_path.stat().st_size < 600_000
    again = write_tiny_gguf(tmp_path / "again.gguf")
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    assert again.read_bytes() == tiny_path.read_bytes()
    assert other.read_bytes() != tiny_path.read_bytes()


def test_gguf_tiny_model_options(tmp_path: Path, tiny_embed_path: Path) -> None:
    embed = read_gguf(tiny_embed_path)
    assert embed.has_pooling and embed.is_embedding
    assert embed.model_info()["llama.pooling_type"] == 1
    bare = read_gguf(write_tiny_gguf(tmp_path / "bare.gguf", chat_template=None, n_ctx=128))
    assert bare.chat_template is None
    assert bare.context_length == 128


def test_gguf_model_info_hides_name_and_template_and_elides_long_arrays(tiny: GGUFInfo) -> None:
    info = tiny.model_info()
    assert "general.name" not in info and "tokenizer.chat_template" not in info
    assert list(info) == sorted(info)
    assert info["general.architecture"] == "llama"
    assert info["llama.attention.layer_norm_rms_epsilon"] == 1e-5
    assert info["tokenizer.ggml.tokens"] == []
    assert info["tokenizer.ggml.scores"] == []
    # Arrays not kept at read time stay elided even when verbose.
    assert tiny.model_info(verbose=True)["tokenizer.ggml.tokens"] == []
    json.dumps(info, allow_nan=False)


def test_gguf_model_info_verbose_shows_kept_arrays(tiny_path: Path) -> None:
    full = read_gguf(tiny_path, keep_arrays=True)
    tokens = full.model_info(verbose=True)["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and len(tokens) == VOCAB_SIZE
    assert tokens[:4] == ["<unk>", "<s>", "</s>", "<0x00>"]
    assert full.model_info()["tokenizer.ggml.tokens"] == []
    json.dumps(full.model_info(verbose=True), allow_nan=False)


# --- hand-built valid files ------------------------------------------------------------


def test_gguf_reads_hand_built_file(tmp_path: Path) -> None:
    info = read_gguf(write(tmp_path, VALID))
    assert info.metadata["llama.context_length"] == 8
    assert info.metadata["llama.rope.freq_base"] == 10000.0
    assert info.metadata["tokenizer.ggml.add_bos_token"] is True
    assert info.metadata["small"] == [1, -2, 3]
    assert info.metadata["nested"] == [[7], [8, 9]]
    assert "words" not in info.metadata
    assert info.array_lengths == {"small": 3, "words": 7, "nested": 2}
    assert info.array_types == {"small": "int32", "words": "string", "nested": "array"}
    assert info.tensors == (TensorInfo("w", 0, (4, 2)), TensorInfo("h", 1, (16,)))
    assert info.parameter_count == 24
    assert info.file_type == "F16"  # no general.file_type: the type holding most weights
    assert info.model_info()["words"] == []


@pytest.mark.parametrize(
    ("keep_arrays", "keep_array_max", "kept"),
    [(False, 5, False), (False, 7, True), (True, 0, True), (False, -1, False)],
)
def test_gguf_keeps_arrays_by_length(
    tmp_path: Path, keep_arrays: bool, keep_array_max: int, kept: bool
) -> None:
    info = read_gguf(write(tmp_path, VALID), keep_arrays=keep_arrays, keep_array_max=keep_array_max)
    assert ("words" in info.metadata) is kept
    if kept:
        assert info.metadata["words"] == list("abcdefg")
        assert info.model_info(verbose=True)["words"] == list("abcdefg")


def test_gguf_declared_counts_win(tmp_path: Path) -> None:
    kvs = [
        kv("general.architecture", STR, gstr("qwen2")),
        kv("general.parameter_count", U64, struct.pack("<Q", 7_615_616_512)),
        kv("general.file_type", U32, struct.pack("<I", 15)),
        kv("general.type", STR, gstr("model")),
        kv("qwen2.vision.block_count", U32, struct.pack("<I", 2)),
    ]
    info = read_gguf(write(tmp_path, gguf(kvs)))
    assert info.parameter_count == 7_615_616_512
    assert info.file_type == "Q4_K_M"
    assert info.general_type == "model"
    assert info.has_vision
    assert info.context_length is None and info.vocab_size is None


def test_gguf_model_info_is_json_safe(tmp_path: Path) -> None:
    kvs = [
        kv("a.nan", F32, struct.pack("<f", float("nan"))),
        kv("a.inf", F64, struct.pack("<d", float("inf"))),
        kv("a.bytes", STR, gstr(b"\xff\xfeok")),
        kv("a.floats", ARR, array(F32, 2, struct.pack("<2f", float("-inf"), 0.5))),
    ]
    info = read_gguf(write(tmp_path, gguf(kvs))).model_info()
    assert info["a.nan"] is None and info["a.inf"] is None
    assert info["a.floats"] == [None, 0.5]
    assert isinstance(info["a.bytes"], str) and info["a.bytes"].endswith("ok")
    json.dumps(info, allow_nan=False)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1_000, "1K"),
        (118_720, "119K"),
        (1_000_000, "1M"),
        (1_500_000, "1.50M"),
        (134_515_008, "134.52M"),
        (999_999_999, "1000.00M"),
        (7_000_000_000, "7B"),
        (7_615_616_512, "7.6B"),
        (8_030_261_248, "8.0B"),
        (70_553_706_496, "70.6B"),
    ],
)
def test_gguf_format_parameter_count(n: int, text: str) -> None:
    assert format_parameter_count(n) == text


# --- hostile files ---------------------------------------------------------------------

ONE_KV = [kv("general.architecture", STR, gstr("llama"))]
HOSTILE = {
    "empty": (b"", "not a GGUF file"),
    "wrong magic": (b"GGML" + VALID[4:], "not a GGUF file"),
    "version 1": (gguf(ONE_KV, version=1), "unsupported GGUF version 1"),
    "version 4": (gguf(ONE_KV, version=4), "unsupported GGUF version 4"),
    "big-endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
    "n_kv 2**63": (gguf(ONE_KV, n_kv=2**63), "n_kv 9223372036854775808 exceeds"),
    "n_tensors 2**64-1": (gguf(ONE_KV, n_tensors=2**64 - 1), "n_tensors .* exceeds"),
    "key length 2**60": (
        gguf([struct.pack("<Q", 2**60) + bytes(16)]),
        "length 1152921504606846976",
    ),
    "string beyond file": (gguf([kv("k", STR, struct.pack("<Q", 1000) + b"abc")]), "exceeds"),
    "array length 2**40": (gguf([kv("k", ARR, array(U8, 2**40, b"\0"))]), "length 1099511627776"),
    "string array 2**40": (gguf([kv("k", ARR, array(STR, 2**40))]), "length 1099511627776"),
    "unknown value type": (gguf([kv("k", 13, b"\0" * 8)]), "unknown value type 13"),
    "unknown element type": (gguf([kv("k", ARR, array(200, 1, b"\0"))]), "unknown value type 200"),
    "1000 dims": (gguf(ONE_KV, [tensor("t", (1,) * 1000)]), "1000 dimensions"),
    "deep nesting": (gguf([kv("k", ARR, array(ARR, 1) * 100 + array(U8, 0))]), "nests arrays"),
    "duplicate key": (gguf(ONE_KV * 2), "duplicate key 'general.architecture'"),
    "duplicate tensor": (gguf([], [tensor("t", (1,))] * 2, bytes(32)), "duplicate tensor"),
    "unknown ggml type": (gguf([], [tensor("t", (1,), 4)], bytes(32)), "unknown ggml type 4"),
    "shape overflow": (gguf([], [tensor("t", (2**62, 2**62))], bytes(32)), "overflows"),
    "partial block": (gguf([], [tensor("t", (33,), 2)], bytes(64)), "block size 32"),
    "data beyond file": (gguf([], [tensor("t", (64,))], bytes(32)), "data ends at byte"),
    "unaligned offset": (gguf([], [tensor("t", (1,), 0, 3)], bytes(64)), "unaligned"),
    "bad alignment": (
        gguf([kv("general.alignment", U32, struct.pack("<I", 3))], [tensor("t", (1,))], bytes(32)),
        "not a power of two",
    ),
}


@pytest.mark.parametrize(("content", "message"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_gguf_rejects_hostile_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = write(tmp_path, content)
    tracemalloc.start()
    try:
        with pytest.raises(GGUFError, match=message):
            read_gguf(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_gguf_rejects_every_truncation(tmp_path: Path) -> None:
    read_gguf(write(tmp_path, VALID))
    for cut in range(len(VALID)):
        path = write(tmp_path, VALID[:cut])
        with pytest.raises(GGUFError):
            read_gguf(path)


def test_gguf_rejects_truncated_tiny_model(tmp_path: Path, tiny_path: Path) -> None:
    content = tiny_path.read_bytes()
    for cut in (*range(0, 12_000, 997), len(content) // 2, len(content) - 1):
        with pytest.raises(GGUFError):
            read_gguf(write(tmp_path, content[:cut]))


def test_gguf_mutated_files_parse_or_raise_gguf_error(tmp_path: Path) -> None:
    rng = random.Random(7)
    for _ in range(300):
        content = bytearray(VALID)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(content))
            content[at : at + rng.choice((1, 8))] = rng.randbytes(8)
        with contextlib.suppress(GGUFError):  # any other exception fails the test
            read_gguf(write(tmp_path, bytes(content)))


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_gguf_unreadable_path_is_gguf_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope" if kind == "missing" else tmp_path
    with pytest.raises(GGUFError, match="cannot read GGUF file"):
        read_gguf(path)


# --- the fixture is a real model -------------------------------------------------------


@pytest.mark.llama
def test_gguf_tiny_model_generates_in_llama_cpp(tiny_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(tiny_path), n_ctx=256, verbose=False)
    try:
        out = llm.create_completion("the cat", max_tokens=2, temperature=0.0)
    finally:
        llm.close()
    assert out["choices"][0]["finish_reason"] in ("length", "stop")
    assert 1 <= out["usage"]["completion_tokens"] <= 2


@pytest.mark.llama
def test_gguf_tiny_embedding_model_embeds_in_llama_cpp(tiny_embed_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    # llama.cpp ignores llama.pooling_type for the llama architecture (it pools per token),
    # so the caller passes the GGUF's pooling type explicitly.
    pooling = read_gguf(tiny_embed_path).metadata["llama.pooling_type"]
    llm = llama_cpp.Llama(
        model_path=str(tiny_embed_path),
        n_ctx=256,
        embedding=True,
        pooling_type=pooling,
        verbose=False,
    )
    try:
        vector = llm.embed("the cat")
    finally:
        llm.close()
    assert len(vector) == 64


def test_gguf_tiny_writer_does_not_import_llama_cpp() -> None:
    code = "import sys, tests.support.tiny_gguf; assert 'llama_cpp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
