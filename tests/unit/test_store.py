"""The on-disk store: atomic blobs and manifests, case-insensitive lookup, delete, prune."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from registry.digest import is_valid_digest, sha256_digest
from registry.errors import (
    BlobNotFound,
    DigestMismatch,
    InvalidDigest,
    InvalidManifest,
    InvalidName,
    ModelNotFound,
    RegistryError,
)
from registry.manifest import (
    LAYER_MODEL,
    LAYER_PARAMS,
    LAYER_TEMPLATE,
    MEDIA_TYPE_CONFIG,
    Layer,
    Manifest,
    go_json_bytes,
)
from registry.names import ModelName
from registry.store import ModelStore

NOW = 1_700_000_000.0
OLD = NOW - 7200
YOUNG = NOW - 60


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def _name(text: str) -> ModelName:
    return ModelName.parse(text)


def _manifest(store: ModelStore, *contents: bytes, config: bytes = b"{}\n") -> bytes:
    """Store the blobs and return manifest bytes as Ollama writes them."""
    config_layer = Layer(MEDIA_TYPE_CONFIG, *store.write_blob_bytes(config))
    layers = tuple(Layer(LAYER_MODEL, *store.write_blob_bytes(c)) for c in contents)
    return Manifest(config=config_layer, layers=layers).to_bytes()


def _make_model(store: ModelStore, text: str, *contents: bytes) -> ModelName:
    name = _name(text)
    store.write_manifest(name, _manifest(store, *contents))
    return name


def _blob_names(store: ModelStore) -> set[str]:
    return {path.name for path in store.blobs_dir.iterdir()}


def _manifest_files(store: ModelStore) -> set[str]:
    root = store.manifests_dir
    return (
        {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
        if root.exists()
        else set()
    )


def _tree(base: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(base)) for p in base.rglob("*") if skip not in (p, *p.parents)}


def _age(path: Path, mtime: float) -> None:
    os.utime(path, (mtime, mtime))


# -- blobs ---------------------------------------------------------------------------------


def test_store_write_blob_bytes_stores_under_digest_name(store: ModelStore) -> None:
    digest, size = store.write_blob_bytes(b"hello")
    assert (digest, size) == (sha256_digest(b"hello"), 5)
    path = store.blob_path(digest)
    assert path == store.blobs_dir / ("sha256-" + hashlib.sha256(b"hello").hexdigest())
    assert path.read_bytes() == b"hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(store.blobs_dir.stat().st_mode) & ~0o755 == 0
    assert _blob_names(store) == {path.name}
    assert store.has_blob(digest) and store.blob_size(digest) == 5


def test_store_blob_writer_streams_and_hides_partial_data(store: ModelStore) -> None:
    data = b"chunk-" * 1000
    with store.blob_writer() as writer:
        writer.write(data[:100])
        writer.write(data[100:])
        names = _blob_names(store)
        assert len(names) == 1
        assert not any(is_valid_digest(name) for name in names)
        assert all(name.startswith(".tmp-") for name in names)
        assert not store.has_blob(sha256_digest(data))
        digest, size = writer.commit(expected=sha256_digest(data).replace(":", "-"))
    assert (digest, size) == (sha256_digest(data), len(data))
    assert _blob_names(store) == {"sha256-" + hashlib.sha256(data).hexdigest()}


def test_store_blob_writer_that_raises_mid_stream_leaves_nothing(store: ModelStore) -> None:
    with pytest.raises(RuntimeError), store.blob_writer() as writer:
        writer.write(b"partial")
        raise RuntimeError("connection lost")
    assert _blob_names(store) == set()


def test_store_blob_writer_without_commit_leaves_nothing(store: ModelStore) -> None:
    with store.blob_writer() as writer:
        writer.write(b"abandoned")
    assert _blob_names(store) == set()
    with pytest.raises(RegistryError):
        writer.write(b"more")


def test_store_digest_mismatch_leaves_nothing(store: ModelStore) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch) as caught, store.blob_writer() as writer:
        writer.write(b"payload")
        writer.commit(expected=wrong)
    assert str(caught.value) == (
        f'digest mismatch, expected "{wrong}", got "{sha256_digest(b"payload")}"'
    )
    assert _blob_names(store) == set()


def test_store_commit_rejects_malformed_expected_digest(store: ModelStore) -> None:
    with pytest.raises(InvalidDigest), store.blob_writer() as writer:
        writer.write(b"x")
        writer.commit(expected="sha256:../../x")
    assert _blob_names(store) == set()


def test_store_blob_writer_cap_drops_the_temp(store: ModelStore) -> None:
    with pytest.raises(RegistryError, match="larger than 4 bytes"):
        with store.blob_writer(max_bytes=4) as writer:
            writer.write(b"abc")
            writer.write(b"de")
    assert _blob_names(store) == set()
    with store.blob_writer(max_bytes=4) as writer:
        writer.write(b"abcd")
        assert writer.commit() == (sha256_digest(b"abcd"), 4)


def test_store_existing_blob_is_reused(store: ModelStore) -> None:
    first = store.write_blob_bytes(b"same")
    _age(store.blob_path(first[0]), OLD)
    assert store.write_blob_bytes(b"same") == first
    assert _blob_names(store) == {store.blob_path(first[0]).name}
    assert store.blob_path(first[0]).stat().st_mtime > OLD  # touched, like Ollama


def test_store_commit_twice_is_refused(store: ModelStore) -> None:
    with store.blob_writer() as writer:
        writer.write(b"x")
        writer.commit()
        with pytest.raises(RegistryError):
            writer.commit()


def test_store_empty_blob(store: ModelStore) -> None:
    assert store.write_blob_bytes(b"") == (sha256_digest(b""), 0)


def test_store_import_file_copies_a_regular_file(store: ModelStore, tmp_path: Path) -> None:
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF" + bytes(3 * 1024 * 1024))
    digest, size = store.import_file(source)
    assert size == source.stat().st_size
    assert store.blob_path(digest).read_bytes() == source.read_bytes()
    assert source.exists()


def test_store_import_file_refuses_non_regular_files(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(RegistryError):
        store.import_file(tmp_path / "missing")
    with pytest.raises(RegistryError):
        store.import_file(tmp_path)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        with pytest.raises(RegistryError, match="not a regular file"):
            store.import_file(fifo)
    with pytest.raises(RegistryError, match="larger than"):
        big = tmp_path / "big"
        big.write_bytes(b"x" * 10)
        store.import_file(big, max_bytes=9)
    assert not store.blobs_dir.exists() or _blob_names(store) == set()


def test_store_read_blob_bytes(store: ModelStore) -> None:
    digest, _ = store.write_blob_bytes(b"0123456789")
    assert store.read_blob_bytes(digest, max_bytes=10) == b"0123456789"
    with pytest.raises(RegistryError, match="larger than"):
        store.read_blob_bytes(digest, max_bytes=9)
    missing = "sha256:" + "f" * 64
    with pytest.raises(BlobNotFound):
        store.read_blob_bytes(missing, max_bytes=10)
    with pytest.raises(BlobNotFound):
        store.blob_size(missing)
    assert not store.has_blob(missing)


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../x",
        "sha256:../../etc/passwd",
        "sha256-" + "a" * 63 + "/",
        "../blobs/sha256-" + "a" * 64,
        "sha256:" + "a" * 64 + "\n",
        "",
    ],
)
def test_store_blob_path_rejects_hostile_digests(store: ModelStore, digest: str) -> None:
    with pytest.raises(InvalidDigest):
        store.blob_path(digest)
    with pytest.raises(InvalidDigest):
        store.has_blob(digest)


def test_store_blob_path_is_inside_blobs(store: ModelStore) -> None:
    path = store.blob_path("sha256:" + "AB" * 32)
    assert path.parent == store.blobs_dir
    assert path.name == "sha256-" + "ab" * 32


# -- manifests -----------------------------------------------------------------------------


def test_store_manifest_saved_byte_for_byte(store: ModelStore) -> None:
    config = store.write_blob_bytes(b"{}")
    model = store.write_blob_bytes(b"weights")
    # Pretty-printed, as a registry might serve it: must not be re-serialised.
    data = (
        '{\n  "schemaVersion": 2,\n'
        '  "mediaType": "application/vnd.docker.distribution.manifest.v2+json",\n'
        f'  "config": {{"mediaType": "{MEDIA_TYPE_CONFIG}",\n'
        f'    "digest": "{config[0]}", "size": {config[1]}}},\n'
        f'  "layers": [{{"mediaType": "{LAYER_MODEL}",\n'
        f'    "digest": "{model[0]}", "size": {model[1]}, "x": 1}}]\n}}'
    ).encode()
    name = _name("registry.example:5000/ns/m:t")
    store.write_manifest(name, data)
    path = store.manifests_dir / "registry.example:5000" / "ns" / "m" / "t"
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    stored = store.get(name)
    assert stored.raw == data
    assert stored.digest_hex == hashlib.sha256(data).hexdigest()
    assert stored.manifest.digests() == [config[0], model[0]]
    assert stored.modified_at == path.stat().st_mtime
    assert [p.name for p in path.parent.iterdir()] == ["t"]  # no temp left behind


def test_store_write_manifest_requires_every_blob(store: ModelStore) -> None:
    data = _manifest(store, b"weights")
    store.blob_path(sha256_digest(b"weights")).unlink()
    with pytest.raises(BlobNotFound):
        store.write_manifest(_name("m"), data)
    assert _manifest_files(store) == set()


@pytest.mark.parametrize("data", [b"", b"{}", b"[1]", b'{"schemaVersion":2,"config":{}}'])
def test_store_write_manifest_rejects_invalid_manifest(store: ModelStore, data: bytes) -> None:
    with pytest.raises(InvalidManifest):
        store.write_manifest(_name("m"), data)
    assert _manifest_files(store) == set()


@pytest.mark.parametrize(
    "name",
    [
        ModelName("..", "n", "m", "t"),
        ModelName("h", "..", "m", "t"),
        ModelName("h", "n", "../../../etc", "t"),
        ModelName("h", "n", "m", "../../x"),
        ModelName("/tmp", "n", "m", "t"),
        ModelName("h", "n", "m", ""),
        ModelName("h", "n\\x", "m", "t"),
    ],
)
def test_store_refuses_hostile_names(store: ModelStore, tmp_path: Path, name: ModelName) -> None:
    data = _manifest(store, b"w")
    before = _tree(tmp_path, store.root)
    with pytest.raises(InvalidName):
        store.write_manifest(name, data)
    with pytest.raises(InvalidName):
        store.copy(_make_model(store, "ok"), name)
    for operation in (store.resolve, store.get, store.delete):
        with pytest.raises(InvalidName):
            operation(name)
    assert _tree(tmp_path, store.root) == before
    assert _manifest_files(store) == {"registry.ollama.ai/library/ok/latest"}


def test_store_resolve_ignores_case_and_returns_stored_spelling(store: ModelStore) -> None:
    stored = _make_model(store, "HF.co/Bartowski/Llama-GGUF:Q4_K_M", b"w")
    found = store.resolve(_name("hf.co/bartowski/llama-gguf:q4_k_m"))
    assert found == stored
    assert store.get(_name("HF.CO/BARTOWSKI/LLAMA-GGUF:Q4_K_M")).name == stored
    assert store.resolve(_name("hf.co/bartowski/llama-gguf:q8_0")) is None
    assert store.resolve(_name("other")) is None
    with pytest.raises(ModelNotFound):
        store.get(_name("other"))


def test_store_resolve_keeps_requested_scheme(store: ModelStore) -> None:
    _make_model(store, "h:5000/ns/m:t", b"w")
    found = store.resolve(_name("http://H:5000/NS/M:T"))
    assert found is not None
    assert (str(found), found.scheme) == ("h:5000/ns/m:t", "http")


def test_store_write_manifest_keeps_one_spelling(store: ModelStore) -> None:
    _make_model(store, "Llama3:Latest", b"one")
    store.write_manifest(_name("llama3:latest"), _manifest(store, b"two"))
    assert _manifest_files(store) == {"registry.ollama.ai/library/Llama3/Latest"}
    assert store.get(_name("LLAMA3")).manifest.layers[0].digest == sha256_digest(b"two")
    # A new tag goes under the existing directory spelling.
    _make_model(store, "llama3:8B", b"three")
    assert _manifest_files(store) == {
        "registry.ollama.ai/library/Llama3/Latest",
        "registry.ollama.ai/library/Llama3/8B",
    }


def test_store_get_reuses_a_lookup_while_the_manifest_file_is_unchanged(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _make_model(store, "m:1", b"w")
    first = store.get(_name("M:1"))
    walks: list[ModelName] = []
    resolve = store.resolve
    monkeypatch.setattr(store, "resolve", lambda n: walks.append(n) or resolve(n))
    assert store.get(_name("M:1")) is first
    assert walks == []
    # A write through the store forgets the lookup: the next get walks and reads again.
    store.write_manifest(name, _manifest(store, b"two"))
    walks.clear()
    assert store.get(_name("M:1")).manifest.layers[0].digest == sha256_digest(b"two")
    assert walks == [_name("M:1")]


def test_store_get_sees_changes_made_beside_the_store(store: ModelStore) -> None:
    name = _make_model(store, "m:1", b"w")
    path = store.manifests_dir / "registry.ollama.ai" / "library" / "m" / "1"
    assert store.get(name).manifest.layers[0].digest == sha256_digest(b"w")
    # Rewritten in place, same size, same inode: the times tell the new bytes apart.
    other = _manifest(store, b"x")
    assert len(other) == path.stat().st_size
    with open(path, "r+b") as file:
        file.write(other)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert store.get(name).manifest.layers[0].digest == sha256_digest(b"x")
    path.write_bytes(b"{not json")
    with pytest.raises(InvalidManifest):
        store.get(name)
    path.unlink()
    with pytest.raises(ModelNotFound):
        store.get(name)


def test_store_get_forgets_a_deleted_model(store: ModelStore) -> None:
    name = _make_model(store, "m:1", b"w")
    store.get(name)
    store.delete(name)
    with pytest.raises(ModelNotFound):
        store.get(name)
    _make_model(store, "M:1", b"again")
    assert str(store.get(name).name) == "registry.ollama.ai/library/M:1"


def test_store_copy_shares_blobs(store: ModelStore) -> None:
    src = _make_model(store, "base:1b", b"weights")
    blobs = _blob_names(store)
    store.copy(src, _name("me/custom"))
    assert _blob_names(store) == blobs
    assert store.get(_name("me/custom")).raw == store.get(src).raw
    assert sorted(str(m.name) for m in store.list_models()) == [
        "registry.ollama.ai/library/base:1b",
        "registry.ollama.ai/me/custom:latest",
    ]


def test_store_copy_errors_and_no_op(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound):
        store.copy(_name("missing"), _name("dst"))
    src = _make_model(store, "Base", b"w")
    store.copy(src, _name("base"))
    store.copy(src, src)
    assert _manifest_files(store) == {"registry.ollama.ai/library/Base/latest"}


def test_store_delete_prunes_only_unreferenced_blobs_and_empty_dirs(store: ModelStore) -> None:
    keep = _make_model(store, "keep", b"shared", b"keep-only")
    gone = _make_model(store, "me/gone:tag", b"shared", b"gone-only")
    unrelated, _ = store.write_blob_bytes(b"uploaded, not yet in a manifest")
    store.delete(_name("ME/GONE:TAG"))
    assert store.resolve(gone) is None
    assert not (store.manifests_dir / "registry.ollama.ai" / "me").exists()
    assert store.manifests_dir.is_dir()
    assert not store.has_blob(sha256_digest(b"gone-only"))
    for data in (b"shared", b"keep-only", b"{}\n"):
        assert store.has_blob(sha256_digest(data))
    assert store.has_blob(unrelated)
    store.delete(keep)
    assert _manifest_files(store) == set()
    assert list(store.manifests_dir.iterdir()) == []
    assert _blob_names(store) == {store.blob_path(unrelated).name}
    with pytest.raises(ModelNotFound):
        store.delete(keep)


def test_store_delete_keeps_blobs_named_by_a_corrupt_manifest(store: ModelStore) -> None:
    name = _make_model(store, "victim", b"weights")
    weights = sha256_digest(b"weights")
    corrupt = store.manifests_dir / "registry.ollama.ai" / "library" / "broken" / "latest"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text(f'{{"truncated": "{weights}", ')
    store.delete(name)
    assert store.has_blob(weights)
    assert not store.has_blob(sha256_digest(b"{}\n"))


def test_store_delete_removes_a_corrupt_manifest(store: ModelStore) -> None:
    path = store.manifests_dir / "registry.ollama.ai" / "library" / "bad" / "latest"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")
    store.delete(_name("bad"))
    assert _manifest_files(store) == set()


# -- listing -------------------------------------------------------------------------------


def test_store_lists_an_ollama_layout_built_by_hand(store: ModelStore) -> None:
    blobs: dict[str, bytes] = {
        "config": go_json_bytes(
            {
                "model_format": "gguf",
                "model_family": "llama",
                "model_families": ["llama"],
                "model_type": "3.2B",
                "file_type": "Q4_K_M",
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        ),
        "model": b"GGUF\x03\x00\x00\x00" + bytes(64),
        "template": b"<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>",
        "params": go_json_bytes({"stop": ["<|start_header_id|>", "<|eot_id|>"]}),
    }
    store.blobs_dir.mkdir(parents=True)
    entries = {}
    for key, data in blobs.items():
        hexdigest = hashlib.sha256(data).hexdigest()
        (store.blobs_dir / f"sha256-{hexdigest}").write_bytes(data)
        entries[key] = f'"digest":"sha256:{hexdigest}","size":{len(data)}'
    raw = (
        '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        '"config":{"mediaType":"application/vnd.docker.container.image.v1+json",'
        f"{entries['config']}}},"
        f'"layers":[{{"mediaType":"application/vnd.ollama.image.model",{entries["model"]}}},'
        f'{{"mediaType":"application/vnd.ollama.image.template",{entries["template"]}}},'
        f'{{"mediaType":"application/vnd.ollama.image.params",{entries["params"]}}}]}}\n'
    ).encode()
    path = store.manifests_dir / "registry.ollama.ai" / "library" / "llama3.2" / "latest"
    path.parent.mkdir(parents=True)
    path.write_bytes(raw)

    [model] = store.list_models()
    assert str(model.name) == "registry.ollama.ai/library/llama3.2:latest"
    assert model.name.display_shortest() == "llama3.2:latest"
    assert model.digest_hex == hashlib.sha256(raw).hexdigest()
    assert model.manifest.total_size() == sum(len(data) for data in blobs.values())
    assert model.modified_at == path.stat().st_mtime
    assert model.raw == raw
    assert model.manifest.to_bytes() == raw  # our serialiser writes what Ollama writes
    template = model.manifest.first(LAYER_TEMPLATE)
    params = model.manifest.first(LAYER_PARAMS)
    assert template is not None and params is not None
    assert store.read_blob_bytes(template.digest, 1024) == blobs["template"]
    assert store.read_blob_bytes(params.digest, 1024) == blobs["params"]
    assert store.get(_name("LLAMA3.2")).digest_hex == model.digest_hex
    assert store.prune(now=time.time() + 10 * 3600) == []


def test_store_list_skips_bad_names_and_corrupt_manifests(
    store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    good = _make_model(store, "good", b"w")
    data = store.get(good).raw
    library = store.manifests_dir / "registry.ollama.ai" / "library"
    for relative in ("..bad/latest", "bad!/latest", "ok/.hidden", "ok/-tag"):
        (library / relative).parent.mkdir(parents=True, exist_ok=True)
        (library / relative).write_bytes(data)
    (library / "corrupt").mkdir()
    (library / "corrupt" / "latest").write_bytes(b"{not json")
    (store.manifests_dir / "registry.ollama.ai" / "shallow").write_bytes(data)
    deep = library / "deep" / "latest" / "extra"
    deep.mkdir(parents=True)
    (deep / "x").write_bytes(data)
    (library / "ok" / ".tmp-abc123").write_bytes(b"in progress")
    with caplog.at_level(logging.WARNING, logger="registry.store"):
        models = store.list_models()
    assert [m.name for m in models] == [good]
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert messages.count("manifest_skipped") == 5
    assert ".tmp-abc123" not in messages


def test_store_list_of_an_empty_store(store: ModelStore) -> None:
    assert store.list_models() == []
    assert not store.root.exists()


# -- maintenance ---------------------------------------------------------------------------


def test_store_prune_honours_grace_and_removes_stale_files(store: ModelStore) -> None:
    used = _make_model(store, "used", b"kept")
    stale = store.write_blob_bytes(b"stale orphan")[0]
    fresh = store.write_blob_bytes(b"fresh orphan")[0]
    partial = store.blobs_dir / ("sha256-" + "c" * 64 + "-partial")
    stale_temp, fresh_temp = store.blobs_dir / ".tmp-old", store.blobs_dir / ".tmp-new"
    upper = store.blobs_dir / ("sha256-" + "D" * 64)
    for path in (partial, stale_temp, fresh_temp, upper):
        path.write_bytes(b"junk")
    (store.blobs_dir / "subdir").mkdir()
    for path in store.blobs_dir.iterdir():
        _age(path, OLD)
    for path in (store.blob_path(fresh), fresh_temp):
        _age(path, YOUNG)

    removed = store.prune(grace_s=3600, now=NOW)

    assert sorted(removed) == sorted(
        [store.blob_path(stale).name, partial.name, stale_temp.name, "sha256-" + "d" * 64]
    )
    assert _blob_names(store) == {
        *(store.blob_path(d).name for d in store.get(used).manifest.digests()),
        store.blob_path(fresh).name,
        fresh_temp.name,
        "subdir",
    }
    assert store.get(used).manifest.digests()  # still loadable


def test_store_prune_does_nothing_when_a_manifest_is_corrupt(store: ModelStore) -> None:
    _make_model(store, "used", b"kept")
    orphan = store.write_blob_bytes(b"orphan")[0]
    corrupt = store.manifests_dir / "registry.ollama.ai" / "library" / "bad" / "latest"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"{")
    for path in store.blobs_dir.iterdir():
        _age(path, OLD)
    assert store.prune(now=NOW) == []
    assert store.has_blob(orphan)


def test_store_prune_cleans_manifest_dirs(store: ModelStore) -> None:
    _make_model(store, "used", b"kept")
    empty = store.manifests_dir / "h" / "n" / "m"
    empty.mkdir(parents=True)
    model_dir = store.manifests_dir / "registry.ollama.ai" / "library" / "used"
    stale, fresh = model_dir / ".tmp-1", model_dir / ".tmp-2"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    _age(stale, OLD)
    _age(fresh, YOUNG)
    store.prune(now=NOW)
    assert not (store.manifests_dir / "h").exists()
    assert not stale.exists() and fresh.exists()
    assert store.resolve(_name("used")) is not None


def test_store_prune_fixes_old_blob_names_first(store: ModelStore) -> None:
    name = _make_model(store, "m", b"weights")
    path = store.blob_path(sha256_digest(b"weights"))
    old_style = store.blobs_dir / path.name.replace("sha256-", "sha256:")
    path.rename(old_style)
    for blob in store.blobs_dir.iterdir():
        _age(blob, OLD)
    assert store.prune(now=NOW) == []
    assert path.read_bytes() == b"weights" and not old_style.exists()
    assert store.get(name)


def test_store_fix_blob_names(store: ModelStore) -> None:
    store.blobs_dir.mkdir(parents=True)
    colon = store.blobs_dir / ("sha256:" + "a" * 64)
    upper = store.blobs_dir / ("sha256-" + "B" * 64)
    other = store.blobs_dir / "sha256:short"
    for path in (colon, upper, other):
        path.write_bytes(path.name.encode())
    store.fix_blob_names()
    assert _blob_names(store) == {"sha256-" + "a" * 64, "sha256-" + "b" * 64, "sha256:short"}


def test_store_prune_of_an_empty_store(store: ModelStore) -> None:
    assert store.prune(now=NOW) == []


# -- whole-store properties -----------------------------------------------------------------


def test_store_never_writes_outside_root(store: ModelStore, tmp_path: Path) -> None:
    (tmp_path / "outside").write_bytes(b"precious")
    before = _tree(tmp_path, store.root)
    name = _make_model(store, "a/b:c", b"w")
    store.copy(name, _name("x/y:z"))
    hostile = [
        "sha256:../../outside",
        "sha256-../../../outside",
        "sha256:" + "a" * 64 + "/../../../outside",
    ]
    for digest in hostile:
        with pytest.raises(InvalidDigest):
            store.blob_path(digest)
        with pytest.raises(InvalidDigest), store.blob_writer() as writer:
            writer.write(b"x")
            writer.commit(expected=digest)
    layer = f'{{"mediaType":"{LAYER_MODEL}","digest":"sha256:../../outside","size":1}}'
    bad = f'{{"schemaVersion":2,"config":{layer},"layers":[{layer}]}}'.encode()
    with pytest.raises(InvalidManifest):
        store.write_manifest(_name("evil"), bad)
    store.delete(name)
    store.prune(now=NOW)
    assert _tree(tmp_path, store.root) == before
    assert (tmp_path / "outside").read_bytes() == b"precious"


def test_store_concurrent_writes_and_deletes(store: ModelStore) -> None:
    data = _manifest(store, b"shared")
    names = [_name(f"m:t{i}") for i in range(24)]

    def work(chunk: list[ModelName]) -> None:
        for name in chunk:
            store.write_manifest(name, data)
        for name in chunk[::2]:
            store.delete(name)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(work, names[i::4]) for i in range(4)]:
            future.result()
    assert len(store.list_models()) == 12
    assert store.has_blob(sha256_digest(b"shared"))


def test_store_remove_unreferenced_keeps_what_any_manifest_mentions(store: ModelStore) -> None:
    _make_model(store, "used", b"kept")
    kept = store.write_blob_bytes(b"kept")[0]
    mentioned = store.write_blob_bytes(b"named by a broken manifest")[0]
    dropped = store.write_blob_bytes(b"replaced layer")[0]
    corrupt = store.manifests_dir / "registry.ollama.ai" / "library" / "bad" / "latest"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b'{"layers": [{"digest": "' + mentioned.encode() + b'"')
    # Young blobs too: this is the pull's own clean-up, not the start-up prune's grace rule.
    assert store.remove_unreferenced({kept, mentioned, dropped}) == [dropped]
    assert store.has_blob(kept) and store.has_blob(mentioned) and not store.has_blob(dropped)
    assert store.remove_unreferenced({dropped}) == [dropped]  # already gone: no error
