"""Progress display for create, pull and push: a spinner per status, a byte bar per layer.

On a terminal it is a rich ``Progress``; elsewhere (a pipe, a log, a test) each new status
is printed once as a plain line, so the output stays readable in a file.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.text import Text

from cli.client import Progress as ProgressLine


class _WhileRunning(ProgressColumn):
    """A spinner for an unfinished status line, nothing once it is done."""

    def __init__(self) -> None:
        super().__init__()
        self._spinner = SpinnerColumn()

    def render(self, task: Task) -> RenderableType:
        return Text("") if task.finished else self._spinner.render(task)


class _OnlyWithTotal(ProgressColumn):
    """Shows the wrapped column only for tasks that count bytes."""

    def __init__(self, inner: ProgressColumn) -> None:
        super().__init__()
        self._inner = inner

    def render(self, task: Task) -> RenderableType:
        return self._inner.render(task) if task.fields.get("bytes") else Text("")


class ProgressView:
    """Shows progress lines until the ``with`` block ends; a new status finishes the last."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live = console.is_terminal
        self._progress = Progress(
            _WhileRunning(),
            TextColumn("{task.description}"),
            _OnlyWithTotal(TaskProgressColumn()),
            _OnlyWithTotal(BarColumn(bar_width=30)),
            _OnlyWithTotal(DownloadColumn(binary_units=False)),
            console=console,
            transient=False,
        )
        self._status: TaskID | None = None
        self._status_text = ""
        self._bars: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressView:
        if self._live:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish_status()
        if self._live:
            self._progress.stop()

    def _finish_status(self) -> None:
        if self._status is not None:
            self._progress.update(self._status, total=1, completed=1)
            self._status = None

    def status(self, text: str) -> None:
        """Show ``text`` with a spinner; the same text twice in a row is shown once."""
        if text == self._status_text:
            return
        self._finish_status()
        self._status_text = text
        if self._live:
            self._status = self._progress.add_task(text, total=None)
        else:
            self._console.print(text, markup=False)

    def bar(self, key: str, description: str, total: int, completed: int) -> None:
        """Create or move the byte bar ``key``."""
        task = self._bars.get(key)
        if task is None:
            self._finish_status()
            self._status_text = ""
            if not self._live:
                self._console.print(description, markup=False)
            task = self._progress.add_task(description, total=total, bytes=True)
            self._bars[key] = task
        self._progress.update(task, total=total, completed=completed)

    def show(self, line: ProgressLine) -> None:
        """One pull/push/create progress line: a bar when it counts a layer's bytes
        (the first update of a layer, with nothing completed yet, is skipped), else a status."""
        status = line.get("status", "")
        if line.get("digest") and line.get("total"):
            if line.get("completed"):
                self.bar(
                    line.get("digest", ""), status, line.get("total", 0), line.get("completed", 0)
                )
            return
        if status:
            self.status(status)
