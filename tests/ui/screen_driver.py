"""Drives the real ``kiosk-ui`` window (Kivy, :func:`kiosk.ui.cli.run_screen`) through its screens.

Run in its own process under Xvfb by the tests (one Kivy window per process):

    python -m tests.ui.screen_driver screens --state DIR --out DIR [--language en]

The agent is :class:`tests.ui.fake_agent.FakeAgent` (a real socket, the real
messages); the caller is a real aiortc peer (:class:`tests.ui.staff.StaffBrowser`),
so the in-call screen shows real decoded video. Presses are simulated touches
(Kivy's ``UnitTestTouch``) at the centre of the widget a citizen would press.
The wall clock is fixed (Monday 30 November 2026, 09:00 in Copenhagen) so the
screenshots can be compared with the golden images. It writes one PNG per
screen and ``result.json`` with what the test measures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TZ", "Europe/Copenhagen")
time.tzset()

from kiosk.media.loopback import loopback_only, no_public_stun  # noqa: E402
from kiosk.protocol import messages as m  # noqa: E402
from kiosk.ui import cli  # noqa: E402
from kiosk.ui import controller as ui  # noqa: E402
from kiosk.ui.session import UiSession, local_wall_clock  # noqa: E402

from .fake_agent import FakeAgent  # noqa: E402
from .staff import StaffBrowser  # noqa: E402

MORNING = 1796025600.0  # 2026-11-30 09:00 in Copenhagen
SIZE = (1280, 800)
PIN = "2468"


def visits() -> list[m.PlannedVisit]:
    return [
        m.PlannedVisit(at=MORNING + 1.5 * 3600, staff_name="Anne", staff_role="sygeplejerske"),
        m.PlannedVisit(at=MORNING + 5 * 3600, staff_name="Bo", staff_role="hjemmehjælper"),
        m.PlannedVisit(at=MORNING + 23 * 3600, staff_name="Anne", staff_role="sygeplejerske"),
    ]


def status(state: str = "assigned", online: bool = True) -> m.AgentStatus:
    return m.AgentStatus(state=state, server_online=online, citizen_name="Inger Hansen",  # type: ignore[arg-type]
                         contact_staff=["Anne"], visits=visits() if state == "assigned" else [])


class Driver:
    def __init__(self, app: Any, session: UiSession, agent: FakeAgent, out: Path, clock: list[float]) -> None:
        from kivy.core.window import Window

        self.app, self.session, self.agent, self.out, self.clock = app, session, agent, out, clock
        self.window = Window
        self.result: dict[str, Any] = {"window": list(Window.size), "shots": [], "consent": []}

    async def until(self, what: str, predicate: Callable[[], object], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                shown = self.app.shown.name if self.app.shown else None
                raise AssertionError(f"timed out waiting for {what}; the screen shows {shown}")
            await asyncio.sleep(0.05)

    async def screen(self, name: str, timeout: float = 20.0) -> None:
        await self.until(f"screen {name}", lambda: self.app.shown is not None and self.app.shown.name == name,
                         timeout)

    async def shot(self, name: str) -> Path:
        # Two full redraws after the screen was built (a label makes its texture on the
        # frame after its text is set), however slow the loaded machine is; no fixed sleep.
        for _ in range(2):
            await self.redrawn()
        written = self.window.screenshot(name=str(self.out / f"{name}.png"))
        path = self.out / f"{name}.png"
        os.replace(written, path)  # Kivy adds a counter to the name
        self.result["shots"].append(name)
        return path

    async def redrawn(self, timeout: float = 30.0) -> None:
        """Ask for a redraw of the whole window and wait until it has been swapped to the screen."""
        done = asyncio.Event()

        def flipped(*_args: Any) -> None:
            done.set()

        self.window.bind(on_flip=flipped)
        try:
            self.window.canvas.ask_update()
            await asyncio.wait_for(done.wait(), timeout)
        finally:
            self.window.unbind(on_flip=flipped)

    async def flips(self, seconds: float) -> int:
        """How often the window was redrawn (buffers swapped) in the next ``seconds``."""
        count = [0]

        def flipped(*_args: Any) -> None:
            count[0] += 1

        self.window.bind(on_flip=flipped)
        await asyncio.sleep(seconds)
        self.window.unbind(on_flip=flipped)
        return count[0]

    def kiosk_settings(self) -> dict[str, Any]:
        """Escape and closing the window refused, no cursor, no screensaver, one touch source."""
        from kivy.base import EventLoop
        from kivy.config import Config

        escape_handled = self.window.dispatch("on_keyboard", 27, 0, None, [])
        close_refused = self.window.dispatch("on_request_close")
        return {
            "escape_refused": bool(escape_handled), "close_refused": bool(close_refused),
            "still_running": self.app.root is not None and self.app.shown is not None,
            "show_cursor": Config.get("graphics", "show_cursor"),
            "allow_screensaver": Config.get("graphics", "allow_screensaver"),
            "input_providers": [type(p).__name__ for p in EventLoop.input_providers],
        }

    async def status(self, message: m.AgentStatus) -> None:
        self.agent.status = message
        await self.agent.send(message)

    def at(self, wall: float) -> None:
        self.clock[0] = wall
        self.session.post(local_wall_clock(wall))

    def find(self, predicate: Callable[[Any], bool]) -> Any:
        found = [w for w in self.app.root.walk() if predicate(w)]
        assert found, "no such widget on the screen"
        return found[0]

    def button(self, words: str) -> Any:
        return self.find(lambda w: getattr(w, "text", None) == words and hasattr(w, "on_release"))

    async def press_key(self, keys: Any, char: str) -> None:
        """Touch the on-screen key showing ``char``."""
        for y in range(5, int(keys.height), 10):
            for x in range(5, int(keys.width), 10):
                found = keys.get_key_at_pos(x, y)
                if found and found[0][0] == char:
                    await self.touch_at(*keys.to_window(keys.x + x, keys.y + y))
                    return
        raise AssertionError(f"no key {char!r} on the keyboard")

    async def touch_at(self, x: float, y: float, hold: float = 0.05) -> None:
        from kivy.tests.common import UnitTestTouch

        touch = UnitTestTouch(x, y)
        touch.touch_down()
        await asyncio.sleep(hold)
        touch.touch_up()
        await asyncio.sleep(0.05)

    async def touch(self, widget: Any, hold: float = 0.05) -> None:
        await self.redrawn()  # a widget built a moment ago has its place only after the next layout
        x, y = widget.to_window(*widget.center)
        await self.touch_at(x, y, hold=hold)


async def screens(d: Driver, staff: StaffBrowser, language: str) -> None:
    da = language == "da"
    await d.agent.wait_for(m.UiHello, timeout=60)  # the app is up and connected (slow on a loaded machine)
    await d.status(status("unprovisioned"))
    await d.screen("not-ready")
    await d.shot("not-ready")
    # Not yet a DeviceState the socket accepts (the enrollment work adds it): given to the session directly.
    d.session.post(status("awaiting-approval"))
    await d.screen("awaiting-approval")
    await d.shot("awaiting-approval")
    await d.status(status("enrolled-unassigned"))
    await d.screen("ready")
    await d.shot("ready")
    await d.status(status("assigned"))
    await d.screen("idle")
    await d.shot("idle")
    d.result["idle_flips"] = await d.flips(2.0)  # nothing is drawn while nothing changes
    d.result["kiosk"] = d.kiosk_settings()

    d.at(MORNING + 1.5 * 3600 - 4 * 60)  # four minutes before Anne's visit
    await d.screen("reminder")
    await d.shot("reminder")
    d.at(MORNING)
    await d.screen("idle")

    # A call: ring, a touch on the answer button, real media from the caller, camera off, hang up.
    call_id = str(uuid.uuid4())
    await d.agent.send(m.CallRing(call_id=call_id, caller_name="Anne", caller_role="sygeplejerske",
                                  ice_servers=[], ring_timeout=60))
    await d.screen("ringing")
    await d.shot("ringing")
    answer = d.find(lambda w: getattr(w, "answer_button", False))
    (x, y), (w, h) = answer.to_window(*answer.pos), answer.size
    d.result["answer_button"] = [x, y, w, h]
    await d.touch(answer)
    answered = await d.agent.wait_for(m.CallAnswer, timeout=30)
    accept = await staff.answer_the_answer(answered, d.agent.of_type(m.CallOffer))
    if accept is not None:
        await d.agent.send(accept)
    await d.screen("in-call", 30)
    video = d.app.ctx.video
    await d.until("30 frames of the caller's video", lambda: video.frames_shown >= 30, 30)
    await d.shot("in-call")
    shown = video.frames_shown
    await d.until("15 more frames", lambda: video.frames_shown >= shown + 15, 30)  # however slow the machine
    await d.shot("in-call-later")
    d.result["self_view_frames"] = d.app.ctx.self_view.frames_shown
    d.result["frames_shown"] = video.frames_shown
    d.result["textures_made"] = video.textures_made
    d.session.post(ui.LinkChanged(call_id, "poor"))  # as the peer reports a poor link
    await d.until("the poor-link notice", lambda: d.app.shown.link == "poor")
    await d.shot("in-call-poor-link")
    d.session.post(ui.LinkChanged(call_id, "good"))
    await d.until("the notice gone", lambda: d.app.shown.link is None)
    await d.touch(d.button("Sluk kamera" if da else "Camera off"))
    await d.until("the camera off", lambda: not d.app.shown.camera_on)
    await d.shot("in-call-camera-off")
    peer = d.session.last_call
    media = peer.peer.media if peer is not None else None
    track = media.video if media is not None else None
    d.result["camera_muted"] = bool(getattr(getattr(track, "source", track), "muted", False))  # under the self-view tap
    await d.touch(d.button("Læg på" if da else "Hang up"))
    await d.screen("ended")
    await d.shot("ended")
    hang_up = await d.agent.wait_for(m.CallHangUp)
    d.result["hang_up"] = hang_up.reason
    await d.screen("idle", 15)

    await d.status(status("assigned", online=False))
    await d.screen("offline")
    await d.shot("offline")
    await d.status(status("assigned"))
    await d.screen("idle")

    d.session.post(m.ScreenshotRequest(request_id="support-1", ask_consent=True))
    await d.screen("consent")
    await d.shot("consent")
    await d.touch(d.button("Ja" if da else "Yes"))
    await d.screen("idle")

    corner = d.find(lambda w: type(w).__name__ == "HiddenCorner")
    await d.touch(corner, hold=0.5)  # a tap does nothing
    await asyncio.sleep(0.3)
    assert d.app.shown.name == "idle", "a short touch on the corner opened the setup"
    from kivy.tests.common import UnitTestTouch

    await d.redrawn()
    held = UnitTestTouch(*corner.to_window(*corner.center))
    held.touch_down()  # held until the PIN pad shows (after CORNER_HOLD_SECONDS), however slow the machine
    await d.screen("setup-pin")
    held.touch_up()
    for digit in PIN:
        await d.touch(d.button(digit))
    await d.shot("setup-pin")
    await d.touch(d.button("OK"))
    await d.screen("setup")
    for page, words in (("network", "Netværk" if da else "Network"), ("volume", "Lydstyrke" if da else "Volume"),
                        ("info", "Om skærmen" if da else "Device information")):
        await d.touch(d.button(words))

        def on_page(page: str = page) -> bool:
            return bool(d.app.shown.setup_page == page)

        await d.until(f"setup page {page}", on_page)
        if page == "network":  # until nmcli has answered (here: that it is missing)
            await d.until("the Wi-Fi list", lambda: all(
                w._task.done() for w in d.app.root.walk() if type(w).__name__ == "NetworkPage"))
        await d.shot(f"setup-{page}")
        if page == "network":  # this machine has no NetworkManager: the password page, as if a network was chosen
            from kiosk.ui.keyboard import OnScreenKeyboard  # Kivy widgets: imported once the window exists
            from kiosk.ui.network import NetworkPage, WifiNetwork

            d.find(lambda w: isinstance(w, NetworkPage)).ask_password(WifiNetwork("Plejecenter Øst", 80, True, False))
            keyboard = d.find(lambda w: isinstance(w, OnScreenKeyboard))
            await d.redrawn()  # laid out
            for char in "Blåbærgrød":
                capital = char != char.lower()
                if capital:
                    await d.press_key(keyboard.keys, "\u21ea")  # caps lock on, the capital, caps lock off
                await d.press_key(keyboard.keys, char)
                if capital:
                    await d.press_key(keyboard.keys, "\u21ea")
            d.result["typed"] = keyboard.text
            await d.shot("setup-network-password")
    await d.touch(d.button("Luk" if da else "Close"))
    await d.screen("idle")

    d.at(MORNING + 14 * 3600)  # 23:00: night
    await d.until("night", lambda: d.app.shown.asleep)
    await d.shot("night")
    await d.touch_at(d.window.width / 2, d.window.height / 2)  # a touch in the dark shows the time
    await d.until("woken by a touch", lambda: not d.app.shown.asleep)


async def photo(d: Driver, picture: bytes) -> None:
    """The ringing screen with the caller's photo (as the server made it from what staff gave)."""
    await d.agent.wait_for(m.UiHello, timeout=60)
    await d.status(status("assigned"))
    await d.screen("idle", 60)
    await d.agent.send(m.CallRing(call_id=str(uuid.uuid4()), caller_name="Anne", caller_role="sygeplejerske",
                                  ice_servers=[], ring_timeout=60, caller_photo=picture))
    await d.screen("ringing")
    await d.shot("ringing-photo")
    answer = d.find(lambda w: getattr(w, "answer_button", False))
    (x, y), (w, h) = answer.to_window(*answer.pos), answer.size
    d.result["answer_button"] = [x, y, w, h]


async def answer(d: Driver) -> None:
    """A real call from a real server and agent: the citizen's touch answers, the caller's video shows."""
    await d.screen("idle", 60)
    (d.out / "idle").touch()  # the test's cue to call
    await d.screen("ringing", 120)
    await d.shot("real-ringing")
    await d.touch(d.find(lambda w: getattr(w, "answer_button", False)))
    await d.screen("in-call", 60)
    video = d.app.ctx.video
    await d.until("30 frames of the caller's video", lambda: video.frames_shown >= 30, 60)
    await d.shot("real-in-call")
    shown = video.frames_shown
    await d.until("15 more frames", lambda: video.frames_shown >= shown + 15, 30)
    await d.shot("real-in-call-later")
    d.result["frames_shown"] = video.frames_shown
    (d.out / "shots-done").touch()  # the caller may hang up now
    await d.screen("ended", 120)
    d.result["ended"] = d.app.shown.end_reason


async def look(d: Driver, travel: list[float]) -> None:
    """Support looks at the real screen: unassigned (nobody asked), then the citizen's yes, no and silence.

    The test reads the answers and pictures from the server; the window's own pictures
    (``ready``, ``idle``) are what the returned pictures must show."""
    await d.screen("ready", 90)
    await d.shot("ready")
    (d.out / "ready").touch()  # the test's cue to look at the unassigned unit, then to assign it
    await d.screen("idle", 120)
    await d.shot("idle")
    (d.out / "idle").touch()  # the test's cue to ask to look, three times
    for answer in ("yes", "no", "silence"):
        await d.screen("consent", 120)
        if answer == "silence":  # a minute without a touch, by the session's clock: no real waiting
            travel[0] += ui.CONSENT_SECONDS + 1
            d.session.post(ui.TimePassed())
        else:
            await d.touch(d.button("Ja" if answer == "yes" else "Nej"))
        await d.screen("idle", 30)
        (d.out / f"answered-{answer}").touch()
    await d.until("the test to finish", lambda: (d.out / "finish").exists(), 180)


async def ring_test(d: Driver) -> None:
    """Support's test rings on the real screen of an unassigned unit: the first answered with a touch
    once the test heard it ring on the speaker, the second left to ring out its short time."""
    await d.screen("ready", 90)
    (d.out / "ready").touch()  # the test's cue to ring
    await d.screen("test-ring", 120)
    await d.shot("test-ring")
    (d.out / "ringing").touch()  # the test's cue to listen to the speaker
    await d.until("the test to hear the ring", lambda: (d.out / "heard").exists(), 120)
    await d.touch(d.find(lambda w: getattr(w, "answer_button", False)))
    await d.screen("test-ring-answered", 30)
    await d.shot("test-ring-answered")
    await d.screen("ready", 60)
    (d.out / "answered").touch()
    # The second rings a few seconds, untouched, and is not watched here (a busy loop may look only
    # after it is over): the test reads how it ended from the server, and the screen it left from here.
    await d.until("the test to finish", lambda: (d.out / "finish").exists(), 180)
    d.result["after"] = d.app.shown.name


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["screens", "photo", "answer", "look", "test-ring"])
    p.add_argument("--photo", type=Path, help="photo: the caller's photo (a PNG as the server makes it)")
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--language", default="da")
    opts = p.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    args = cli._parser().parse_args(["--state", str(opts.state), "--size", "x".join(map(str, SIZE)),
                                     "--demo-media", "--language", opts.language])
    if opts.scenario not in ("screens", "photo"):
        return await run_real(args, opts.out, opts.scenario)
    opts.state.mkdir(parents=True, exist_ok=True)
    (opts.state / "ui.json").write_text(json.dumps({"staff_pin": PIN}))
    clock = [MORNING]
    with loopback_only():
        agent = await FakeAgent(opts.state / "agent.sock", status("unprovisioned")).start()
        staff = StaffBrowser(no_public_stun())
        result: dict[str, Any] = {}

        async def started(app: Any, session: UiSession) -> None:
            consent: list[ui.ConsentGiven] = []
            session.effects = dataclasses.replace(session.effects, consent=consent.append)
            await asyncio.sleep(0.5)
            driver = Driver(app, session, agent, opts.out, clock)
            try:
                if opts.scenario == "photo":
                    await photo(driver, opts.photo.read_bytes())
                else:
                    await screens(driver, staff, opts.language)
            finally:
                driver.result["consent"] = [[c.request_id, c.answer] for c in consent]
                result.update(driver.result)

        try:
            await cli.run_screen(args, started=started, wall_clock=lambda: clock[0], serial="KSK-2026-00042")
        finally:
            (opts.out / "result.json").write_text(json.dumps(result, indent=1))
            await staff.close()
            await agent.stop()
    return 0


async def run_real(args: argparse.Namespace, out: Path, scenario: str) -> int:
    """The window against a real agent (and server): ``answer`` a call, let support ``look`` or ``test-ring``."""
    result: dict[str, Any] = {}
    travel = [0.0]  # seconds the session's clock is ahead of the real one

    async def started(app: Any, session: UiSession) -> None:
        await asyncio.sleep(0.5)
        driver = Driver(app, session, None, out, [time.time()])  # type: ignore[arg-type]
        try:
            await (answer(driver) if scenario == "answer" else ring_test(driver) if scenario == "test-ring"
                   else look(driver, travel))
        finally:
            result.update(driver.result)

    try:
        await cli.run_screen(args, started=started, clock=lambda: time.monotonic() + travel[0])
    finally:
        (out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
