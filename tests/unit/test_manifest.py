"""Manifest parsing and validation, byte-exact serialisation, and Go-style JSON blobs."""

from __future__ import annotations

import json

import pytest

from registry.errors import InvalidManifest, RegistryError
from registry.manifest import (
    LAYER_LICENSE,
    LAYER_MODEL,
    LAYER_PARAMS,
    LAYER_TEMPLATE,
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_OCI_MANIFEST,
    Layer,
    Manifest,
    go_json_bytes,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
D4 = "sha256:" + "4" * 64

# What Go Ollama's json.Encoder writes for a created model: compact, struct order, newline.
OLLAMA_BYTES = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
    b'"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"'
    + D1.encode()
    + b'","size":158},'
    b'"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"'
    + D2.encode()
    + b'","size":24,'
    b'"from":"registry.ollama.ai/library/base:latest"},'
    b'{"mediaType":"application/vnd.ollama.image.template","digest":"'
    + D3.encode()
    + b'","size":52},'
    b'{"mediaType":"application/vnd.ollama.image.license","digest":"'
    + D3.encode()
    + b'","size":52}]}\n'
)


def _doc(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": LAYER_MODEL, "digest": D2, "size": 20}],
    }
    doc.update(overrides)
    return doc


def _bytes(doc: object) -> bytes:
    return json.dumps(doc).encode()


def _layer(**overrides: object) -> dict[str, object]:
    layer: dict[str, object] = {"mediaType": LAYER_MODEL, "digest": D2, "size": 20}
    layer.update(overrides)
    return layer


def test_manifest_parse_reads_ollama_bytes() -> None:
    manifest = Manifest.parse(OLLAMA_BYTES)
    assert manifest.schema_version == 2
    assert manifest.media_type == MEDIA_TYPE_MANIFEST
    assert manifest.config == Layer(MEDIA_TYPE_CONFIG, D1, 158)
    assert manifest.layers[0] == Layer(
        LAYER_MODEL, D2, 24, from_="registry.ollama.ai/library/base:latest"
    )
    assert [layer.media_type for layer in manifest.layers] == [
        LAYER_MODEL,
        LAYER_TEMPLATE,
        LAYER_LICENSE,
    ]


def test_manifest_round_trips_to_identical_bytes() -> None:
    manifest = Manifest.parse(OLLAMA_BYTES)
    assert manifest.to_bytes() == OLLAMA_BYTES
    assert Manifest.parse(manifest.to_bytes()) == manifest


def test_manifest_to_bytes_from_constructed_value() -> None:
    manifest = Manifest(
        config=Layer(MEDIA_TYPE_CONFIG, D1, 5),
        layers=(Layer(LAYER_PARAMS, D2, 7, name="p<1>"),),
    )
    assert manifest.to_bytes() == (
        b'{"schemaVersion":2,"mediaType":"' + MEDIA_TYPE_MANIFEST.encode() + b'",'
        b'"config":{"mediaType":"'
        + MEDIA_TYPE_CONFIG.encode()
        + b'","digest":"'
        + D1.encode()
        + b'","size":5},"layers":[{"mediaType":"'
        + LAYER_PARAMS.encode()
        + b'","digest":"'
        + D2.encode()
        + b'","size":7,"name":"p\\u003c1\\u003e"}]}\n'
    )


def test_manifest_layer_to_json_omits_empty_optional_fields() -> None:
    assert Layer(LAYER_MODEL, D2, 1).to_json() == {
        "mediaType": LAYER_MODEL,
        "digest": D2,
        "size": 1,
    }
    assert Layer(LAYER_MODEL, D2, 1, from_="m:latest", name="x").to_json() == {
        "mediaType": LAYER_MODEL,
        "digest": D2,
        "size": 1,
        "from": "m:latest",
        "name": "x",
    }


def test_manifest_accessors() -> None:
    manifest = Manifest.parse(OLLAMA_BYTES)
    assert manifest.digests() == [D1, D2, D3]
    assert manifest.layers_of(LAYER_TEMPLATE) == [Layer(LAYER_TEMPLATE, D3, 52)]
    assert manifest.first(LAYER_LICENSE) == Layer(LAYER_LICENSE, D3, 52)
    assert manifest.first(LAYER_PARAMS) is None
    assert manifest.layers_of(LAYER_PARAMS) == []
    assert manifest.total_size() == 158 + 24 + 52 + 52


def test_manifest_keeps_unknown_fields_and_media_types() -> None:
    doc = _doc(
        annotations={"x": "y"},
        layers=[_layer(mediaType="application/vnd.example.future", urls=["u"], extra=1)],
    )
    manifest = Manifest.parse(_bytes(doc))
    assert manifest.layers == (Layer("application/vnd.example.future", D2, 20),)


def test_manifest_canonicalises_digests() -> None:
    doc = _doc(
        config={"mediaType": MEDIA_TYPE_CONFIG, "digest": "sha256-" + "A" * 64, "size": 1},
        layers=[_layer(digest="sha256:" + "B" * 64)],
    )
    manifest = Manifest.parse(_bytes(doc))
    assert manifest.digests() == ["sha256:" + "a" * 64, "sha256:" + "b" * 64]


def test_manifest_accepts_oci_type_missing_type_and_null_layers() -> None:
    assert Manifest.parse(_bytes(_doc(mediaType=MEDIA_TYPE_OCI_MANIFEST))).media_type == (
        MEDIA_TYPE_OCI_MANIFEST
    )
    doc = _doc(layers=None)
    del doc["mediaType"]
    manifest = Manifest.parse(_bytes(doc))
    assert manifest.media_type == MEDIA_TYPE_OCI_MANIFEST
    assert manifest.layers == ()


def test_manifest_parse_enforces_the_size_cap() -> None:
    data = _bytes(_doc())
    assert Manifest.parse(data, max_bytes=len(data)).config.digest == D1
    with pytest.raises(InvalidManifest, match="larger than"):
        Manifest.parse(data, max_bytes=len(data) - 1)
    padded = _bytes(_doc(pad="x" * (4 * 1024 * 1024)))
    with pytest.raises(InvalidManifest, match="larger than"):
        Manifest.parse(padded)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"{",
        b"[]",
        b"null",
        b'"manifest"',
        b"\xff\xfe{}",
        b'{"schemaVersion": NaN}',
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps(_doc()).encode("utf-16"),
    ],
)
def test_manifest_parse_rejects_non_manifest_bytes(data: bytes) -> None:
    with pytest.raises(InvalidManifest):
        Manifest.parse(data)


@pytest.mark.parametrize(
    "overrides",
    [
        {"schemaVersion": 1},
        {"schemaVersion": "2"},
        {"schemaVersion": 2.0},
        {"schemaVersion": True},
        {"schemaVersion": None},
        {"mediaType": "application/vnd.oci.image.index.v1+json"},
        {"mediaType": ["x"]},
        {"mediaType": 2},
        {"config": None},
        {"config": "sha256:" + "1" * 64},
        {"config": {"mediaType": MEDIA_TYPE_CONFIG, "size": 1}},
        {"layers": {}},
        {"layers": "x"},
        {"layers": [None]},
        {"layers": [[]]},
        {"layers": [_layer(mediaType=None)]},
        {"layers": [_layer(mediaType="")]},
        {"layers": [_layer(mediaType=1)]},
        {"layers": [_layer(size=-1)]},
        {"layers": [_layer(size=1.0)]},
        {"layers": [_layer(size=1.5)]},
        {"layers": [_layer(size="20")]},
        {"layers": [_layer(size=True)]},
        {"layers": [_layer(size=None)]},
        {"layers": [_layer(size=2**63)]},
        {"layers": [_layer(digest=None)]},
        {"layers": [_layer(digest=7)]},
        {"layers": [_layer(digest="")]},
        {"layers": [_layer(digest="sha256:../../etc/passwd")]},
        {"layers": [_layer(digest="sha256:" + "1" * 63)]},
        {"layers": [_layer(digest="sha256:" + "1" * 64 + "\n")]},
        {"layers": [_layer(digest="sha256:" + "1" * 64 + "/../../x")]},
        {"layers": [_layer(digest="sha512:" + "1" * 128)]},
        {"layers": [_layer(digest="../../../../tmp/x")]},
        {"layers": [_layer(), _layer(digest="sha256:" + "g" * 64)]},
        {"layers": [_layer(**{"from": 3})]},
        {"layers": [_layer(name=["x"])]},
    ],
)
def test_manifest_parse_rejects_wrong_shape(overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidManifest):
        Manifest.parse(_bytes(_doc(**overrides)))


def test_manifest_parse_rejects_missing_config() -> None:
    doc = _doc()
    del doc["config"]
    with pytest.raises(InvalidManifest):
        Manifest.parse(_bytes(doc))


def test_manifest_size_of_zero_and_int64_max_are_accepted() -> None:
    doc = _doc(layers=[_layer(size=0), _layer(digest=D4, size=2**63 - 1)])
    assert [layer.size for layer in Manifest.parse(_bytes(doc)).layers] == [0, 2**63 - 1]


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ({"stop": ["<|end|>"]}, b'{"stop":["\\u003c|end|\\u003e"]}\n'),
        ({"b": 1, "a": 2, "C": 3}, b'{"C":3,"a":2,"b":1}\n'),
        ({"a": {"z": 1, "y": [True, False, None]}}, b'{"a":{"y":[true,false,null],"z":1}}\n'),
        ("a&b", b'"a\\u0026b"\n'),
        ("\u2028\u2029", b'"\\u2028\\u2029"\n'),
        ("caf\u00e9 \u6f22 \U0001f600", '"caf\u00e9 \u6f22 \U0001f600"\n'.encode()),
        ('q"\\\n\r\t', b'"q\\"\\\\\\n\\r\\t"\n'),
        ("\x01\x1f\x7f", b'"\\u0001\\u001f\x7f"\n'),
        ("\ud800", '"\ufffd"\n'.encode()),
        ({"\u00e9": 1, "z": 2, "a": 3}, '{"a":3,"z":2,"\u00e9":1}\n'.encode()),
        ([], b"[]\n"),
        ({}, b"{}\n"),
        ((1, "x"), b'[1,"x"]\n'),
        (None, b"null\n"),
        (1.0, b"1\n"),
        (0.7, b"0.7\n"),
        (-0.0, b"-0\n"),
        (0.0, b"0\n"),
        (1e16, b"10000000000000000\n"),
        (1e20, b"100000000000000000000\n"),
        (1e21, b"1e+21\n"),
        (1.2345e22, b"1.2345e+22\n"),
        (1e-6, b"0.000001\n"),
        (1e-7, b"1e-7\n"),
        (1.5e-7, b"1.5e-7\n"),
        (1e-100, b"1e-100\n"),
        (123456789.125, b"123456789.125\n"),
        (2**70, b"1180591620717411303424\n"),
        ({"temperature": 0.8, "num_ctx": 4096}, b'{"num_ctx":4096,"temperature":0.8}\n'),
    ],
)
def test_manifest_go_json_bytes_matches_go_encoder(value: object, encoded: bytes) -> None:
    assert go_json_bytes(value) == encoded


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1: "x"}, {"a": object()}, {1, 2}])
def test_manifest_go_json_bytes_rejects_unsupported_values(value: object) -> None:
    with pytest.raises(RegistryError):
        go_json_bytes(value)
