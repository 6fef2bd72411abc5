"""The `corral` CLI against a fake API on httpx.MockTransport; REPL grammar as pure functions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from cli.__main__ import client_version, main
from cli.client import Client, ShowResponse
from cli.commands import AppState
from cli.repl import (
    HELP,
    HELP_PARAMETERS,
    HELP_SET,
    HELP_SHOW,
    Clear,
    Entry,
    Exit,
    InputBuffer,
    ListModels,
    Load,
    Notice,
    Save,
    SetMode,
    SetParameter,
    SetSystem,
    SetThink,
    Show,
    parse_command,
)
from cli.session import ChatSession, RunOptions

NOW = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)
DIGEST_A = "a" * 64
DIGEST_B = "b" * 64

Reply = tuple[int, bytes, str]


def json_reply(body: object, status: int = 200) -> Reply:
    return status, json.dumps(body).encode(), "application/json"


def ndjson_reply(*lines: object) -> Reply:
    return (
        200,
        b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        "application/x-ndjson",
    )


def error_reply(status: int, message: str) -> Reply:
    return json_reply({"error": message}, status)


EMPTY: Reply = (200, b"", "text/plain")


class FakeServer:
    """Answers (method, path) with queued replies (the last one repeats); records requests."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], list[Reply]] = {}
        self.seen: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, str, Any]] = []
        self.uploads: dict[str, bytes] = {}

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.replies[(method, path)] = list(replies)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = (request.method, request.url.path)
        self.seen.append(key)
        content = request.read()
        if key[1].startswith("/api/blobs/") and request.method == "POST":
            self.uploads[key[1].removeprefix("/api/blobs/")] = content
        else:
            self.bodies.append((*key, json.loads(content) if content else None))
        queue = self.replies.get(key)
        if not queue:
            return httpx.Response(404, text="404 page not found")
        status, body, content_type = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(status, content=body, headers={"Content-Type": content_type})

    def body(self, method: str, path: str) -> Any:
        return [b for m, p, b in self.bodies if (m, p) == (method, path)][-1]


def invoke(
    server: Callable[[httpx.Request], httpx.Response], args: list[str], stdin: str | None = None
) -> Result:
    state = AppState(
        make_client=lambda: Client("http://corral.test", transport=httpx.MockTransport(server)),
        now=lambda: NOW,
    )
    return CliRunner().invoke(main, args, obj=state, input=stdin)


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def test_cli_list_prints_table(server: FakeServer) -> None:
    models = [
        {
            "name": "smollm2:135m",
            "digest": DIGEST_A,
            "size": 101_000_000,
            "modified_at": "2025-01-01T12:00:00Z",
        },
        {
            "name": "Tiny/model:latest",
            "digest": DIGEST_B,
            "size": 4_700_000_000,
            "modified_at": "2025-01-15T11:55:00.123456789+00:00",
        },
    ]
    server.on("GET", "/api/tags", json_reply({"models": models}))
    result = invoke(server, ["list"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "NAME                 ID              SIZE      MODIFIED\n"
        "smollm2:135m         aaaaaaaaaaaa    101 MB    2 weeks ago\n"
        "Tiny/model:latest    bbbbbbbbbbbb    4.7 GB    4 minutes ago\n"
    )
    filtered = invoke(server, ["ls", "tiny"])
    assert filtered.stdout.splitlines()[1:] == [
        "Tiny/model:latest    bbbbbbbbbbbb    4.7 GB    4 minutes ago"
    ]


def test_cli_ps_prints_table(server: FakeServer) -> None:
    models = [
        {
            "name": "big:latest",
            "digest": DIGEST_A,
            "size": 6_000_000_000,
            "size_vram": 3_000_000_000,
            "expires_at": "2318-01-01T00:00:00Z",
            "context_length": 8192,
        },
        {
            "name": "small:latest",
            "digest": DIGEST_B,
            "size": 400_000_000,
            "size_vram": 0,
            "expires_at": "2025-01-15T12:04:30Z",
            "context_length": 4096,
        },
        {
            "name": "gone:latest",
            "digest": DIGEST_B,
            "size": 1_000,
            "size_vram": 1_000,
            "expires_at": "2025-01-15T11:00:00Z",
            "context_length": 2048,
        },
    ]
    server.on("GET", "/api/ps", json_reply({"models": models}))
    result = invoke(server, ["ps"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "NAME            ID              SIZE      PROCESSOR          CONTEXT    UNTIL\n"
        "big:latest      aaaaaaaaaaaa    6 GB      50%/50% CPU/GPU    8192       Forever\n"
        "small:latest    bbbbbbbbbbbb    400 MB    100% CPU           4096       "
        "4 minutes from now\n"
        "gone:latest     bbbbbbbbbbbb    1 KB      100% GPU           2048       Stopping...\n"
    )
    assert (
        invoke(server, ["ps", "Big"]).stdout
        == "NAME    ID    SIZE    PROCESSOR    CONTEXT    UNTIL\n"
    )


SHOW = {
    "details": {"family": "llama", "parameter_size": "135M", "quantization_level": "Q4_1"},
    "model_info": {
        "general.architecture": "llama",
        "general.parameter_count": 134515008,
        "llama.context_length": 8192,
        "llama.embedding_length": 576,
    },
    "capabilities": ["completion", "tools"],
    "parameters": 'stop                           "<|im_end|>"\ntemperature                    0.2',
    "system": "You are helpful.\n\nBe brief.\nThird line.",
    "license": "Apache 2.0",
    "template": "{{ .Prompt }}",
    "modelfile": "FROM /blobs/sha256-x\n",
}


def test_cli_show_prints_sections(server: FakeServer) -> None:
    server.on("POST", "/api/show", json_reply(SHOW))
    result = invoke(server, ["show", "smollm2:135m"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "  Model\n"
        "    architecture        llama\n"
        "    parameters          135M\n"
        "    context length      8192\n"
        "    embedding length    576\n"
        "    quantization        Q4_1\n"
        "\n"
        "  Capabilities\n"
        "    completion\n"
        "    tools\n"
        "\n"
        "  Parameters\n"
        '    stop           "<|im_end|>"\n'
        "    temperature    0.2\n"
        "\n"
        "  System\n"
        "    You are helpful.\n"
        "    Be brief.\n"
        "    ...\n"
        "\n"
        "  License\n"
        "    Apache 2.0\n"
        "\n"
    )
    assert server.body("POST", "/api/show") == {"model": "smollm2:135m", "verbose": False}


@pytest.mark.parametrize(
    ("flag", "stdout"),
    [
        ("--license", "Apache 2.0\n"),
        ("--modelfile", "FROM /blobs/sha256-x\n\n"),
        ("--parameters", SHOW["parameters"] + "\n"),  # type: ignore[operator]
        ("--system", SHOW["system"]),
        ("--template", "{{ .Prompt }}"),
    ],
)
def test_cli_show_single_field_prints_it_raw(server: FakeServer, flag: str, stdout: str) -> None:
    server.on("POST", "/api/show", json_reply(SHOW))
    result = invoke(server, ["show", "m", flag])
    assert result.exit_code == 0, result.output
    assert result.stdout == stdout


def test_cli_show_refuses_two_field_flags(server: FakeServer) -> None:
    result = invoke(server, ["show", "m", "--system", "--license"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: only one of '--license'")
    assert server.seen == []


def test_cli_error_is_one_line_without_traceback(server: FakeServer) -> None:
    server.on("POST", "/api/show", error_reply(404, "model 'nope:latest' not found"))
    result = invoke(server, ["show", "nope"])
    assert result.exit_code == 1
    assert result.stderr == "Error: model 'nope:latest' not found\n"
    assert "Traceback" not in result.output


def test_cli_unreachable_server_names_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = invoke(refuse, ["list"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: could not connect to corral server at http://corral.test, is it running?\n"
    )


def test_cli_version_reports_server_and_client(server: FakeServer) -> None:
    server.on("GET", "/api/version", json_reply({"version": "9.9.9"}))
    result = invoke(server, ["--version"])
    assert result.exit_code == 0
    assert (
        result.stdout == f"corral version is 9.9.9\nWarning: client version is {client_version()}\n"
    )

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    offline = invoke(refuse, ["-v"])
    assert offline.stdout == (
        "Warning: could not connect to a running corral instance\n"
        f"Warning: client version is {client_version()}\n"
    )


def _modelfile(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "weights.gguf").write_bytes(b"GGUF model bytes")
    (folder / "lora.gguf").write_bytes(b"GGUF adapter bytes")
    path = folder / "Modelfile"
    path.write_text(text)
    return path


def test_cli_create_uploads_only_missing_blobs(server: FakeServer, tmp_path: Path) -> None:
    modelfile = _modelfile(
        tmp_path,
        "FROM ./weights.gguf\nADAPTER lora.gguf\nPARAMETER temperature 0.5\n"
        "PARAMETER stop <|end|>\nSYSTEM be nice\nMESSAGE user hi\nLICENSE MIT\n",
    )
    model_digest = "sha256:" + hashlib.sha256(b"GGUF model bytes").hexdigest()
    lora_digest = "sha256:" + hashlib.sha256(b"GGUF adapter bytes").hexdigest()
    server.on("HEAD", f"/api/blobs/{model_digest}", EMPTY)
    server.on("HEAD", f"/api/blobs/{lora_digest}", (404, b"", "text/plain"))
    server.on("POST", f"/api/blobs/{lora_digest}", (201, b"", "text/plain"))
    server.on(
        "POST", "/api/create", ndjson_reply({"status": "parsing GGUF"}, {"status": "success"})
    )
    result = invoke(server, ["create", "mine", "-f", str(modelfile)])
    assert result.exit_code == 0, result.output
    assert server.seen == [
        ("HEAD", f"/api/blobs/{model_digest}"),
        ("HEAD", f"/api/blobs/{lora_digest}"),
        ("POST", f"/api/blobs/{lora_digest}"),
        ("POST", "/api/create"),
    ]
    assert server.uploads == {lora_digest: b"GGUF adapter bytes"}
    assert server.body("POST", "/api/create") == {
        "model": "mine",
        "stream": True,
        "files": {"weights.gguf": model_digest},
        "adapters": {"lora.gguf": lora_digest},
        "system": "be nice",
        "license": ["MIT"],
        "messages": [{"role": "user", "content": "hi"}],
        "parameters": {"temperature": 0.5, "stop": ["<|end|>"]},
    }
    assert "parsing GGUF" in result.stderr and "success" in result.stderr


def test_cli_create_from_a_model_name(server: FakeServer, tmp_path: Path) -> None:
    modelfile = _modelfile(tmp_path, "FROM llama3.2:1b\nTEMPLATE {{ .Prompt }}\n")
    server.on("POST", "/api/create", ndjson_reply({"status": "success"}))
    result = invoke(server, ["create", "mine", "--file", str(modelfile)])
    assert result.exit_code == 0, result.output
    assert server.seen == [("POST", "/api/create")]
    assert server.body("POST", "/api/create") == {
        "model": "mine",
        "stream": True,
        "from": "llama3.2:1b",
        "template": "{{ .Prompt }}",
    }


def test_cli_create_rejects_an_invalid_name(server: FakeServer, tmp_path: Path) -> None:
    modelfile = _modelfile(tmp_path, "FROM weights.gguf\n")
    result = invoke(server, ["create", "bad/na:me:x", "-f", str(modelfile)])
    assert result.exit_code == 1
    assert result.stderr == "Error: invalid model name: bad/na:me:x\n"
    assert server.seen == []


def test_cli_create_reports_a_modelfile_error(server: FakeServer, tmp_path: Path) -> None:
    modelfile = _modelfile(tmp_path, "FROM weights.gguf\nPARAMETER nope 1\n")
    result = invoke(server, ["create", "mine", "-f", str(modelfile)])
    assert result.exit_code == 1
    assert result.stderr == "Error: unknown parameter 'nope' (line 2)\n"


def test_cli_create_reports_an_error_line_mid_stream(server: FakeServer, tmp_path: Path) -> None:
    modelfile = _modelfile(tmp_path, "FROM base\n")
    server.on("POST", "/api/create", ndjson_reply({"status": "pulling"}, {"error": "boom"}))
    result = invoke(server, ["create", "mine", "-f", str(modelfile)])
    assert result.exit_code == 1
    assert result.stderr.endswith("Error: boom\n")


def test_cli_cp_and_rm_print_what_they_did(server: FakeServer) -> None:
    server.on("POST", "/api/copy", EMPTY)
    server.on("POST", "/api/generate", ndjson_reply({"done": True, "done_reason": "unload"}))
    server.on("DELETE", "/api/delete", EMPTY)
    copied = invoke(server, ["cp", "a", "b:2"])
    assert copied.stdout == "copied 'a' to 'b:2'\n"
    assert server.body("POST", "/api/copy") == {"source": "a", "destination": "b:2"}
    removed = invoke(server, ["rm", "a", "b:2"])
    assert removed.exit_code == 0, removed.output
    assert removed.stdout == "deleted 'a'\ndeleted 'b:2'\n"
    assert [b for m, p, b in server.bodies if p != "/api/copy"] == [
        {"model": "a", "keep_alive": 0},
        {"model": "a"},
        {"model": "b:2", "keep_alive": 0},
        {"model": "b:2"},
    ]


def test_cli_rm_ignores_a_server_without_generate(server: FakeServer) -> None:
    server.on("DELETE", "/api/delete", EMPTY)
    result = invoke(server, ["rm", "a"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "deleted 'a'\n", "")


def test_cli_stop_unknown_model(server: FakeServer) -> None:
    server.on("POST", "/api/generate", error_reply(404, "model 'x' not found"))
    result = invoke(server, ["stop", "x"])
    assert result.exit_code == 1
    assert result.stderr == 'Error: couldn\'t find model "x" to stop\n'


def _chat_model(server: FakeServer, *, thinking: bool = False) -> None:
    capabilities = ["completion", "thinking"] if thinking else ["completion"]
    server.on("POST", "/api/show", json_reply({"capabilities": capabilities}))


FINAL = {
    "done": True,
    "response": "",
    "total_duration": 2_500_000_000,
    "prompt_eval_count": 4,
    "prompt_eval_duration": 100_000_000,
    "eval_count": 10,
    "eval_duration": 2_000_000_000,
}


def test_cli_run_streams_generate_with_piped_stdin(server: FakeServer) -> None:
    _chat_model(server)
    server.on(
        "POST", "/api/generate", ndjson_reply({"response": "Hello"}, {"response": " world"}, FINAL)
    )
    result = invoke(server, ["run", "m", "what", "is", "this?"], stdin="some notes\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hello world\n\n"
    assert result.stderr == ""
    assert server.body("POST", "/api/generate") == {
        "model": "m",
        "stream": True,
        "prompt": "some notes\n what is this?",
    }


def test_cli_run_verbose_prints_stats_to_stderr(server: FakeServer) -> None:
    _chat_model(server)
    server.on("POST", "/api/generate", ndjson_reply({"response": "Hi"}, FINAL))
    result = invoke(
        server, ["run", "m", "hi", "--verbose", "--keepalive", "10m", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hi\n\n"
    assert result.stderr == (
        "total duration:       2.5s\n"
        "prompt eval count:    4 token(s)\n"
        "prompt eval duration: 100ms\n"
        "prompt eval rate:     40.00 tokens/s\n"
        "eval count:           10 token(s)\n"
        "eval duration:        2s\n"
        "eval rate:            5.00 tokens/s\n"
    )
    body = server.body("POST", "/api/generate")
    assert (body["keep_alive"], body["format"]) == ("10m", "json")


def test_cli_run_shows_thinking_then_answer(server: FakeServer) -> None:
    _chat_model(server, thinking=True)
    server.on(
        "POST",
        "/api/generate",
        ndjson_reply({"thinking": "hmm", "response": ""}, {"response": "42"}, {"done": True}),
    )
    result = invoke(server, ["run", "m", "q"])
    assert result.stdout == "Thinking...\nhmm\n...done thinking.\n\n42\n\n"
    assert server.body("POST", "/api/generate")["think"] is True
    hidden = invoke(server, ["run", "m", "q", "--hidethinking"])
    assert hidden.stdout == "42\n\n"


@pytest.mark.parametrize(
    ("args", "think"),
    [(["--think"], True), (["--think=high"], "high"), (["--think=false"], False), ([], None)],
)
def test_cli_run_think_flag(server: FakeServer, args: list[str], think: object) -> None:
    _chat_model(server, thinking=True)
    server.on("POST", "/api/generate", ndjson_reply({"done": True}))
    result = invoke(server, ["run", "m", *args, "why", "blue"])
    assert result.exit_code == 0, result.output
    body = server.body("POST", "/api/generate")
    assert body["prompt"] == "why blue"
    assert body["think"] == (True if think is None else think)


def test_cli_run_think_on_a_model_without_it_warns(server: FakeServer) -> None:
    _chat_model(server)
    server.on("POST", "/api/generate", ndjson_reply({"done": True}))
    result = invoke(server, ["run", "m", "--think", "q"])
    assert result.stderr == 'warning: model "m" does not support thinking output\n'
    assert "think" not in server.body("POST", "/api/generate")
    bad = invoke(server, ["run", "m", "--think=huge", "q"])
    assert bad.exit_code == 1
    assert bad.stderr.startswith('Error: invalid value for --think: "huge"')


def test_cli_run_pulls_a_missing_model(server: FakeServer) -> None:
    server.on(
        "POST",
        "/api/show",
        error_reply(404, "model 'm' not found"),
        json_reply({"capabilities": ["completion"]}),
    )
    layer = {
        "status": "pulling 0123456789ab",
        "digest": "sha256:" + "0123456789ab" * 5 + "0123",
        "total": 100,
    }
    server.on(
        "POST",
        "/api/pull",
        ndjson_reply(
            {"status": "pulling manifest"},
            layer,
            {**layer, "completed": 100},
            {"status": "success"},
        ),
    )
    server.on("POST", "/api/generate", ndjson_reply({"response": "ok"}, {"done": True}))
    result = invoke(server, ["run", "m", "q"])
    assert result.exit_code == 0, result.output
    assert [p for _, p in server.seen] == ["/api/show", "/api/pull", "/api/show", "/api/generate"]
    assert result.stderr == "pulling manifest\npulling 0123456789ab\nsuccess\n"
    assert result.stdout == "ok\n\n"


def test_cli_run_reports_a_failed_pull(server: FakeServer) -> None:
    server.on("POST", "/api/show", error_reply(404, "model 'm' not found"))
    server.on(
        "POST",
        "/api/pull",
        ndjson_reply(
            {"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}
        ),
    )
    result = invoke(server, ["run", "m", "q"])
    assert result.exit_code == 1
    assert result.stderr.endswith("Error: pull model manifest: file does not exist\n")


def test_cli_run_error_mid_stream_is_one_line(server: FakeServer) -> None:
    _chat_model(server)
    server.on(
        "POST", "/api/generate", ndjson_reply({"response": "par"}, {"error": "worker crashed"})
    )
    result = invoke(server, ["run", "m", "q"])
    assert result.exit_code == 1
    assert result.stdout == "par"
    assert result.stderr == "Error: worker crashed\n"


def test_cli_run_embedding_model_prints_vector(server: FakeServer) -> None:
    server.on("POST", "/api/show", json_reply({"capabilities": ["embedding"]}))
    server.on("POST", "/api/embed", json_reply({"embeddings": [[0.5, -0.25]]}))
    result = invoke(server, ["run", "e", "text"])
    assert result.stdout == "[0.5,-0.25]\n"
    assert server.body("POST", "/api/embed") == {"model": "e", "input": "text"}


def test_cli_pull_shows_statuses(server: FakeServer) -> None:
    server.on(
        "POST", "/api/pull", ndjson_reply({"status": "pulling manifest"}, {"status": "success"})
    )
    result = invoke(server, ["pull", "m", "--insecure"])
    assert result.exit_code == 0, result.output
    assert result.stderr == "pulling manifest\nsuccess\n"
    assert server.body("POST", "/api/pull") == {"model": "m", "insecure": True, "stream": True}


@pytest.mark.parametrize(
    ("lines", "entry"),
    [
        (["hello"], Entry("hello")),
        (['"""abc"""'], Entry("abc", quoted=True)),
        (['"""', "one", "two", '"""'], Entry("\none\ntwo\n", quoted=True)),
        (['"""first', "second", 'third"""'], Entry("first\nsecond\nthird", quoted=True)),
        (['"""/not a command', 'x"""'], Entry("/not a command\nx", quoted=True)),
        (['/set system """be', 'brief"""'], Entry("/set system be\nbrief")),
        (['/set system """one line"""'], Entry("/set system one line")),
    ],
)
def test_input_buffer_joins_multiline_blocks(lines: list[str], entry: Entry) -> None:
    buffer = InputBuffer()
    for line in lines[:-1]:
        assert buffer.feed(line) is None
        assert buffer.continuing
    assert buffer.feed(lines[-1]) == entry
    assert not buffer.continuing


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("/bye", Exit()),
        ("/exit", Exit()),
        ("/?", Notice(HELP)),
        ("/help set", Notice(HELP_SET)),
        ("/? /show", Notice(HELP_SHOW)),
        ("/list", ListModels()),
        ("/clear", Clear()),
        ("/load other:1b", Load("other:1b")),
        ("/load", Notice("Usage:\n  /load <modelname>")),
        ("/save mine", Save("mine")),
        ("/show info", Show("info")),
        ("/show nothing", Notice("Unknown command '/show nothing'. Type /? for help")),
        ("/show", Notice(HELP_SHOW)),
        ("/set", Notice(HELP_SET)),
        ("/set parameter temperature 0.7", SetParameter("temperature", 0.7, "0.7")),
        ("/set parameter stop a b", SetParameter("stop", ["a", "b"], "a, b")),
        ("/set parameter num_ctx", Notice(HELP_PARAMETERS)),
        ("/set parameter num_ctx big", Notice("Couldn't set parameter: 'invalid int value [big]'")),
        ("/set system  you   are terse ", SetSystem("you are terse")),
        ("/set system line one\nline two", SetSystem("line one\nline two")),
        ("/set format json", SetMode("format")),
        (
            "/set format yaml",
            Notice("Invalid or missing format. For 'json' mode use '/set format json'"),
        ),
        ("/set noformat", SetMode("noformat")),
        ("/set verbose", SetMode("verbose")),
        ("/set nowordwrap", SetMode("nowordwrap")),
        ("/set think", SetThink(True, "")),
        ("/set think high", SetThink("high", "high")),
        ("/set nothink", SetMode("nothink")),
        ("/set colour", Notice("Unknown command '/set colour'. Type /? for help")),
        ("/x", Notice("Unknown command '/x'. Type /? for help")),
    ],
)
def test_parse_command(line: str, command: object) -> None:
    assert parse_command(line) == command


def test_chat_session_sends_the_whole_history(server: FakeServer) -> None:
    server.on("POST", "/api/generate", ndjson_reply({"done": True, "done_reason": "load"}))
    server.on(
        "POST",
        "/api/chat",
        ndjson_reply(
            {"message": {"role": "assistant", "content": "Hi "}},
            {"message": {"role": "assistant", "content": "there"}},
            {"done": True, "eval_count": 2},
        ),
    )
    state = AppState(
        make_client=lambda: Client("http://corral.test", transport=httpx.MockTransport(server)),
        now=lambda: NOW,
    )
    info = ShowResponse(
        capabilities=["completion"],
        messages=[
            {"role": "user", "content": "stored question"},
            {"role": "assistant", "content": "stored answer"},
        ],
    )
    typed = (
        'hello\n"""two\nlines"""\n/set parameter temperature 0\n'
        "/set system be brief\n/x\nnext\n/bye\n"
    )
    with CliRunner().isolation(input=typed) as (out, _err, _both):
        ChatSession(state, RunOptions("m", keep_alive="1m"), info).run()
    stdout = out.getvalue().decode()
    assert stdout.startswith(">>> stored question\nstored answer\n\n")
    assert stdout.count("Hi there\n\n") == 3
    assert "Set parameter 'temperature' to '0'" in stdout
    assert "Set system message." in stdout
    assert "Unknown command '/x'. Type /? for help" in stdout
    assert server.body("POST", "/api/generate") == {
        "model": "m",
        "stream": True,
        "keep_alive": "1m",
    }
    chats = [b for m, p, b in server.bodies if p == "/api/chat"]
    assert [m["content"] for m in chats[0]["messages"]] == ["hello"]
    assert [m["content"] for m in chats[1]["messages"]] == ["hello", "Hi there", "two\nlines"]
    assert chats[2]["options"] == {"temperature": 0.0}
    assert [(m["role"], m["content"]) for m in chats[2]["messages"]][-2:] == [
        ("system", "be brief"),
        ("user", "next"),
    ]
