"""The real ``kiosk-ui`` window answering one real call with a touch (``screen_driver answer``), and what it shows.

Shared by the tests where a caregiver (the Python client, or Chromium) calls a
unit through a real server and agent: the window runs in its own process under
Xvfb; it writes ``idle`` when the caller may call, ``shots-done`` when its
screenshots of the call are taken (the caller may hang up), and ``result.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.harness import AgentProcess, wait_until

from .images import differing_share, load, mean_luma
from .test_screens import ARTIFACTS, ROOT
from .xvfb import kivy_env


class AnsweringScreen:
    """``with AnsweringScreen(...) as screen:`` starts the window and waits for idle; the block places the call."""

    def __init__(self, agent: AgentProcess, display: str, work: Path, name: str,
                 scenario: str = "answer", first_cue: str = "idle") -> None:
        self.agent, self.display, self.work = agent, display, work
        self.scenario, self.first_cue = scenario, first_cue
        self.out = ARTIFACTS / name
        self.log = work / "screen.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        for stale in self.out.glob("*"):
            stale.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.ui.screen_driver", self.scenario, "--state", str(self.agent.state),
                 "--out", str(self.out)],
                env=kivy_env(self.display, self.work / "kivy"), cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        self.wait_for(self.first_cue, 90, f"the screen app showing {self.first_cue}")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:]

    def wait_for(self, cue: str, seconds: float, what: str) -> None:
        """Until the window writes ``cue`` (or exits: then with its log)."""
        process = self.process
        assert process is not None
        wait_until(lambda: (self.out / cue).exists() or process.poll() is not None, seconds, 0.2, what=what)
        assert (self.out / cue).exists(), self.log_tail()

    def finished(self) -> dict[str, object]:
        """After the hang-up: the window's exit and its ``result.json``."""
        assert self.process is not None
        assert self.process.wait(60) == 0, self.log_tail()
        result: dict[str, object] = json.loads((self.out / "result.json").read_text())
        return result

    def assert_callers_video_shown(self, result: dict[str, object]) -> None:
        """The unit's own screenshots: the caller's video there, not black, and moving."""
        assert result["shots"] == ["real-ringing", "real-in-call", "real-in-call-later"]
        frames_shown = result["frames_shown"]
        assert isinstance(frames_shown, int) and frames_shown >= 30
        width, height = typing.cast(list[int], result["window"])
        video = (round(width * 0.3), round(height * 0.1), round(width * 0.7), round(height * 0.65))
        first, later = load(self.out / "real-in-call.png"), load(self.out / "real-in-call-later.png")
        assert mean_luma(first, video) > 40, "the caller's video is black on the unit's screen"
        # Movement is judged from the top of the window down, so that it takes in the caller's
        # frame counter: Chromium's fake camera is otherwise a pie that fills and empties, and two
        # shots at the same phase of it once differed in 0.8 % of the middle alone (CI, loaded).
        # A counter that changes is a thousand pixels or more (0.2 % is 530); a still picture is none.
        moving = (video[0], 0, video[2], video[3])
        assert differing_share(first.crop(moving), later.crop(moving), threshold=24) > 0.002, "the video stands still"
        log = self.log.read_text()
        assert "Karen" not in log and "a=candidate" not in log  # no personal data, no SDP in the log
