"""The device agent: the unit's identity, its link to the server, and its commands.

Start-up order matters: an interrupted wipe is finished first, before the UI socket
opens, so no screen ever shows the previous citizen's data; then enrollment if the
unit has none; then the UI socket and the server link.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
import zoneinfo
from datetime import tzinfo
from pathlib import Path

import kiosk
from kiosk.protocol import backoff, schedule, signing, update
from kiosk.protocol import messages as m
from kiosk.protocol.call import EndReason
from kiosk.protocol.signing import Refusal, Refused
from kiosk.provision import clock, diagnostics, enroll, handlers, sd_notify, updater, wipe
from kiosk.provision.link import ServerLink
from kiosk.provision.local_api import UiServer
from kiosk.provision.state import StateDir, Vault
from kiosk.provision.system_actions import SystemActions

log = logging.getLogger("kiosk.agent")

#: Call messages kept while the server link is down; a call needs a handful.
CALL_BACKLOG = 16
#: How long a wipe waits for the screen to close a call's camera and microphone. The
#: screen reports its call's quality once its peer is closed; a screen that does not
#: within this is hung, and the wipe goes on (the screen then shows "ready" anyway).
CALL_CLOSE_WAIT = 10.0
#: The visits the screen is given: from a little before now (a visit under way) to the end
#: of tomorrow at the latest; the status is pushed again as the day goes by.
VISIT_SHOWN_AFTER = 15 * 60.0
VISITS_AHEAD = 2 * 24 * 3600.0
#: Status pushed to the screen this often, so the visits move on with the day.
STATUS_REFRESH_SECONDS = 15 * 60.0
#: How long the agent waits for the screen's reply to a look at the screen or a test ring: the
#: citizen has 60 s to say yes or no (silence is a no) or to answer the ring, and the picture
#: takes a moment after a yes.
SCREEN_REPLY_WAIT = 90.0


def local_zone() -> tzinfo:
    """The unit's time zone: $TZ, else /etc/localtime's, else Danish time."""
    name = os.environ.get("TZ", "").lstrip(":")
    with contextlib.suppress(ValueError, zoneinfo.ZoneInfoNotFoundError):
        if name:
            return zoneinfo.ZoneInfo(name)
    with contextlib.suppress(OSError, ValueError), open("/etc/localtime", "rb") as f:
        return zoneinfo.ZoneInfo.from_file(f)
    return zoneinfo.ZoneInfo("Europe/Copenhagen")


def resume_interrupted_wipe(state: StateDir) -> bool:
    """Finish a wipe a power cut interrupted. Returns True if there was one."""
    journal = state.journal()
    if not journal.started or journal.complete or not state.enrolled:
        return False
    log.warning("resuming a wipe that was interrupted")
    wipe.run(state, state.pin().device_id, resumed=True)
    return True


class Agent:
    def __init__(self, state: StateDir, actions: SystemActions,
                 backoff_base: float = 1.0, backoff_cap: float = 60.0,
                 rauc: updater.Rauc | None = None, running: updater.Running | None = None,
                 health_deadline: float = update.HEALTH_DEADLINE_SECONDS) -> None:
        self.state = state
        self.actions = actions
        self.started_at = time.time()
        pin = state.pin()
        self.device_id = pin.device_id
        self.server_key = state.command_key()
        self.replay = state.replay_guard()
        self.queue: asyncio.Queue[m.Command] = asyncio.Queue()
        socket_url = pin.url.rstrip("/").replace("https://", "wss://", 1) + "/api/v1/socket"
        ca_pem = (state.identity / "ca.pem").read_text()
        self.link = ServerLink(socket_url, lambda: enroll.device_context(state), self._on_message,
                               self._flush_outbox, self._state_changed, self._hello, self._heartbeat,
                               backoff_base, backoff_cap, lambda exc: clock.diagnose(pin.url, ca_pem, exc))
        self.ui = UiServer(state.socket_path, self.status, self._from_ui, self._ui_liveness_changed)
        self.ringing: m.CallRing | None = None  # a ring the citizen has not answered or missed yet
        #: Call messages from the UI while the server link is down (a 4G blink); the server
        #: holds the call for a while, so they go out, in order, when the link is back.
        self.call_backlog: list[m.DeviceToServer] = []
        self.call_id: str | None = None  # the call the screen is in: ringing, connecting or talking
        self.call_media = False  # its media flowed (the screen said connected)
        self.call_closed = asyncio.Event()  # the screen closed that call's peer (its quality report came)
        #: Support's requests to the screen (a look, a test ring) waiting for its reply, by request (= command) id.
        self.looks: dict[str, asyncio.Future[m.ScreenReply]] = {}
        #: Signed results holding a picture of the screen: never written to disk (unlike the
        #: outbox), so a restart loses them, and the command expires on the server unanswered.
        self.unsaved_results: dict[str, m.SignedEnvelope] = {}
        self.updater = updater.Updater(state, rauc or updater.Rauc(state.identity), actions, pin.url,
                                       self._report_update, running, health_deadline)
        self.updater.on_start()
        self.ctx = handlers.Context(state, self.device_id, actions, self._facts, self._state_changed,
                                    self.ask_screen, self.updater.install)

    # -------------------------------------------------------------------- status
    def status(self) -> m.AgentStatus:
        device_state = self.state.device_state()
        vault = Vault(self.state)
        assignment = vault.get("assignment") if device_state == "assigned" else None
        plan = vault.get("schedule") if assignment else None
        now = time.time()
        visits = schedule.upcoming(m.convert(plan, list[m.ScheduledVisit]), now - VISIT_SHOWN_AFTER,
                                   now + VISITS_AHEAD, local_zone()) if plan else []
        return m.AgentStatus(
            state=device_state, server_online=self.link.connected,
            citizen_name=assignment["citizen_name"] if assignment else None,
            contact_staff=assignment["contact_staff"] if assignment else [],
            visits=visits,
        )

    def _facts(self) -> diagnostics.LinkFacts:
        return diagnostics.LinkFacts(self.state.root, self.link.connected, self.link.round_trip_ms,
                                     self.ui.ui_alive, self.started_at)

    def _hello(self) -> m.Hello:
        return m.Hello(agent_version=kiosk.__version__, state=self.state.device_state(), ui_alive=self.ui.ui_alive)

    def _heartbeat(self, seq: int) -> m.Heartbeat:
        return m.Heartbeat(seq=seq, sent_at=time.time(), state=self.state.device_state(), ui_alive=self.ui.ui_alive)

    def _state_changed(self) -> None:
        self.ui.push_status()

    async def _report_update(self, progress: m.UpdateProgress) -> None:
        await self.link.send(progress)  # offline: _flush_outbox sends the latest on reconnect

    def _visit_times(self) -> list[float]:
        return [visit.at for visit in self.status().visits]

    # ------------------------------------------------------------------ messages
    async def _on_message(self, message: m.ServerToDevice) -> None:
        match message:
            case m.CommandDelivery(envelope=envelope):
                await self._receive_command(envelope)
            case m.ResultAck(command_id=command_id, accepted=accepted, reason=reason):
                if not accepted:  # a definite no: resending the same signed bytes would get the same answer
                    log.warning("server did not accept the result of %s: %s", command_id, reason)
                self.state.outbox_remove(command_id)
                self.unsaved_results.pop(command_id, None)
            case m.Rejected(reason=reason, detail=detail):
                log.warning("server rejected our message: %s (%s)", reason, detail)
            case m.CallRing() | m.CallAccept() | m.CallEnded():
                if isinstance(message, m.CallRing):
                    self.ringing = message
                    self.call_id, self.call_media = message.call_id, False
                elif isinstance(message, m.CallEnded):
                    if self.ringing and self.ringing.call_id == message.call_id:
                        self.ringing = None
                    if self.call_id == message.call_id:
                        self.call_id = None
                self.ui.send(message)  # the UI runs the call; the agent only carries its signaling

    async def _from_ui(self, message: m.UiToAgent) -> None:
        if isinstance(message, (m.ScreenshotReply, m.RingTestReply)):
            self._screen_replied(message)
            return
        if isinstance(message, (m.CallAnswer, m.CallHangUp)):
            self.ringing = None
        self._follow_call(message)
        if not isinstance(message, m.CALL_UPSTREAM):
            return
        if self.call_backlog or not await self.link.send(message):  # kept in order behind the backlog
            if len(self.call_backlog) < CALL_BACKLOG:
                self.call_backlog.append(message)
                log.info("call message from the UI kept until the server link is back")
            else:
                log.warning("call message from the UI dropped: the server has not been reachable for long")

    def _follow_call(self, message: m.UiToAgent) -> None:
        """Keep up with the screen's call, so that a wipe can end it first."""
        call_id = getattr(message, "call_id", None)
        if call_id is None or call_id != self.call_id:
            if isinstance(message, m.CallQualityReport):
                self.call_closed.set()
            return
        if isinstance(message, m.CallConnected):
            self.call_media = True
        elif isinstance(message, m.CallHangUp):
            self.call_id = None
        elif isinstance(message, m.CallQualityReport):
            self.call_closed.set()

    # ------------------------------------------- a look at the screen, a test ring
    async def ask_screen(self, request: m.ScreenRequest) -> m.ScreenReply:
        """Ask the screen app (it asks the citizen, or rings) and wait, bounded, for its reply."""
        if not self.ui.ui_alive:
            raise handlers.CannotCarryOut("the screen app is not running (it has not spoken on the agent's "
                                          "socket for 15 s), so it can neither ask the citizen nor ring")
        reply: asyncio.Future[m.ScreenReply] = asyncio.get_running_loop().create_future()
        self.looks[request.request_id] = reply
        try:
            self.ui.send(request)
            return await asyncio.wait_for(reply, SCREEN_REPLY_WAIT)
        except TimeoutError:
            raise handlers.CannotCarryOut(f"the screen app did not reply within {SCREEN_REPLY_WAIT:.0f} s") from None
        finally:
            self.looks.pop(request.request_id, None)

    def _screen_replied(self, reply: m.ScreenReply) -> None:
        waiting = self.looks.get(reply.request_id)
        if waiting is None or waiting.done():
            log.warning("a reply from the screen to no open request of support's; ignored")
            return
        waiting.set_result(reply)

    async def end_call_for_wipe(self) -> None:
        """A wipe never erases a unit under a live call: the call ends first, camera and
        microphone off, and the caller is told why; only then does the wipe begin."""
        call_id, had_media = self.call_id, self.call_media
        if call_id is None:
            return
        self.call_id, self.ringing = None, None
        self.call_closed.clear()
        self.state.audit("call-ended-for-wipe", call_id=call_id)
        await self._from_ui(m.CallHangUp(call_id=call_id, reason="unit-wiped"))  # to the caller, via the server
        self.ui.send(m.CallEnded(call_id=call_id, reason=EndReason.UNIT_WIPED))  # the screen closes its peer
        if had_media and self.ui.connected:
            try:
                await asyncio.wait_for(self.call_closed.wait(), CALL_CLOSE_WAIT)
                self.state.audit("call-media-closed", call_id=call_id)
            except TimeoutError:
                log.warning("the screen did not report its call closed within %.0f s; wiping anyway", CALL_CLOSE_WAIT)

    async def _ui_liveness_changed(self) -> None:
        await self.link.beat_now()
        if self.ui.ui_alive and self.ringing is not None:
            self.ui.send(self.ringing)  # a screen app that restarted mid-ring rings again

    async def _receive_command(self, envelope: m.SignedEnvelope) -> None:
        now = self.link.server_now()  # a unit without time sync still judges expiry right
        self.replay.forget_expired(now)
        verdict = signing.verify_command(envelope, self.server_key, self.device_id, now, self.replay)
        if isinstance(verdict, Refused):
            offset = self.link.clock_offset
            if verdict.reason in (Refusal.EXPIRED, Refusal.NOT_YET_VALID) and self.link.clock_wrong and offset:
                verdict = dataclasses.replace(verdict, detail=f"{verdict.detail}; judged by the server's clock, "
                                              f"since {clock.offset_words(offset)}")
            await self._refuse(verdict)
            return
        command = verdict
        self.replay.remember(command)
        self.state.save_replay_guard(self.replay)
        if isinstance(command.action, m.Wipe):
            wipe.begin(self.state, command.id)  # durable before we say we have it
            self._state_changed()
        self.state.audit("command-accepted", command_id=command.id, kind=command.kind)
        await self.link.send(m.CommandAck(command_id=command.id))
        self.queue.put_nowait(command)

    async def _refuse(self, refused: Refused) -> None:
        self.state.audit("command-refused", reason=str(refused.reason), detail=refused.detail,
                         command_id=refused.command_id)
        log.warning("refused a command: %s (%s)", refused.reason, refused.detail)
        if refused.command_id is None:  # not even genuinely from our server: nothing to answer
            await self.link.send(m.Rejected(reason=str(refused.reason), detail=refused.detail))
            return
        await self.link.send(m.CommandAck(command_id=refused.command_id))
        if refused.reason is Refusal.REPLAY and self.state.outbox_has(refused.command_id):
            return  # a redelivery of one we already answered: the outbox carries the real result
        await self._deliver_result(m.CommandResult(
            command_id=refused.command_id, device_id=self.device_id, kind=refused.kind or "unknown", outcome="refused",
            finished_at=time.time(), reason=f"{refused.reason}: {refused.detail}"))

    async def _worker(self) -> None:
        looks: set[asyncio.Task[None]] = set()
        while True:
            command = await self.queue.get()
            if isinstance(command.action, (m.Screenshot, m.RingTest)):  # waits up to a minute for the citizen
                look = asyncio.create_task(self._carry_out(command), name=f"look-{command.id}")
                looks.add(look)
                look.add_done_callback(looks.discard)
                continue
            await self._carry_out(command)

    async def _carry_out(self, command: m.Command) -> None:
        if isinstance(command.action, m.Wipe):
            await self.end_call_for_wipe()
        outcome = await handlers.run(self.ctx, command.action, command.id)
        if isinstance(command.action, m.Wipe) and outcome.outcome == "ok":
            await self._flush_outbox()  # the receipt was signed by the wipe itself
            return
        await self._deliver_result(m.CommandResult(
            command_id=command.id, device_id=self.device_id, kind=command.kind,
            outcome=outcome.outcome, finished_at=time.time(), reason=outcome.reason,
            detail=outcome.detail), durable=not isinstance(command.action, m.Screenshot))

    async def _deliver_result(self, result: m.CommandResult, durable: bool = True) -> None:
        envelope = signing.seal(self.state.device_key(), result)
        if durable:
            self.state.outbox_put(result.command_id, envelope)  # survives until the server acknowledges
        else:  # it may hold a picture of the screen, which never touches the unit's disk
            self.unsaved_results[result.command_id] = envelope
        await self.link.send(m.ResultDelivery(envelope=envelope))

    async def _flush_outbox(self) -> None:
        while self.call_backlog:  # a call is the most urgent thing to catch up on
            if not await self.link.send(self.call_backlog[0]):
                return
            self.call_backlog.pop(0)
        for _command_id, envelope in [*self.state.outbox_items(), *self.unsaved_results.items()]:
            if not await self.link.send(m.ResultDelivery(envelope=envelope)):
                return
        if (progress := self.updater.progress()) and not await self.link.send(progress):
            return
        self._state_changed()

    async def _refresh_status(self) -> None:
        while True:
            await asyncio.sleep(STATUS_REFRESH_SECONDS)
            self._state_changed()

    # ----------------------------------------------------------------------- run
    async def run(self) -> None:
        await self.ui.start()
        sd_notify.notify("READY=1")  # under systemd: the screen may start now (its socket is open)
        tasks = [asyncio.create_task(self.link.run_forever(), name="link"),
                 asyncio.create_task(self._worker(), name="commands"),
                 asyncio.create_task(sd_notify.keep_watchdog_fed(), name="watchdog"),
                 asyncio.create_task(self._refresh_status(), name="status"),
                 asyncio.create_task(self.updater.watch(lambda: self.call_id is not None, self._visit_times,
                                                        lambda: self.link.connected, lambda: self.ui.ui_alive),
                                     name="update")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await self.ui.stop()


async def enroll_until_done(state: StateDir, provisioning: Path, retry_cap: float = 60.0) -> None:
    """Enroll, retrying whatever a retry can cure (no network, a lost answer, a server error,
    a wrong clock, a unit awaiting approval); only :class:`enroll.EnrollmentRefused` stops it.

    Meanwhile the UI socket is open, so the screen can say what the unit is waiting for.
    """
    showing: m.DeviceState = "unprovisioned"
    ui = UiServer(state.socket_path, lambda: m.AgentStatus(state=showing, server_online=False),
                  _no_calls_yet, _nothing_to_tell)
    await ui.start()
    attempt = 0
    try:
        while not state.enrolled:
            try:
                pin = await enroll.enroll(state, provisioning)
                log.info("enrolled as %s with %s (%s)", pin.device_id, pin.url, pin.municipality)
            except enroll.EnrollmentDeferred as exc:
                waiting: m.DeviceState = "awaiting-approval" if exc.code == "awaiting-approval" else "unprovisioned"
                if waiting != showing:
                    showing = waiting
                    ui.push_status()
                wait = backoff.delay(attempt, 1.0, retry_cap)
                attempt += 1
                log.warning("not enrolled yet: %s Next try in %.0f s.", exc, wait)
                await asyncio.sleep(wait)
    finally:
        await ui.stop()


async def _no_calls_yet(message: m.UiToAgent) -> None:
    log.info("ignored %s from the UI: the unit is not enrolled yet", type(message).__name__)


async def _nothing_to_tell() -> None:
    return None
