"""How ``apply`` and ``destroy`` report as they go: a progress bar on a terminal (rich), plain
lines otherwise (a log, CI), and a summary either way."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    """One phase at a time: :meth:`phase` names it and how many steps it has, :meth:`step` is
    told each one done.  ``bar`` None: a bar when ``stream`` is a terminal."""

    def __init__(self, stream: TextIO | None = None, bar: bool | None = None):
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self._rich = None
        self._task = None
        self._label = ""

    def __enter__(self) -> Progress:
        if self.bar:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as Bar

            console = Console(file=self.stream)
            self._rich = Bar(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), console=console, transient=True)  # fmt: skip
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()

    def phase(self, label: str, total: int) -> None:
        self._label = label
        if self._rich is not None:
            self._task = self._rich.add_task(label, total=total)
        else:
            print(f"{label}: {total}", file=self.stream, flush=True)

    def step(self, name: str) -> None:
        if self._rich is not None and self._task is not None:
            self._rich.advance(self._task)
        else:
            print(f"  {self._label}: {name}", file=self.stream, flush=True)

    def say(self, text: str) -> None:
        if self._rich is not None:
            self._rich.console.print(text)
        else:
            print(text, file=self.stream, flush=True)
