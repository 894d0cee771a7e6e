"""Progress on long steps: what is happening, how far, and how long each step took."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


class CommandFailed(RuntimeError):
    pass


class Progress:
    def __init__(self, total_steps: int, out: TextIO = sys.stderr) -> None:
        self.total = total_steps
        self.done = 0
        self.out = out
        self.timings: dict[str, float] = {}

    def say(self, text: str) -> None:
        print(f"        {text}", file=self.out, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.done += 1
        print(f"[{self.done}/{self.total}] {name}...", file=self.out, flush=True)
        started = time.monotonic()
        yield
        self.timings[name] = round(time.monotonic() - started, 1)
        print(f"        done in {self.timings[name]:.1f} s", file=self.out, flush=True)

    def bytes(self, done: int, total: int, started: float) -> None:
        """One line redrawn in place: percent, MB and rate."""
        rate = done / max(time.monotonic() - started, 1e-6) / 1e6
        print(f"\r        {100 * done / max(total, 1):5.1f} %  {done / 1e6:8.0f} / {total / 1e6:.0f} MB  "
              f"{rate:6.1f} MB/s", end="" if done < total else "\n", file=self.out, flush=True)


def run(args: Sequence[str | Path], *, log: Path | None = None, relay: str | None = None,
        progress: Progress | None = None, input_text: str | None = None) -> str:
    """Run a command; its output goes to ``log`` (lines starting with ``relay`` are also shown).

    Returns stdout when there is no log. A failure raises with the command's last lines.
    """
    argv = [str(a) for a in args]
    if log is None:
        done = subprocess.run(argv, input=input_text, capture_output=True, text=True)
        if done.returncode != 0:
            raise CommandFailed(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return done.stdout
    tail: list[str] = []
    with log.open("a") as sink, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            tail = [*tail[-30:], line.rstrip()]
            if relay and progress and line.startswith(relay):
                progress.say(line.rstrip())
    if proc.returncode != 0:
        lines = "\n".join(tail)
        raise CommandFailed(f"{argv[0]} failed ({proc.returncode}); the end of {log}:\n{lines}")
    return ""
