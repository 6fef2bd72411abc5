"""The Go text/template interpreter: Ollama's named templates byte for byte, and each construct."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from worker.gotemplate import GoTemplate, Record, TemplateError, TypeList
from worker.gotemplate_value import go_float, go_printf

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "go-templates"
TEMPLATES = sorted(CORPUS.glob("*.gotmpl"))
CONVERSATIONS: dict[str, list[dict[str, str]]] = (
    json.loads((CORPUS / "conversations.json").read_text()) if CORPUS.is_dir() else {}
)


def render(source: str, data: dict[str, object] | None = None) -> str:
    return GoTemplate.parse(source).execute(data or {})


def test_gotemplate_corpus_is_present() -> None:
    assert len(TEMPLATES) == 20 and len(CONVERSATIONS) == 3


@pytest.mark.parametrize("conversation", ["user", "user-assistant-user",
                                          "system-user-assistant-user"])
@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_gotemplate_renders_corpus_exactly(path: Path, conversation: str) -> None:
    messages = CONVERSATIONS[conversation]
    data = {
        "System": "\n\n".join(m["content"] for m in messages if m["role"] == "system"),
        "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages],
        "Response": "",
    }
    expected = (CORPUS / "testdata" / path.name / conversation).read_text()
    assert GoTemplate.parse(path.read_text()).execute(data) == expected


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    [
        ("{{ .A }}-{{ .A.B }}", {"A": {"B": "x"}}, "map[B:x]-x"),
        ("[{{ .Missing }}][{{ .Missing.Deeper }}]", {}, "[][]"),
        ("{{ $.A }}{{ with .B }}{{ $.A }}{{ . }}{{ end }}", {"A": "a", "B": "b"}, "aab"),
        ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", {}, "2"),
        ("{{ $x := \"\" }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}", {"L": ["p", "q"]}, "q"),
        ("{{ range $i, $v := .L }}{{ $i }}={{ $v }};{{ end }}", {"L": ["a", "b"]}, "0=a;1=b;"),
        ("{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}", {"M": {"z": 1, "a": 2}},
         "z=1;a=2;"),
        ("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}, "empty"),
        ("{{ range 3 }}{{ . }}{{ end }}", {}, "012"),
        ("{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ if eq . 4 }}{{ break }}{{ end }}"
         "{{ . }}{{ end }}", {"L": [1, 2, 3, 4, 5]}, "13"),
        ("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {"B": 1}, "b"),
        ("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {}, "c"),
        ("{{ with .A }}{{ . }}{{ else with .B }}B{{ . }}{{ else }}none{{ end }}", {"B": "x"},
         "Bx"),
        ("a  {{- .X -}}  b", {"X": "|"}, "a|b"),
        ("a \n{{- /* gone */ -}}\n b", {}, "ab"),
        ("a{{/* c */}}b", {}, "ab"),
        ("{{ \"q\\n\" }}{{ `raw\\n` }}{{ 'a' }}{{ 1.5 }}{{ -2 }}{{ true }}{{ 0x10 }}", {},
         "q\nraw\\n971.5-2true16"),
        ("{{ .S | printf \"%s!\" }}", {"S": "hi"}, "hi!"),
        ("{{ printf \"%d-%q-%v-%5s|%-3s|\" 3 \"x\" .L \"ab\" \"c\" }}", {"L": [1, "a"]},
         '3-"x"-[1 a]-   ab|c  |'),
        ("{{ print 1 2 \"a\" 3 }}|{{ println \"a\" 1 }}", {}, "1 2a3|a 1\n"),
        ("{{ len .S }} {{ len .L }} {{ len .M }}", {"S": "héllo", "L": [1], "M": {}}, "6 1 0"),
        ("{{ index .L 1 }} {{ index .M \"k\" }} {{ index .N 0 \"k\" }}",
         {"L": ["a", "b"], "M": {"k": "v"}, "N": [{"k": "w"}]}, "b v w"),
        ("{{ slice .L 1 }} {{ slice .L 0 1 }} {{ slice .S 1 3 }}", {"L": [1, 2, 3], "S": "abcd"},
         "[2 3] [1] bc"),
        ("{{ and 1 0 2 }} {{ or 0 \"\" \"x\" }} {{ and 1 2 }} {{ or 0 0 }} {{ not .A }}", {},
         "0 x 2 0 true"),
        ("{{ eq .R \"a\" \"b\" }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt \"b\" \"a\" }}"
         " {{ ge 1 2 }} {{ eq 1 1.0 }}", {"R": "b"}, "true true true true true false true"),
        ("{{ if and .A (not .B) }}yes{{ end }}", {"A": True, "B": False}, "yes"),
        ("{{ (index .L 0).Name }}", {"L": [{"Name": "n"}]}, "n"),
        ("{{ json .V }}", {"V": {"a": [1, "<b>"], "c": None}},
         '{"a":[1,"\\u003cb\\u003e"],"c":null}'),
        ("{{ if .E }}t{{ else }}f{{ end }}{{ if .Z }}t{{ else }}f{{ end }}", {"E": [], "Z": 0},
         "ff"),
        ("{{ 1e6 }} {{ 0.5 }} {{ 100.0 }}", {}, "1e+06 0.5 100"),
    ],
)
def test_gotemplate_constructs(source: str, data: dict[str, object], expected: str) -> None:
    assert render(source, data) == expected


def test_gotemplate_record_prints_json_and_struct_is_true() -> None:
    args = Record({"city": "Paris"}, {"city": "Paris"}, struct=False)
    call = Record({"Function": Record({"Name": "f", "Arguments": args}, {})}, {})
    empty_struct = Record({}, {})
    source = "{{ .C.Function.Arguments }}|{{ .C.Function.Arguments.city }}|{{ if .S }}s{{ end }}"
    assert render(source, {"C": call, "S": empty_struct}) == '{"city":"Paris"}|Paris|s'


def test_gotemplate_type_list_prints_like_ollama() -> None:
    assert render("{{ .A }}|{{ .B }}", {"A": TypeList(["string"]),
                                         "B": TypeList(["string", "null"])}) == \
        "string|[string null]"


@pytest.mark.parametrize(
    ("prop", "expected"),
    [
        ({"type": "string"}, "string"),
        ({"type": ["integer", "null"]}, "number | null"),
        ({"anyOf": [{"type": "array"}, {"type": "object"}]}, "any[] | Record<string, any>"),
        ({}, "any"),
    ],
)
def test_gotemplate_to_typescript_type(prop: dict[str, object], expected: str) -> None:
    assert render("{{ toTypeScriptType .P }}", {"P": Record({}, prop)}) == expected


def test_gotemplate_dates() -> None:
    before = datetime.date.today()
    out = render("{{ currentDate }} {{ yesterdayDate }}")
    after = datetime.date.today()
    day = datetime.timedelta(days=1)
    assert out in {f"{d.isoformat()} {(d - day).isoformat()}" for d in (before, after)}


def test_gotemplate_identifiers_are_lower_cased_fields() -> None:
    source = "{{ range .Messages }}{{ .Content }}{{ end }}{{ $.Tools }}{{ (.X).Suffix }}"
    assert GoTemplate.parse(source).identifiers() == {"messages", "content", "tools", "x",
                                                      "suffix"}


def test_gotemplate_stop_at_response_cuts_after_response_node() -> None:
    template = GoTemplate.parse(
        "{{ if .System }}S:{{ .System }} {{ end }}U:{{ .Prompt }} A:{{ .Response }}<end>{{ .X }}"
    )
    data = {"System": "sys", "Prompt": "hi", "Response": ""}
    assert template.execute(data) == "S:sys U:hi A:<end>"
    assert template.execute(data, stop_at_response=True) == "S:sys U:hi A:"


def test_gotemplate_stop_at_response_inside_a_branch() -> None:
    template = GoTemplate.parse("{{ if .Prompt }}P{{ .Response }}after{{ end }}tail")
    assert template.execute({"Prompt": "x", "Response": "r"}, stop_at_response=True) == "Pr"


def test_gotemplate_go_float_and_printf_edges() -> None:
    assert go_float(1234567.0) == "1.234567e+06"
    assert go_float(0.0001) == "0.0001"
    assert go_float(0.00001) == "1e-05"
    assert go_printf("%s %s", ["a"]) == "a %!s(MISSING)"
    assert go_printf("%.2f%%", [1.5]) == "1.50%"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{{ if .X }}open", "unexpected EOF"),
        ("text {{ end }}", "line 1, column 6: unexpected {{end}}"),
        ("a\nb {{ .X", "line 2, column 8: unclosed action"),
        ("{{ nosuch 1 }}", 'function "nosuch" not defined'),
        ("{{ break }}", "outside {{range}}"),
        ("{{ .X | }}", "missing value for command"),
        ("{{ (.X }}", "unclosed left paren"),
        ("{{/* unterminated }}", "unclosed comment"),
        ("{{ define \"x\" }}{{ end }}", "not supported"),
        ("{{ .X ) }}", "unexpected"),
    ],
)
def test_gotemplate_parse_errors_name_the_position(source: str, fragment: str) -> None:
    with pytest.raises(TemplateError, match="template: line") as info:
        GoTemplate.parse(source)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "source",
    [
        "{{ $nope }}",
        "{{ index .L 5 }}",
        "{{ .S.Field }}",
        "{{ lt 1 \"a\" }}",
        "{{ .X 1 }}",
        "{{ range .S }}{{ end }}",
        "{{ len 3 }}",
        "{{ not }}",
    ],
)
def test_gotemplate_execution_errors(source: str) -> None:
    with pytest.raises(TemplateError, match="template: "):
        GoTemplate.parse(source).execute({"L": [1], "S": "str"})
