"""Tests for registry.modelfile: Ollama's Modelfile grammar, its meaning, and rendering."""

from __future__ import annotations

import codecs
import random

import pytest

from registry.errors import ModelfileError
from registry.modelfile import (
    CreateSpec,
    Instruction,
    parse_modelfile,
    quote,
    render_modelfile,
    to_create_spec,
)

INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", '
    '"renderer", "parser", "parameter", "message", or "requires"'
)
INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
INVALID_REQUIRES = "requires must be a valid semver (e.g. 0.14.0)"


def parsed(text: str | bytes) -> list[tuple[str, str, str, int]]:
    return [(i.kind, i.name, i.value, i.line) for i in parse_modelfile(text)]


# --- parsing: accepted input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Instruction names are case-insensitive and need a space or tab after them.
        ("FROM llama3.2", [("from", "", "llama3.2", 1)]),
        ("from llama3.2\n", [("from", "", "llama3.2", 1)]),
        ("FrOm llama3.2\n", [("from", "", "llama3.2", 1)]),
        ("FROM\tllama3.2\n", [("from", "", "llama3.2", 1)]),
        # Blank lines, comments at line start (indented too) and leading blanks are skipped.
        (
            "\n# a comment\n   # indented comment\n\t\n  FROM x\n",
            [("from", "", "x", 5)],
        ),
        # `#` after the start of a line is text.
        ("FROM x\nSYSTEM a # b", [("from", "", "x", 1), ("system", "", "a # b", 2)]),
        ("FROM x#y", [("from", "", "x#y", 1)]),
        # Unquoted values run to the end of the line and are trimmed.
        ("FROM x\nSYSTEM   a  b \t \n", [("from", "", "x", 1), ("system", "", "a  b", 2)]),
        ("FROM x\nSYSTEM a\tb", [("from", "", "x", 1), ("system", "", "a\tb", 2)]),
        # Empty arguments are allowed.
        ("FROM \n", [("from", "", "", 1)]),
        ('FROM x\nSYSTEM ""\n', [("from", "", "x", 1), ("system", "", "", 2)]),
        ('FROM x\nSYSTEM """"""', [("from", "", "x", 1), ("system", "", "", 2)]),
        # Quotes keep their contents exactly, across lines; the next line numbers follow.
        (
            'FROM x\nSYSTEM "  padded  "\nLICENSE MIT',
            [("from", "", "x", 1), ("system", "", "  padded  ", 2), ("license", "", "MIT", 3)],
        ),
        (
            'FROM x\nTEMPLATE "{{ .System }}\n\n  {{ .Prompt }}\n"\nSYSTEM s\n',
            [
                ("from", "", "x", 1),
                ("template", "", "{{ .System }}\n\n  {{ .Prompt }}\n", 2),
                ("system", "", "s", 6),
            ],
        ),
        (
            'FROM x\nTEMPLATE """{{ if eq .Role "user" }}\n# not a comment\n{{ end }}"""\n',
            [
                ("from", "", "x", 1),
                ("template", "", '{{ if eq .Role "user" }}\n# not a comment\n{{ end }}', 2),
            ],
        ),
        ('FROM x\nSYSTEM """say "hi""""', [("from", "", "x", 1), ("system", "", 'say "hi"', 2)]),
        ('FROM x\nSYSTEM ""a""', [("from", "", "x", 1), ("system", "", '"a"', 2)]),
        # A value is complete only when its trimmed text ends its quote: text after a
        # closing quote keeps the value open until a line does end with one.
        (
            'FROM x\nSYSTEM "a" b\nc"\nLICENSE l',
            [("from", "", "x", 1), ("system", "", 'a" b\nc', 2), ("license", "", "l", 4)],
        ),
        # Quotes inside an unquoted value, and single quotes, mean nothing.
        ('FROM x\nSYSTEM a "b" c', [("from", "", "x", 1), ("system", "", 'a "b" c', 2)]),
        ("FROM x\nSYSTEM 'a'", [("from", "", "x", 1), ("system", "", "'a'", 2)]),
        ('FROM x\nSYSTEM a"', [("from", "", "x", 1), ("system", "", 'a"', 2)]),
        # Non-printable characters other than tab, CR and LF are dropped.
        ("FROM x\nSYSTEM a\x00b\u200bc\x7fd", [("from", "", "x", 1), ("system", "", "abcd", 2)]),
        ("FROM x\nSYSTEM a\u00a0b", [("from", "", "x", 1), ("system", "", "ab", 2)]),
        ("FROM x\nSYSTEM é中😀", [("from", "", "x", 1), ("system", "", "é中😀", 2)]),
        # CRLF and lone CR end lines; inside quotes they are kept.
        (
            "FROM x\r\nSYSTEM y\r\n\r\nLICENSE z",
            [
                ("from", "", "x", 1),
                ("system", "", "y", 2),
                ("license", "", "z", 4),
            ],
        ),
        ("FROM x\rSYSTEM y\r", [("from", "", "x", 1), ("system", "", "y", 2)]),
        ('FROM x\r\nSYSTEM "a\r\nb"\r\n', [("from", "", "x", 1), ("system", "", "a\r\nb", 2)]),
        # PARAMETER keeps its name's case; MESSAGE keeps the role as the name.
        (
            "FROM x\nPARAMETER Temperature 1\nparameter num_ctx   4096 \nPARAMETER stop_2 a b",
            [
                ("from", "", "x", 1),
                ("parameter", "Temperature", "1", 2),
                ("parameter", "num_ctx", "4096", 3),
                ("parameter", "stop_2", "a b", 4),
            ],
        ),
        (
            'FROM x\nMESSAGE system Be brief.\nmessage user hi\nMESSAGE\tassistant "a\nb"',
            [
                ("from", "", "x", 1),
                ("message", "system", "Be brief.", 2),
                ("message", "user", "hi", 3),
                ("message", "assistant", "a\nb", 4),
            ],
        ),
        # Every instruction, in any order; several FROMs.
        (
            "ADAPTER ./lora.gguf\nFROM ./model.gguf\nFROM ./mmproj.gguf\nDRAFT ./small.gguf\n"
            "RENDERER qwen3-coder\nPARSER qwen3-coder\nREQUIRES 0.14.0\nLICENSE one\nLICENSE two",
            [
                ("adapter", "", "./lora.gguf", 1),
                ("from", "", "./model.gguf", 2),
                ("from", "", "./mmproj.gguf", 3),
                ("draft", "", "./small.gguf", 4),
                ("renderer", "", "qwen3-coder", 5),
                ("parser", "", "qwen3-coder", 6),
                ("requires", "", "0.14.0", 7),
                ("license", "", "one", 8),
                ("license", "", "two", 9),
            ],
        ),
    ],
)
def test_parse_modelfile_reads_instructions(
    text: str, expected: list[tuple[str, str, str, int]]
) -> None:
    assert parsed(text) == expected


def test_parse_modelfile_returns_instruction_records() -> None:
    (instruction,) = parse_modelfile("FROM x")
    assert instruction == Instruction(kind="from", name="", value="x", line=1)


@pytest.mark.parametrize(
    "source",
    [
        "\ufeffFROM x\nSYSTEM é",
        codecs.BOM_UTF8 + "FROM x\nSYSTEM é".encode(),
        "FROM x\nSYSTEM é".encode(),
        codecs.BOM_UTF16_LE + "FROM x\nSYSTEM é".encode("utf-16-le"),
        codecs.BOM_UTF16_BE + "FROM x\nSYSTEM é".encode("utf-16-be"),
    ],
)
def test_parse_modelfile_honours_byte_order_marks(source: str | bytes) -> None:
    assert parsed(source) == [("from", "", "x", 1), ("system", "", "é", 2)]


def test_parse_modelfile_replaces_invalid_utf8() -> None:
    assert parsed(b"FROM x\nSYSTEM a\xffb") == [("from", "", "x", 1), ("system", "", "a\ufffdb", 2)]


@pytest.mark.parametrize(
    "version", ["0.14.0", "v0.14.0", "1", "v1.2", "1.2.3-rc.1+build.5", "0.0.0-0alpha"]
)
def test_parse_modelfile_accepts_semver_requires(version: str) -> None:
    assert parsed(f"FROM x\nREQUIRES {version}")[1] == ("requires", "", version, 2)


# --- parsing: errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("FOO x", INVALID_COMMAND, 1),
        ("FROM x\n\nBADCOMMAND param1 value1\n", INVALID_COMMAND, 3),
        ("FROM:x", INVALID_COMMAND, 1),
        ("FROM x\nSYSTEM\n", INVALID_COMMAND, 2),
        ("1FROM x", INVALID_COMMAND, 1),
        ("FRÖM x", INVALID_COMMAND, 1),
        ("FROM x\n  SYSTEM-PROMPT y", INVALID_COMMAND, 2),
        ('FROM x\n"SYSTEM" y', INVALID_COMMAND, 2),
        ("FROM x\n\x00SYSTEM y", INVALID_COMMAND, 2),
        ("FROM x\nMESSAGE tool hi", INVALID_ROLE, 2),
        ("FROM x\nMESSAGE User hi", INVALID_ROLE, 2),
        ("FROM x\nMESSAGE  user hi", INVALID_ROLE, 2),
        ("FROM x\nMESSAGE user\nhi", "unexpected EOF", 2),
        ("FROM x\nMESSAGE user", "unexpected EOF", 2),
        ("FROM x\nPARAMETER temp-x 1", "unexpected EOF", 2),
        ("FROM x\nPARAMETER stop\n", "unexpected EOF", 2),
        ("FROM x\nPARAMETER stop", "unexpected EOF", 2),
        ("FROM x\nSYSTEM", "unexpected EOF", 2),
        ('FROM x\nSYSTEM "abc', "unexpected EOF", 2),
        ('FROM x\nSYSTEM "abc\n\nLICENSE y\n', "unexpected EOF", 2),
        ('FROM x\n\nTEMPLATE """abc"\n', "unexpected EOF", 3),
        ('FROM x\nTEMPLATE """""', "unexpected EOF", 2),
        ('FROM x\nSYSTEM "', "unexpected EOF", 2),
        ("FROM x\nREQUIRES 1.02.0", INVALID_REQUIRES, 2),
        ("FROM x\nREQUIRES latest", INVALID_REQUIRES, 2),
        ("FROM x\nREQUIRES 1.2-pre", INVALID_REQUIRES, 2),
        ("FROM x\nREQUIRES V1.0.0", INVALID_REQUIRES, 2),
        ("FROM x\nREQUIRES 1.0.0-", INVALID_REQUIRES, 2),
        ("FROM x\nREQUIRES 1.0.0-01", INVALID_REQUIRES, 2),
        ("FROM x\nREQUIRES ", INVALID_REQUIRES, 2),
        ("", "no FROM line", 0),
        ("# just a comment\n\n", "no FROM line", 0),
        ("SYSTEM hello\nLICENSE MIT", "no FROM line", 0),
    ],
)
def test_parse_modelfile_rejects_bad_input(text: str, message: str, line: int) -> None:
    with pytest.raises(ModelfileError) as caught:
        parse_modelfile(text)
    assert (caught.value.message, caught.value.line) == (message, line)
    assert str(caught.value) == (f"{message} (line {line})" if line else message)


# --- meaning -------------------------------------------------------------------------------


def spec_of(text: str) -> CreateSpec:
    return to_create_spec(parse_modelfile(text))


def test_to_create_spec_collects_every_instruction() -> None:
    spec = spec_of(
        "FROM llama3.2\n"
        "FROM ./mmproj.gguf\n"
        "ADAPTER ./a.gguf\n"
        "ADAPTER ./b.gguf\n"
        "DRAFT ./small.gguf\n"
        "TEMPLATE first\n"
        'TEMPLATE """{{ .Prompt }}"""\n'
        "SYSTEM Be brief.\n"
        "RENDERER r\n"
        "PARSER p\n"
        "REQUIRES v0.14.0\n"
        "LICENSE MIT\n"
        'LICENSE """line 1\nline 2"""\n'
        "MESSAGE user hi\n"
        "MESSAGE assistant hello\n"
        "PARAMETER temperature 0.5\n"
        "PARAMETER temperature 0.7\n"
        "PARAMETER stop <|eot_id|>\n"
        "PARAMETER num_ctx 8192\n"
        'PARAMETER stop "<|end|>"\n'
        "PARAMETER use_mmap false\n"
        "PARAMETER mirostat 2\n"
    )
    assert spec == CreateSpec(
        froms=["llama3.2", "./mmproj.gguf"],
        adapters=["./a.gguf", "./b.gguf"],
        drafts=["./small.gguf"],
        template="{{ .Prompt }}",
        system="Be brief.",
        license=["MIT", "line 1\nline 2"],
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ],
        parameters={
            "temperature": 0.7,
            "stop": ["<|eot_id|>", "<|end|>"],
            "num_ctx": 8192,
            "use_mmap": False,
        },
        warnings=["parameter mirostat is deprecated"],
        requires="0.14.0",
        renderer="r",
        parser="p",
    )


def test_to_create_spec_of_a_bare_from_is_empty() -> None:
    assert spec_of("FROM x") == CreateSpec(froms=["x"])


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("FROM x\n\nPARAMETER Temperature 1\n", "unknown parameter 'Temperature'", 3),
        ("FROM x\nPARAMETER tfs_z 1\n", "unknown parameter 'tfs_z'", 2),
        ("FROM x\nPARAMETER  num_ctx 1\n", "unknown parameter ''", 2),
        ("FROM x\nPARAMETER num_ctx 4k\n", "invalid int value [4k]", 2),
        ("FROM x\n# c\nPARAMETER num_ctx 2048.0", "invalid int value [2048.0]", 3),
        ("FROM x\nPARAMETER top_p high\n", "invalid float value [high]", 2),
        ("FROM x\nPARAMETER use_mmap yes\n", "invalid bool value [yes]", 2),
        ('FROM x\nPARAMETER seed """\n12"""', "invalid int value [\n12]", 2),
    ],
)
def test_to_create_spec_reports_bad_parameters_with_their_line(
    text: str, message: str, line: int
) -> None:
    with pytest.raises(ModelfileError) as caught:
        spec_of(text)
    assert (caught.value.message, caught.value.line) == (message, line)


def test_to_create_spec_checks_requires_of_built_instructions() -> None:
    instructions = [Instruction("from", "", "x", 1), Instruction("requires", "", "soon", 2)]
    with pytest.raises(ModelfileError) as caught:
        to_create_spec(instructions)
    assert (caught.value.message, caught.value.line) == (INVALID_REQUIRES, 2)


# --- quoting and rendering -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        # Ollama's rules.
        ("plain value", "plain value"),
        ("<|eot_id|>", "<|eot_id|>"),
        ("", ""),
        ("a\nb", '"a\nb"'),
        (" lead", '" lead"'),
        ("trail ", '"trail "'),
        ('a "quoted" word', 'a "quoted" word'),
        ('say\n"hi"', '"""say\n"hi""""'),
        (' "x"', '""" "x""""'),
        # Beyond Ollama: forms that would not read back bare.
        ('"quoted"', '""""quoted""""'),
        ("\tlead", '"\tlead"'),
        ("trail\t", '"trail\t"'),
        ("a\rb", '"a\rb"'),
    ],
)
def test_quote_wraps_only_when_needed(value: str, quoted: str) -> None:
    assert quote(value) == quoted


def test_render_modelfile_matches_show_output() -> None:
    text = render_modelfile(
        model_from="/models/blobs/sha256-aaa",
        adapters=["/models/blobs/sha256-bbb"],
        drafts=["/models/blobs/sha256-ddd"],
        projectors=["/models/blobs/sha256-ccc"],
        template="{{ .System }}\nUSER: {{ .Prompt }}\nASSISTANT: ",
        system="You are helpful.",
        renderer="qwen3-coder",
        parser="qwen3-coder",
        requires="0.14.0",
        parameters={"temperature": 1.0, "stop": ["USER:", "</s>"], "num_ctx": 4096, "top_p": 0.95},
        licenses=["MIT", 'the "license"\ntext'],
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": " hello"}],
        short_name="llava:latest",
    )
    assert text == (
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        "# FROM llava:latest\n"
        "\n"
        "FROM /models/blobs/sha256-aaa\n"
        "ADAPTER /models/blobs/sha256-bbb\n"
        "DRAFT /models/blobs/sha256-ddd\n"
        "FROM /models/blobs/sha256-ccc\n"
        'TEMPLATE "{{ .System }}\nUSER: {{ .Prompt }}\nASSISTANT: "\n'
        "SYSTEM You are helpful.\n"
        "RENDERER qwen3-coder\n"
        "PARSER qwen3-coder\n"
        "REQUIRES 0.14.0\n"
        "PARAMETER num_ctx 4096\n"
        "PARAMETER stop USER:\n"
        "PARAMETER stop </s>\n"
        "PARAMETER temperature 1\n"
        "PARAMETER top_p 0.95\n"
        "LICENSE MIT\n"
        'LICENSE """the "license"\ntext"""\n'
        "MESSAGE user hi\n"
        'MESSAGE assistant " hello"\n'
    )


def test_render_modelfile_defaults_template_and_skips_empty_fields() -> None:
    text = render_modelfile(
        model_from="/blobs/m",
        template=None,
        system=None,
        parameters={"seed": None, "use_mmap": True},
        licenses=[],
        messages=[],
        requires=None,
    )
    assert text.splitlines()[2:] == [
        "# FROM <model name>",
        "",
        "FROM /blobs/m",
        "TEMPLATE {{ .Prompt }}",
        "PARAMETER use_mmap true",
    ]
    assert text.endswith("\n")


# --- round trip: render, then parse --------------------------------------------------------

TRICKY_VALUES = [
    "plain",
    "",
    " leading space",
    "trailing space ",
    "   ",
    "\ttab\t",
    "multi\nline\n",
    "\nstarts with newline",
    "line one\r\nline two",
    "cr\ronly",
    'has "quotes" inside',
    '"fully quoted"',
    '"',
    '""',
    '"""',
    'ends with quote"',
    'multi\nline with "quotes"',
    'multi\n"quoted line"\nend',
    "# looks like a comment",
    "line\n# comment-like line\n",
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}",
    "unicode é 中 😀",
    "  \n  ",
]


def round_trip(value: str) -> CreateSpec:
    text = render_modelfile(
        model_from="/blobs/model",
        adapters=[value] if value.strip() else [],
        projectors=["/blobs/projector"],
        template=value,
        system=value or None,
        parameters={"stop": [value, "<|eot_id|>"], "temperature": 0.7, "num_ctx": 2048},
        licenses=[value],
        messages=[{"role": "user", "content": value}],
        requires="0.14.0",
        short_name="m:latest",
        renderer=value or None,
    )
    return to_create_spec(parse_modelfile(text))


def expected_round_trip(value: str) -> CreateSpec:
    return CreateSpec(
        froms=["/blobs/model", "/blobs/projector"],
        adapters=[value] if value.strip() else [],
        template=value,
        system=value or None,
        license=[value],
        messages=[{"role": "user", "content": value}],
        parameters={"stop": [value, "<|eot_id|>"], "temperature": 0.7, "num_ctx": 2048},
        requires="0.14.0",
        renderer=value or None,
    )


@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_render_modelfile_round_trips_tricky_values(value: str) -> None:
    assert round_trip(value) == expected_round_trip(value)


def closes_early(value: str) -> bool:
    """Whether a triple-quoted value has a line ending in ``\"\"\"`` (no quoting can hold it)."""
    if '"' not in value:
        return False
    for index, char in enumerate(value):
        if char in "\r\n":
            head = ('"""' + value[:index]).strip(" \t\r\n")
            if len(head) >= 6 and head.endswith('"""'):
                return True
    return False


def test_render_modelfile_round_trips_generated_values() -> None:
    pieces = ["a", "b", " ", "\t", "\n", "\r", "\r\n", '"', "#", "é", "{{", "}}", "'", ":"]
    rng = random.Random(20240722)
    checked = 0
    while checked < 400:
        value = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        if closes_early(value):
            continue
        assert round_trip(value) == expected_round_trip(value), repr(value)
        checked += 1


def test_render_modelfile_round_trips_typed_parameters() -> None:
    parameters: dict[str, object] = {
        "num_ctx": 131072,
        "seed": -1,
        "temperature": 1.0,
        "top_p": 0.9,
        "min_p": 1e-05,
        "repeat_penalty": 1.1,
        "use_mmap": False,
        "num_parallel": 4,
        "stop": ["<|im_start|>", "<|im_end|>", " spaced "],
    }
    text = render_modelfile(
        model_from="m", template=None, system=None, parameters=parameters, licenses=[], messages=[]
    )
    assert to_create_spec(parse_modelfile(text)).parameters == parameters
