"""What the agent does for each verified command. One function per command kind."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, assert_never

from kiosk.protocol import messages as m
from kiosk.protocol import screen_settings, screenshot
from kiosk.protocol.errors import ProtocolError
from kiosk.provision import diagnostics, wipe
from kiosk.provision.state import StateDir, Vault
from kiosk.provision.system_actions import SystemActions
from kiosk.provision.updater import InstallFailed

MAX_LOG_LINES = 2000
MAX_LOG_BYTES = 200 * 1024
REBOOT_DELAY_SECONDS = 2.0  # time for the result to reach the server first

class CannotCarryOut(Exception):
    """The command was valid but cannot be carried out; ``str`` says why, for the console."""


@dataclass(frozen=True)
class HandlerResult:
    """What carrying out a command came to; the agent signs it into the result."""

    outcome: m.Outcome
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    state: StateDir
    device_id: str
    actions: SystemActions
    facts: Callable[[], diagnostics.LinkFacts]
    on_state_change: Callable[[], None]
    #: Asks the screen app over the UI socket and waits for its reply; raises
    #: :class:`CannotCarryOut` when the app is not running or does not reply.
    ask_screen: Callable[[m.ScreenRequest], Awaitable[m.ScreenReply]]
    #: (release, path) -> the result's detail; raises InstallFailed (kiosk.provision.updater)
    install_update: Callable[[str, str], Awaitable[dict[str, str]]]


async def run(ctx: Context, action: m.CommandAction, command_id: str) -> HandlerResult:
    try:
        match action:
            case m.Ping():
                return HandlerResult("ok", detail={"state": ctx.state.device_state()})
            case m.Diagnostics():
                checks = await asyncio.to_thread(diagnostics.run_all, ctx.facts())
                return HandlerResult("ok", detail={"checks": m.to_builtins(checks)})
            case m.Logs(lines=lines):
                return HandlerResult("ok", detail={"lines": await asyncio.to_thread(_tail, ctx.state, lines)})
            case m.RestartUi():
                await ctx.actions.restart_ui()
                return HandlerResult("ok")
            case m.Reboot():
                loop = asyncio.get_running_loop()
                loop.call_later(REBOOT_DELAY_SECONDS, lambda: asyncio.ensure_future(ctx.actions.reboot()))
                return HandlerResult("ok", detail={"reboot_in_seconds": REBOOT_DELAY_SECONDS})
            case m.Assign(citizen_name=name, contact_staff=staff):
                return _assign(ctx, name, staff)
            case m.SetConfig(settings=settings):
                return _set_config(ctx, settings)
            case m.Schedule(visits=visits):
                return _schedule(ctx, visits)
            case m.Screenshot():
                return await _screenshot(ctx, command_id)
            case m.RingTest(ring_seconds=seconds):
                return await _test_ring(ctx, command_id, seconds)
            case m.Wipe():
                # the intent was journaled before the command was acknowledged
                await asyncio.to_thread(wipe.run, ctx.state, ctx.device_id, False)
                ctx.on_state_change()
                return HandlerResult("ok")  # the signed receipt itself is already in the outbox
            case m.Update(release=release, path=path):
                return HandlerResult("ok", detail=await ctx.install_update(release, path))
            case _:  # pragma: no cover (the decoder only makes the kinds above)
                assert_never(action)
    except (CannotCarryOut, InstallFailed) as exc:
        return HandlerResult("failed", str(exc))
    except (OSError, RuntimeError) as exc:
        return HandlerResult("failed", f"{type(exc).__name__}: {exc}")


def _assign(ctx: Context, name: str, staff: list[str]) -> HandlerResult:
    if ctx.state.device_state() == "assigned":
        raise CannotCarryOut("the unit is assigned to a citizen already; wipe it before assigning it again")
    if not name.strip() or len(name) > 200 or len(staff) > 20 or any(len(s) > 200 for s in staff):
        raise CannotCarryOut("citizen name must be 1-200 characters and at most 20 contact staff")
    Vault(ctx.state).put("assignment", {"citizen_name": name.strip(), "contact_staff": staff})
    ctx.state.audit("assigned")  # no name: the trail holds no personal data
    ctx.on_state_change()
    return HandlerResult("ok", detail={"state": "assigned"})


def _schedule(ctx: Context, visits: list[m.ScheduledVisit]) -> HandlerResult:
    if ctx.state.device_state() != "assigned":
        raise CannotCarryOut("the unit is not assigned to a citizen; a visit plan needs one")
    # Under the assignment key, like the assignment itself: shown offline, gone with a wipe.
    Vault(ctx.state).put("schedule", m.to_builtins(visits))
    ctx.state.audit("schedule-updated", visits=len(visits))  # how many, never who or when
    ctx.on_state_change()
    return HandlerResult("ok", detail={"visits": len(visits)})


_Reply = TypeVar("_Reply", m.ScreenshotReply, m.RingTestReply)


async def _ask_screen(ctx: Context, request: m.ScreenRequest, expected: type[_Reply], question: str) -> _Reply:
    """The screen's reply to ``request``; a reply to another question is refused, not guessed at."""
    reply = await ctx.ask_screen(request)
    if not isinstance(reply, expected):
        raise CannotCarryOut(f"the screen's reply was refused: it answered another question than {question}")
    return reply


async def _screenshot(ctx: Context, command_id: str) -> HandlerResult:
    """Ask the citizen (when someone lives with the unit), then the picture, held in memory only."""
    ask = ctx.state.device_state() == "assigned"
    ctx.state.audit("screenshot-requested", command_id=command_id, ask_consent=ask)
    try:
        reply = await _ask_screen(ctx, m.ScreenshotRequest(request_id=command_id, ask_consent=ask),
                                  m.ScreenshotReply, "the look at it")
        taken = screenshot.judge_reply(reply, ask)
    except (CannotCarryOut, ProtocolError) as exc:
        reason = str(exc) if isinstance(exc, CannotCarryOut) else f"the screen's reply was refused: {exc.detail}"
        ctx.state.audit("screenshot-failed", command_id=command_id, reason=reason)
        raise CannotCarryOut(reason) from None
    ctx.state.audit("screenshot-answered", command_id=command_id, answer=taken.answer,
                    picture_bytes=len(taken.png) if taken.png else 0)  # the size, never the picture
    return HandlerResult("ok", detail=m.to_builtins(taken))


async def _test_ring(ctx: Context, command_id: str, seconds: float) -> HandlerResult:
    """Ring the screen as for a call, and report how it went; a unit in a call refuses (the
    screen decides: it knows its call) and the call goes on undisturbed."""
    ctx.state.audit("test-ring-requested", command_id=command_id, ring_seconds=seconds)
    reply = await _ask_screen(ctx, m.RingTestRequest(request_id=command_id, ring_seconds=seconds),
                              m.RingTestReply, "the test ring")
    heard = reply.heard
    ctx.state.audit("test-ring-ended", command_id=command_id, answer=heard.answer, ring_sound=heard.ring_sound)
    if heard.answer == "in-call":  # not carried out, and the page says why in its own words
        return HandlerResult("failed", "in a call (i samtale): a test ring never interrupts a call; try again after it",
                             detail=m.to_builtins(heard))
    return HandlerResult("ok", detail=m.to_builtins(heard))


def _set_config(ctx: Context, settings: dict[str, Any]) -> HandlerResult:
    """The screen's settings changed (checked again here: one definition, in the protocol), written
    whole as ui.json; the status pushed to the screen tells it to read them again."""
    try:
        changed = screen_settings.merged(ctx.state.ui_settings(), settings)
    except ProtocolError as exc:
        raise CannotCarryOut(f"refused settings: {exc.detail}") from None
    ctx.state.save_ui_settings(changed)
    ctx.state.audit("settings-changed", keys=sorted(settings))  # which, never the PIN itself
    ctx.on_state_change()
    return HandlerResult("ok", detail={"applied": sorted(settings)})


def _tail(state: StateDir, lines: int) -> list[str]:
    wanted = max(1, min(lines, MAX_LOG_LINES))
    try:
        with state.log_path.open(errors="replace") as f:
            tail = deque(f, maxlen=wanted)
    except FileNotFoundError:
        return []
    out, size = [], 0
    for line in reversed(tail):
        size += len(line)
        if size > MAX_LOG_BYTES:
            break
        out.append(line.rstrip("\n"))
    return out[::-1]


