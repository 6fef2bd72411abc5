"""Tests for registry.options: the option table, typing of Modelfile and API values, rendering."""

from __future__ import annotations

import logging
import math

import pytest

from registry.errors import InvalidOption
from registry.options import (
    DEFAULT_OPTIONS,
    DEPRECATED,
    OPTION_KINDS,
    RUNNER_OPTIONS,
    Kind,
    format_params,
    go_quote,
    go_syntax,
    go_value,
    render_parameters,
    validate_options,
)

# --- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("num_ctx", "int"),
        ("num_batch", "int"),
        ("num_gpu", "int"),
        ("main_gpu", "int"),
        ("use_mmap", "bool"),
        ("num_thread", "int"),
        ("draft_num_predict", "int"),
        ("num_parallel", "int"),
        ("num_keep", "int"),
        ("seed", "int"),
        ("num_predict", "int"),
        ("top_k", "int"),
        ("top_p", "float"),
        ("min_p", "float"),
        ("typical_p", "float"),
        ("repeat_last_n", "int"),
        ("temperature", "float"),
        ("repeat_penalty", "float"),
        ("presence_penalty", "float"),
        ("frequency_penalty", "float"),
        ("stop", "list[str]"),
    ],
)
def test_option_kinds_match_ollama(name: str, kind: str) -> None:
    assert OPTION_KINDS[name] == kind


def test_option_kinds_leave_out_removed_options() -> None:
    assert {"numa", "tfs_z", "mirostat"}.isdisjoint(OPTION_KINDS)


def test_runner_options_are_the_load_time_set() -> None:
    assert RUNNER_OPTIONS == {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "use_mmap",
        "num_thread",
        "draft_num_predict",
        "num_parallel",
    }
    assert RUNNER_OPTIONS <= OPTION_KINDS.keys()


def test_deprecated_are_not_options() -> None:
    assert DEPRECATED == {
        "penalize_newline",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mlock",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
    }
    assert DEPRECATED.isdisjoint(OPTION_KINDS)


def test_default_options_match_ollama() -> None:
    assert dict(DEFAULT_OPTIONS) == {
        "num_keep": 4,
        "seed": -1,
        "num_predict": -1,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_last_n": 64,
        "temperature": 0.8,
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }


@pytest.mark.parametrize("name", sorted(DEFAULT_OPTIONS))
def test_default_options_have_their_kind(name: str) -> None:
    expected = {"int": int, "float": float}[OPTION_KINDS[name]]
    assert type(DEFAULT_OPTIONS[name]) is expected
    assert name not in RUNNER_OPTIONS


# --- format_params: Modelfile / CLI text ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("num_ctx", "4096", 4096),
        ("num_ctx", "+8", 8),
        ("seed", "-1", -1),
        ("seed", "007", 7),
        ("seed", "9223372036854775807", 2**63 - 1),
        ("seed", "-9223372036854775808", -(2**63)),
        ("temperature", "0.7", 0.7),
        ("temperature", "1", 1.0),
        ("temperature", "-2", -2.0),
        ("top_p", ".5", 0.5),
        ("top_p", "5.", 5.0),
        ("top_p", "1e-3", 0.001),
        ("top_p", "2E+2", 200.0),
        ("top_p", "0x1p-2", 0.25),
        ("top_p", "Inf", math.inf),
        ("top_p", "-infinity", -math.inf),
        ("top_p", "3.4e38", 3.4e38),
        ("use_mmap", "1", True),
        ("use_mmap", "t", True),
        ("use_mmap", "T", True),
        ("use_mmap", "TRUE", True),
        ("use_mmap", "true", True),
        ("use_mmap", "True", True),
        ("use_mmap", "0", False),
        ("use_mmap", "f", False),
        ("use_mmap", "F", False),
        ("use_mmap", "FALSE", False),
        ("use_mmap", "false", False),
        ("use_mmap", "False", False),
        ("stop", "<|eot_id|>", ["<|eot_id|>"]),
        ("stop", "", [""]),
    ],
)
def test_format_params_types_values(name: str, text: str, expected: object) -> None:
    params, warnings = format_params({name: [text]})
    assert params == {name: expected}
    assert type(params[name]) is type(expected)
    assert warnings == []


def test_format_params_reads_nan() -> None:
    params, _ = format_params({"temperature": ["NaN"]})
    value = params["temperature"]
    assert isinstance(value, float) and math.isnan(value)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("num_ctx", "4k", "invalid int value [4k]"),
        ("num_ctx", "1.5", "invalid int value [1.5]"),
        ("num_ctx", " 1", "invalid int value [ 1]"),
        ("num_ctx", "1_000", "invalid int value [1_000]"),
        ("num_ctx", "", "invalid int value []"),
        ("num_ctx", "0x10", "invalid int value [0x10]"),
        ("num_ctx", "٣", "invalid int value [٣]"),
        ("seed", "9223372036854775808", "invalid int value [9223372036854775808]"),
        ("temperature", "hot", "invalid float value [hot]"),
        ("temperature", "", "invalid float value []"),
        ("temperature", " 0.7", "invalid float value [ 0.7]"),
        ("temperature", "1_0.5", "invalid float value [1_0.5]"),
        ("temperature", "1e39", "invalid float value [1e39]"),
        ("temperature", "1e400", "invalid float value [1e400]"),
        ("temperature", "-nan", "invalid float value [-nan]"),
        ("temperature", "0x10", "invalid float value [0x10]"),
        ("temperature", "1e", "invalid float value [1e]"),
        ("use_mmap", "yes", "invalid bool value [yes]"),
        ("use_mmap", "tRUE", "invalid bool value [tRUE]"),
        ("use_mmap", "2", "invalid bool value [2]"),
        ("use_mmap", "", "invalid bool value []"),
    ],
)
def test_format_params_rejects_bad_values(name: str, text: str, message: str) -> None:
    with pytest.raises(InvalidOption) as caught:
        format_params({name: [text]})
    assert str(caught.value) == message


@pytest.mark.parametrize("name", ["Temperature", "numa", "tfs_z", "draft", "", "NUM_CTX"])
def test_format_params_rejects_unknown_names(name: str) -> None:
    with pytest.raises(InvalidOption) as caught:
        format_params({name: ["1"]})
    assert str(caught.value) == f"unknown parameter '{name}'"


@pytest.mark.parametrize("name", sorted(DEPRECATED))
def test_format_params_warns_about_deprecated_names(name: str) -> None:
    params, warnings = format_params({name: ["1"], "top_k": ["20"]})
    assert params == {"top_k": 20}
    assert warnings == [f"parameter {name} is deprecated"]


def test_format_params_keeps_every_stop_value_in_order() -> None:
    params, _ = format_params({"stop": ["<|im_end|>", "USER:", "<|im_end|>"]})
    assert params == {"stop": ["<|im_end|>", "USER:", "<|im_end|>"]}


def test_format_params_takes_the_last_of_repeated_scalars() -> None:
    params, _ = format_params({"num_ctx": ["2048", "8192"]})
    assert params == {"num_ctx": 8192}


def test_format_params_handles_a_string_kind() -> None:
    params, _ = format_params({"name": ["  as is  "]}, kinds={"name": "str"})
    assert params == {"name": "  as is  "}


def test_format_params_empty_input_gives_nothing() -> None:
    assert format_params({}) == ({}, [])


# --- validate_options: API JSON --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("num_ctx", 4096, 4096),
        ("num_ctx", 4096.0, 4096),
        ("num_ctx", 4096.9, 4096),
        ("seed", -1.7, -1),
        ("temperature", 0.7, 0.7),
        ("temperature", 1, 1.0),
        ("temperature", 0, 0.0),
        ("use_mmap", True, True),
        ("use_mmap", False, False),
        ("stop", ["a", "b"], ["a", "b"]),
        ("stop", [], []),
        ("stop", ("x",), ["x"]),
    ],
)
def test_validate_options_types_values(name: str, value: object, expected: object) -> None:
    typed = validate_options({name: value})
    assert typed == {name: expected}
    assert type(typed[name]) is type(expected)


def test_validate_options_skips_none() -> None:
    assert validate_options({"num_ctx": None, "stop": None, "top_k": 5}) == {"top_k": 5}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("num_ctx", "4096", 'option "num_ctx" must be of type integer'),
        ("num_ctx", True, 'option "num_ctx" must be of type integer'),
        ("num_ctx", math.nan, 'option "num_ctx" must be of type integer'),
        ("num_ctx", math.inf, 'option "num_ctx" must be of type integer'),
        ("num_ctx", [1], 'option "num_ctx" must be of type integer'),
        ("temperature", "hot", 'option "temperature" must be of type float'),
        ("temperature", False, 'option "temperature" must be of type float'),
        ("temperature", {"x": 1}, 'option "temperature" must be of type float'),
        ("use_mmap", 1, 'option "use_mmap" must be of type boolean'),
        ("use_mmap", "true", 'option "use_mmap" must be of type boolean'),
        ("stop", "</s>", 'option "stop" must be of type array'),
        ("stop", {"a": "b"}, 'option "stop" must be of type array'),
        ("stop", ["ok", 1], 'option "stop" must be of an array of strings'),
        ("stop", [None], 'option "stop" must be of an array of strings'),
    ],
)
def test_validate_options_rejects_wrong_types(name: str, value: object, message: str) -> None:
    with pytest.raises(InvalidOption) as caught:
        validate_options({name: value})
    assert str(caught.value) == message


def test_validate_options_handles_a_string_kind() -> None:
    kinds: dict[str, Kind] = {"name": "str", **OPTION_KINDS}
    assert validate_options({"name": "x"}, kinds=kinds) == {"name": "x"}
    with pytest.raises(InvalidOption, match='option "name" must be of type string'):
        validate_options({"name": 1}, kinds=kinds)


@pytest.mark.parametrize("name", ["Temperature", "tfs_z", "numa", *sorted(DEPRECATED)])
def test_validate_options_drops_unknown_and_deprecated_with_a_warning(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="registry.options"):
        typed = validate_options({name: "anything", "top_k": 1})
    assert typed == {"top_k": 1}
    assert name in caplog.text


# --- rendering -----------------------------------------------------------------------------


def test_render_parameters_matches_show_format() -> None:
    text = render_parameters(
        {
            "temperature": 0.7,
            "stop": ["<|start_header_id|>", "<|eot_id|>"],
            "num_ctx": 4096,
            "use_mmap": False,
            "top_p": 1.0,
        }
    )
    assert text == (
        "num_ctx                        4096\n"
        'stop                           "<|start_header_id|>"\n'
        'stop                           "<|eot_id|>"\n'
        "temperature                    0.7\n"
        "top_p                          1\n"
        "use_mmap                       false"
    )


def test_render_parameters_of_nothing_is_empty() -> None:
    assert render_parameters({}) == ""
    assert render_parameters({"stop": [], "seed": None}) == ""


def test_render_parameters_does_not_cut_long_keys() -> None:
    key = "k" * 34
    assert render_parameters({key: 1}) == f"{key} 1"


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", '"plain"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("a\nb\tc\rd", '"a\\nb\\tc\\rd"'),
        ("\a\b\f\v", '"\\a\\b\\f\\v"'),
        ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),
        ("\u200b\u00a0", '"\\u200b\\u00a0"'),
        ("\U000e0001", '"\\U000e0001"'),
        ("é中😀", '"é中😀"'),
        ("<|im_end|>", '"<|im_end|>"'),
    ],
)
def test_go_quote_escapes_like_strconv(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.7, "0.7"),
        (1.0, "1"),
        (100.0, "100"),
        (123456.0, "123456"),
        (999999.0, "999999"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00012, "0.00012"),
        (1e-5, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (-0.5, "-0.5"),
        (-2.0, "-2"),
        (0.0, "0"),
        (-0.0, "-0"),
        (1e100, "1e+100"),
        (12345.678, "12345.678"),
        (0.1 + 0.2, "0.30000000000000004"),
        (math.nan, "NaN"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (True, "true"),
        (False, "false"),
        (4096, "4096"),
        (-1, "-1"),
        ("raw text", "raw text"),
    ],
)
def test_go_value_prints_like_percent_v(value: object, text: str) -> None:
    assert go_value(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [("x y", '"x y"'), (0.9, "0.9"), (40, "40"), (True, "true")],
)
def test_go_syntax_quotes_only_strings(value: object, text: str) -> None:
    assert go_syntax(value) == text


def test_a_modelfile_may_name_draft_num_predict() -> None:
    # Ollama's newer runner option: a Modelfile carrying it must still create.
    assert format_params({"draft_num_predict": ["4"]}) == ({"draft_num_predict": 4}, [])
    assert validate_options({"draft_num_predict": 2}) == {"draft_num_predict": 2}
