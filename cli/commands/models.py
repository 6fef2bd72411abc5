"""Model commands: create (client-side Modelfile + blob upload), list/ls, show, cp, rm."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click
from rich.console import Console

from cli.client import ApiError, Client
from cli.commands import AppState, CommandError, pass_state
from cli.progress import ProgressView
from cli.render import format_table, human_bytes, human_time, parse_timestamp, show_sections
from registry.errors import InvalidName
from registry.modelfile import CreateSpec, parse_modelfile, to_create_spec
from registry.names import ModelName

HASH_CHUNK_BYTES = 1024 * 1024
# What a FROM directory contributes (safetensors imports), as Ollama collects it.
_DIR_PATTERNS = (
    "*.safetensors",
    "*.bin",
    "*.gguf",
    "*.json",
    "**/*.json",
    "chat_template.jinja",
    "tokenizer.model",
)
_SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


def expand_path(value: str, base_dir: Path) -> Path:
    """A FROM/ADAPTER argument as a path: ``~`` expanded, relative to the Modelfile's dir."""
    path = Path(value)
    if value.startswith("~"):
        return path.expanduser()
    return path if path.is_absolute() else base_dir / path


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def upload(client: Client, path: Path, view: ProgressView) -> str:
    """Hash ``path`` and send it as a blob unless the server already has it."""
    digest = file_digest(path)
    if not client.blob_exists(digest):
        total = path.stat().st_size
        label = f"copying file {digest}"
        view.bar(digest, label, total, 0)
        client.push_blob(digest, path, lambda sent: view.bar(digest, label, total, sent))
    return digest


def _dir_files(directory: Path) -> list[Path]:
    """The importable files of a model directory; symlinks must stay inside it."""
    root = directory.resolve()
    found: dict[Path, None] = {}
    for pattern in _DIR_PATTERNS:
        for path in sorted(directory.glob(pattern)):
            target = path.resolve()
            if not target.is_relative_to(root):
                raise CommandError(f"{path} links outside the model directory {directory}")
            if target.is_file():
                found[path] = None
    return list(found)


def _upload_named(
    client: Client, paths: list[str], base_dir: Path, view: ProgressView, what: str
) -> dict[str, str]:
    files: dict[str, str] = {}
    for value in paths:
        path = expand_path(value, base_dir)
        if not path.exists():
            raise CommandError(f"{what} file not found: {path}")
        files[path.name] = upload(client, path, view)
    return files


def create_request(
    client: Client, name: str, spec: CreateSpec, base_dir: Path, view: ProgressView
) -> dict[str, object]:
    """Upload the Modelfile's local files and build the ``/api/create`` body."""
    payload: dict[str, object] = {"model": name, "stream": True}
    files: dict[str, str] = {}
    for value in spec.froms:
        path = expand_path(value, base_dir)
        if not path.exists():
            payload["from"] = value
        elif path.is_dir():
            view.status("gathering model components")
            for item in _dir_files(path):
                files[item.relative_to(path).as_posix()] = upload(client, item, view)
        else:
            view.status("gathering model components")
            files[path.name] = upload(client, path, view)
    if files:
        payload["files"] = files
    if spec.adapters:
        payload["adapters"] = _upload_named(client, spec.adapters, base_dir, view, "adapter")
    if spec.drafts:
        payload["draft_files"] = _upload_named(client, spec.drafts, base_dir, view, "draft")
    for key in ("template", "system", "requires", "renderer", "parser"):
        if getattr(spec, key) is not None:
            payload[key] = getattr(spec, key)
    if spec.license:
        payload["license"] = list(spec.license)
    if spec.messages:
        payload["messages"] = [dict(message) for message in spec.messages]
    if spec.parameters:
        payload["parameters"] = dict(spec.parameters)
    return payload


def create_model(client: Client, err: Console, name: str, spec: CreateSpec, base_dir: Path) -> None:
    """What ``corral create`` does once the Modelfile is parsed (also used by quickstart)."""
    try:
        ModelName.parse(name)
    except InvalidName as exc:
        raise CommandError(f"invalid model name: {name}") from exc
    for warning in spec.warnings:
        err.print(f"warning: {warning}", markup=False)
    with ProgressView(err) as view:
        payload = create_request(client, name, spec, base_dir, view)
        for line in client.create(payload):
            view.show(line)


@click.command("create")
@click.argument("name")
@click.option(
    "-f",
    "--file",
    "modelfile",
    default="Modelfile",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Modelfile to build from",
)
@pass_state
def create(state: AppState, name: str, modelfile: Path) -> None:
    """Create a model from a Modelfile."""
    try:
        text = modelfile.read_bytes()
    except FileNotFoundError as exc:
        raise CommandError(f"Modelfile not found: {modelfile}") from exc
    spec = to_create_spec(parse_modelfile(text))
    create_model(state.client(), state.err, name, spec, modelfile.resolve().parent)


def list_table(client: Client, state: AppState, prefix: str | None = None) -> str:
    """The ``list`` table; ``prefix`` filters names, ignoring case."""
    rows = []
    for model in client.tags():
        name = model.get("name", "")
        if prefix and not name.lower().startswith(prefix.lower()):
            continue
        size = "-" if model.get("remote_model") else human_bytes(model.get("size", 0))
        modified = human_time(parse_timestamp(model.get("modified_at")), state.now())
        rows.append([name, model.get("digest", "")[:12], size, modified])
    return format_table(["NAME", "ID", "SIZE", "MODIFIED"], rows)


@click.command("list")
@click.argument("prefix", required=False)
@pass_state
def list_models(state: AppState, prefix: str | None) -> None:
    """List models."""
    state.out.print(list_table(state.client(), state, prefix), markup=False)


@click.command("show")
@click.argument("name")
@click.option("--license", "license_", is_flag=True, help="Show the license")
@click.option("--modelfile", is_flag=True, help="Show the Modelfile")
@click.option("--parameters", is_flag=True, help="Show the parameters")
@click.option("--system", is_flag=True, help="Show the system message")
@click.option("--template", is_flag=True, help="Show the template")
@click.option("-v", "--verbose", is_flag=True, help="Show metadata and tensors too")
@pass_state
def show(
    state: AppState,
    name: str,
    license_: bool,
    modelfile: bool,
    parameters: bool,
    system: bool,
    template: bool,
    verbose: bool,
) -> None:
    """Show information about a model."""
    chosen = [
        f
        for f, on in zip(
            _SHOW_FIELDS, (license_, modelfile, parameters, system, template), strict=True
        )
        if on
    ]
    if len(chosen) > 1:
        raise CommandError(
            "only one of '--license', '--modelfile', '--parameters', "
            "'--system', or '--template' can be specified"
        )
    info = state.client().show(name, verbose=verbose)
    if not chosen:
        state.out.print(show_sections(info, verbose=verbose), end="", markup=False)
        return
    text = str(dict(info).get(chosen[0], ""))
    state.out.print(text, end="" if chosen[0] in ("system", "template") else "\n", markup=False)


@click.command("cp")
@click.argument("source")
@click.argument("destination")
@pass_state
def copy(state: AppState, source: str, destination: str) -> None:
    """Copy a model."""
    state.client().copy(source, destination)
    state.out.print(f"copied '{source}' to '{destination}'", markup=False)


def unload(client: Client, name: str) -> None:
    """Ask the server to unload ``name`` now (``keep_alive: 0`` and no prompt)."""
    for _ in client.generate({"model": name, "keep_alive": 0}):
        pass


@click.command("rm")
@click.argument("names", nargs=-1, required=True)
@pass_state
def remove(state: AppState, names: tuple[str, ...]) -> None:
    """Remove models (unloading them first)."""
    client = state.client()
    for name in names:
        try:
            unload(client, name)
        except ApiError as exc:
            # Not loaded, unknown, or a server without /api/generate: nothing to unload.
            if exc.status not in (404, 405) and "not found" not in exc.message.lower():
                state.err.print(f"Warning: unable to stop model '{name}'", markup=False)
        client.delete(name)
        state.out.print(f"deleted '{name}'", markup=False)
