"""Calls through the real UI session, without the server.

In one process: a fake agent (a real Unix-socket server speaking the real
messages), the UI session (AgentClient + controller + DeviceCall, exactly what
``kiosk-ui`` runs), and a real aiortc peer playing the staff browser. ICE is
held to 127.0.0.1, so media never leaves the machine.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aioice.ice
import pytest

from kiosk.media.loopback import loopback_only, no_public_stun
from kiosk.protocol import messages as m
from kiosk.protocol.call import EndReason
from kiosk.ui.agent_client import AgentClient
from kiosk.ui.call_peer import CountingAudioSink, sections_without_candidates
from kiosk.ui.controller import Screen
from kiosk.ui.session import UiSession

from .fake_agent import FakeAgent
from .staff import StaffBrowser, small_media

pytestmark = pytest.mark.timeout(60)

FRAMES = 15  # one second of the 15 fps test video
AUDIO_FRAMES = 25  # half a second of 20 ms audio frames


@dataclass
class Rig:
    agent: FakeAgent
    session: UiSession
    screens: list[Screen]
    staff: StaffBrowser
    runner: asyncio.Task[None]

    def names(self) -> list[str]:
        return [s.name for s in self.screens]

    async def wait_screen(self, name: str, timeout: float = 10.0) -> Screen:
        await until(lambda: self.session.screen.name == name, timeout, f"screen {name}, saw {self.names()}")
        return self.session.screen


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    with loopback_only():
        agent = await FakeAgent(tmp_path / "agent.sock").start()
        screens: list[Screen] = []
        session = UiSession(AgentClient(agent.path, heartbeat_interval=0.2), small_media,
                            on_screen=screens.append, remote_close_grace=1.0)
        runner = asyncio.create_task(session.run())
        staff = StaffBrowser(no_public_stun())
        try:
            yield Rig(agent, session, screens, staff, runner)
        finally:
            session.stop()
            await asyncio.wait_for(asyncio.gather(runner, return_exceptions=True), 10)  # a test may cancel it
            await staff.close()
            await agent.stop()


def ring(call_id: str, ring_timeout: float = 30.0) -> m.CallRing:
    return m.CallRing(call_id=call_id, caller_name="Anne", caller_role="caregiver",
                      ice_servers=[], relay_only=False, ring_timeout=ring_timeout)


async def connect_call(rig: Rig, preconnect: bool = True) -> str:
    """Ring, answer on the device, answer the offer as staff; returns the call id once media flows.

    ``preconnect``: as the unit and the caller do, the offer is answered while it rings and
    the connection comes up then, with nothing sent, before the citizen answers."""
    await rig.agent.wait_for(m.UiHello)
    await rig.wait_screen("idle")
    call_id = str(uuid.uuid4())
    await rig.agent.send(ring(call_id))
    ringing = await rig.agent.wait_for(m.CallRinging)
    assert ringing == m.CallRinging(call_id=call_id, screen_awake=True)
    assert (await rig.wait_screen("ringing")).caller_name == "Anne"

    if preconnect:
        offer = await rig.agent.wait_for(m.CallOffer)
        assert offer.call_id == call_id
        assert "a=candidate:" in offer.sdp and "a=end-of-candidates" in offer.sdp  # gathered whole, no trickle
        await rig.agent.send(m.CallAccept(call_id=call_id, sdp=await rig.staff.answer(offer.sdp, hold=True)))
        await rig.staff.wait_connected()
        ringing_peer = rig.session.ringing[call_id]
        await until(lambda: ringing_peer.connection_state == "connected", 10, "the unit connected while ringing")
        await asyncio.sleep(0.3)  # connected, ringing: still nothing may be sent, either way
        sent = await ringing_peer.sent_and_received()
        assert sent["video_sent"] == sent["audio_sent"] == 0, sent  # no picture, no sound before the answer
        assert (await rig.staff.sent_and_received())["video_sent"] == 0
        assert ringing_peer.peer.media is None and rig.session.screen.name == "ringing"
        assert not rig.agent.of_type(m.CallConnected)  # connected while ringing is not media flowing

    rig.session.press_answer()
    answer = await rig.agent.wait_for(m.CallAnswer)
    assert answer.call_id == call_id
    peer = rig.session.last_call
    assert peer is not None and peer.configuration.iceServers == []  # never aiortc's public STUN
    if preconnect:
        assert answer.sdp is None  # "answered": the connection is up already
        rig.staff.start_media()
    else:
        assert answer.sdp is not None and "a=candidate:" in answer.sdp
        await rig.agent.send(m.CallAccept(call_id=call_id, sdp=await rig.staff.answer(answer.sdp)))
    assert await rig.agent.wait_for(m.CallConnected) == m.CallConnected(call_id=call_id)
    await rig.wait_screen("in-call")
    await rig.staff.wait_connected()

    # Media both ways: the device decodes the staff's video and gets audio, and the reverse.
    await until(lambda: peer.frames_decoded >= FRAMES and peer.audio_frames_received >= AUDIO_FRAMES,
                10, "media from staff to the device")
    await rig.staff.received.wait_for("video", FRAMES)
    await rig.staff.received.wait_for("audio", AUDIO_FRAMES)
    counts = await peer.sent_and_received()
    assert min(counts.values()) > 0, counts
    return call_id


def assert_quality(report: m.CallQualityReport, call_id: str) -> None:
    assert report.call_id == call_id

    def figure(key: str) -> float:
        value = report.quality[key] or 0
        assert isinstance(value, int | float), (key, value)
        return value

    assert figure("frames_decoded") >= FRAMES
    assert figure("packets_received") > 0 and figure("bitrate_sent_bps") > 0
    assert figure("duration_s") > 0


@pytest.mark.slow
async def test_citizen_hangs_up_after_media_flowed_both_ways(rig: Rig) -> None:
    call_id = await connect_call(rig)
    rig.session.press_hang_up()
    report = await rig.agent.wait_for(m.CallQualityReport)
    assert_quality(report, call_id)
    # In this order, so the server has ended the call when the report arrives.
    assert rig.agent.calls() == [
        m.CallRinging(call_id=call_id, screen_awake=True),
        rig.agent.of_type(m.CallOffer)[0],
        m.CallAnswer(call_id=call_id),
        m.CallConnected(call_id=call_id),
        m.CallHangUp(call_id=call_id, reason="hung-up"),
        report,
    ]
    ended = await rig.wait_screen("ended")
    assert ended.end_reason == "hung_up_by_citizen"
    assert rig.names() == ["starting", "idle", "ringing", "connecting", "in-call", "ended"]
    assert rig.session.last_call is not None and rig.session.last_call.connection_state == "closed"
    assert rig.session.peers == {}


@pytest.mark.slow
async def test_staff_hangs_up_and_the_device_reports_quality(rig: Rig) -> None:
    call_id = await connect_call(rig)
    await rig.staff.close()  # the browser closes its peer first: the device sees that at once
    await asyncio.sleep(0.3)  # and the server's word comes a little later
    await rig.agent.send(m.CallEnded(call_id=call_id, reason=EndReason.HUNG_UP_BY_STAFF))
    report = await rig.agent.wait_for(m.CallQualityReport)
    assert_quality(report, call_id)
    assert (await rig.wait_screen("ended")).end_reason == "hung_up_by_staff"
    # The device was told; it says nothing more than its quality.
    assert not rig.agent.of_type(m.CallHangUp)
    # A late duplicate ring of the finished call does not ring again.
    await rig.agent.send(ring(call_id))
    await asyncio.sleep(0.2)
    assert rig.session.screen.name == "ended" and len(rig.agent.of_type(m.CallRinging)) == 1


async def test_unanswered_call_stops_ringing_and_sends_nothing_but_ringing_and_its_offer(rig: Rig) -> None:
    await rig.agent.wait_for(m.UiHello)
    await rig.agent.send(ring("unanswered", ring_timeout=2.0))
    await rig.agent.wait_for(m.CallRinging)
    offer = await rig.agent.wait_for(m.CallOffer)
    ended = await rig.wait_screen("ended", timeout=5)
    assert ended.end_reason == "not_answered"
    await rig.agent.send(m.CallEnded(call_id="unanswered", reason=EndReason.NOT_ANSWERED))  # the server agrees
    await asyncio.sleep(0.1)
    assert rig.agent.calls() == [m.CallRinging(call_id="unanswered", screen_awake=True), offer]
    assert rig.session.last_call is None  # no camera was opened for it


async def test_a_bad_answer_from_staff_ends_the_call_as_media_failed(rig: Rig) -> None:
    await rig.agent.wait_for(m.UiHello)
    await rig.agent.send(ring("bad-sdp"))
    await rig.agent.wait_for(m.CallRinging)
    await rig.agent.wait_for(m.CallOffer)
    rig.session.press_answer()
    assert (await rig.agent.wait_for(m.CallAnswer)).sdp is None
    await rig.agent.send(m.CallAccept(call_id="bad-sdp", sdp="v=0\r\nnot an answer\r\n"))
    assert await rig.agent.wait_for(m.CallHangUp) == m.CallHangUp(call_id="bad-sdp", reason="media-failed")
    assert (await rig.wait_screen("ended")).end_reason == "media_failed"
    await asyncio.sleep(0.1)
    assert not rig.agent.of_type(m.CallQualityReport)  # no media, no quality report
    assert rig.session.last_call is not None and rig.session.last_call.connection_state == "closed"


@pytest.mark.slow
async def test_stopping_the_ui_mid_call_ends_it_as_media_failed_and_reports_quality(rig: Rig) -> None:
    call_id = await connect_call(rig)
    rig.session.stop()  # what SIGTERM does: the citizen did not hang up, media just stopped
    report = await rig.agent.wait_for(m.CallQualityReport)
    assert_quality(report, call_id)
    calls = rig.agent.calls()
    assert calls.index(m.CallHangUp(call_id=call_id, reason="media-failed")) < calls.index(report)
    assert rig.session.last_call is not None and rig.session.last_call.connection_state == "closed"


async def test_relay_only_without_a_relay_fails_at_once_not_after_the_connect_timeout(rig: Rig) -> None:
    await rig.agent.wait_for(m.UiHello)
    await rig.agent.send(m.CallRing(call_id="no-relay", caller_name="Anne", caller_role="caregiver",
                                    ice_servers=[], relay_only=True))
    await rig.agent.wait_for(m.CallRinging)
    rig.session.press_answer()
    hang_up = await rig.agent.wait_for(m.CallHangUp, timeout=5)
    assert hang_up == m.CallHangUp(call_id="no-relay", reason="media-failed")
    assert not rig.agent.of_type(m.CallAnswer)  # an offer nobody could reach is not sent
    assert not rig.agent.of_type(m.CallOffer)  # neither while it rang
    assert (await rig.wait_screen("ended")).end_reason == "media_failed"


@pytest.mark.slow
async def test_a_staff_peer_that_vanishes_without_a_word_is_a_lost_connection(rig: Rig) -> None:
    call_id = await connect_call(rig)
    await rig.staff.close()  # and the server never says call-ended (its link is down)
    hang_up = await rig.agent.wait_for(m.CallHangUp, timeout=5)
    assert hang_up == m.CallHangUp(call_id=call_id, reason="media-failed")
    assert_quality(await rig.agent.wait_for(m.CallQualityReport), call_id)
    assert (await rig.wait_screen("ended")).end_reason == "connection_lost"  # it was connected


@pytest.mark.slow
async def test_an_offer_with_a_section_left_without_candidates_is_made_again(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """One transport gathering nothing (a TURN login refused once, in real life) must
    not cost the call: the device offers again on a fresh peer."""
    addresses = aioice.ice.get_host_addresses  # loopback only, from the rig
    calls = []

    def first_gathering_finds_nothing(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        calls.append(use_ipv4)
        return [] if len(calls) == 1 else list(addresses(use_ipv4, use_ipv6))

    monkeypatch.setattr(aioice.ice, "get_host_addresses", first_gathering_finds_nothing)
    call_id = await connect_call(rig, preconnect=False)  # asserts media both ways
    assert len(calls) >= 3  # two transports on the first peer, more on the second
    assert not rig.agent.of_type(m.CallOffer)  # the ring's offer lacked a candidate: not sent
    offer = rig.agent.of_type(m.CallAnswer)
    assert len(offer) == 1 and offer[0].sdp is not None and sections_without_candidates(offer[0].sdp) == []
    rig.session.press_hang_up()
    assert_quality(await rig.agent.wait_for(m.CallQualityReport), call_id)


def test_sections_without_candidates() -> None:
    sdp = ("v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:0\r\na=end-of-candidates\r\n"
           "m=audio 4 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=candidate:1 1 udp 1 127.0.0.1 4 typ host\r\n"
           "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n")
    assert sections_without_candidates(sdp) == ["video (mid 0)"]
    candidate = "a=candidate:2 1 udp 1 127.0.0.1 5 typ host\r\n"
    assert sections_without_candidates(sdp.replace("a=end-of", candidate + "a=end-of")) == []
    assert sections_without_candidates("v=0\r\n") == []


class ClosableSink(CountingAudioSink):
    """The caller's voice consumed, and whether the session closed it (as it must a SpeakerSink)."""

    closed = False

    async def close(self) -> None:
        self.closed = True


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["citizen hangs up", "the screen stops", "the screen stops at once",
                                    "the screen is torn down"])
async def test_the_calls_speaker_sink_is_closed_when_the_call_ends(rig: Rig, ending: str) -> None:
    """At once, not by the speaker's idle release some seconds later: the voice stops with the call.

    Stopped with no time to spare, or torn down (its task cancelled), the screen never gets to
    close the call through the controller: the session's own last act must close the sink."""
    sinks: list[ClosableSink] = []

    def new_sink() -> ClosableSink:
        sinks.append(ClosableSink())
        return sinks[-1]

    rig.session._audio_sink = new_sink
    await connect_call(rig)
    assert len(sinks) == 1 and sinks[0].frames > 0 and not sinks[0].closed
    if ending == "citizen hangs up":
        rig.session.press_hang_up()
    elif ending == "the screen stops":
        rig.session.stop()
    elif ending == "the screen stops at once":
        rig.session.stop(timeout=0.0)
    else:
        rig.runner.cancel()
    await until(lambda: sinks[0].closed, 10, "the sink closed")


async def test_the_unit_offers_while_it_rings_and_opens_no_camera_before_the_answer(rig: Rig) -> None:
    """The TURN allocation (two round trips or more on a slow link) is made during the ring, and
    the offer goes out then, out of the citizen's wait; the camera and microphone open only when
    the citizen answers, and the answer then carries no offer."""
    await rig.agent.wait_for(m.UiHello)
    await rig.wait_screen("idle")
    await rig.agent.send(ring("gathered"))
    await rig.agent.wait_for(m.CallRinging)
    prepared = rig.session.ringing["gathered"]
    offer = await rig.agent.wait_for(m.CallOffer)
    local = prepared.peer.pc.localDescription if prepared.peer.pc is not None else None
    assert local is not None and offer.sdp == local.sdp
    assert prepared.peer.media is None  # nothing opened, nothing sent
    await rig.agent.send(m.CallAccept(call_id="gathered", sdp=await rig.staff.answer(offer.sdp, hold=True)))
    rig.session.press_answer()
    assert await rig.agent.wait_for(m.CallAnswer) == m.CallAnswer(call_id="gathered")
    assert rig.session.last_call is prepared and rig.session.ringing == {}
    assert prepared.peer.media is not None and prepared.peer.media.video is not None
    assert prepared.peer.pc is not None and prepared.peer.pc.localDescription.sdp == local.sdp  # no new offer


async def test_a_caller_that_sends_while_it_rings_is_neither_shown_nor_heard_before_the_answer(rig: Rig) -> None:
    """Our caller sends nothing before the answer; one that did (another page, a bug) would
    still not be seen or heard on the unit until the citizen answers."""
    shown: list[object] = []
    rig.session._on_video_frame = shown.append
    await rig.agent.wait_for(m.UiHello)
    await rig.wait_screen("idle")
    await rig.agent.send(ring("eager"))
    offer = await rig.agent.wait_for(m.CallOffer)
    await rig.agent.send(m.CallAccept(call_id="eager", sdp=await rig.staff.answer(offer.sdp, hold=True)))
    rig.staff.start_media()  # sending at once, before the citizen answered
    ringing_peer = rig.session.ringing["eager"]
    await until(lambda: ringing_peer.frames_decoded >= 5 and ringing_peer.audio_frames_received >= 10, 10,
                "the eager caller's media arriving at the unit")
    assert shown == [] and isinstance(ringing_peer.audio_sink, CountingAudioSink)
    assert ringing_peer.audio_sink.frames == 0  # received and decoded, never played
    assert (await ringing_peer.sent_and_received())["video_sent"] == 0

    rig.session.press_answer()

    def heard() -> bool:  # the sink the answer attached, read afresh
        sink = ringing_peer.audio_sink
        return isinstance(sink, CountingAudioSink) and sink.frames > 0

    await until(lambda: len(shown) >= 3 and heard(), 10, "the caller seen and heard")


async def test_a_connection_that_failed_while_ringing_is_made_afresh_at_the_answer(rig: Rig) -> None:
    """The offer made ringing was answered, but its connection failed (the caller's side went
    away, say): the answer carries a fresh offer, as an older unit's does, and the call connects."""
    await rig.agent.wait_for(m.UiHello)
    await rig.wait_screen("idle")
    await rig.agent.send(ring("failed-ring"))
    offer = await rig.agent.wait_for(m.CallOffer)
    doomed = StaffBrowser(no_public_stun())
    await rig.agent.send(m.CallAccept(call_id="failed-ring", sdp=await doomed.answer(offer.sdp, hold=True)))
    await doomed.wait_connected()
    prepared = rig.session.ringing["failed-ring"]
    await doomed.close()  # gone without a word: the unit's connection fails (aiortc: on DTLS close)
    await until(lambda: prepared.connection_state in ("failed", "closed"), 15, "the ring's connection failed")
    assert rig.session.screen.name == "ringing"  # still ringing: the citizen may yet answer

    rig.session.press_answer()
    answer = await rig.agent.wait_for(m.CallAnswer)
    assert answer.sdp is not None and answer.sdp != offer.sdp
    await rig.agent.send(m.CallAccept(call_id="failed-ring", sdp=await rig.staff.answer(answer.sdp)))
    assert await rig.agent.wait_for(m.CallConnected) == m.CallConnected(call_id="failed-ring")
    await rig.staff.received.wait_for("video", 3)


async def test_a_ring_nobody_answers_releases_what_it_gathered(rig: Rig) -> None:
    await rig.agent.wait_for(m.UiHello)
    await rig.agent.send(ring("unanswered", ring_timeout=1.0))
    await rig.agent.wait_for(m.CallRinging)
    prepared = rig.session.ringing["unanswered"]
    await rig.wait_screen("ended", timeout=5)
    await until(lambda: prepared.peer.closed and prepared.connection_state in ("closed", "new"), 10,
                "the ring's peer released")
    assert rig.session.ringing == {} and rig.session.last_call is None


@pytest.mark.slow
async def test_support_s_test_ring_never_interrupts_a_call_and_a_screen_without_speaker_says_so(rig: Rig) -> None:
    call_id = await connect_call(rig)
    await rig.agent.send(m.RingTestRequest(request_id="test-1", ring_seconds=30))
    refused = await rig.agent.wait_for(m.RingTestReply)
    assert refused == m.RingTestReply(request_id="test-1", heard=m.RingTestHeard("in-call"))
    assert rig.session.screen.name == "in-call" and rig.session.peers.keys() == {call_id}  # the call goes on
    rig.session.press_hang_up()
    await rig.agent.wait_for(m.CallQualityReport)

    await rig.agent.send(m.RingTestRequest(request_id="test-2", ring_seconds=30))
    await rig.wait_screen("test-ring")
    rig.session.press_answer()
    answered = (await rig.agent.wait_for(m.RingTestReply, count=2)).heard
    assert answered.answer == "answered" and answered.answered_after is not None
    assert answered.ring_sound == "no-speaker"  # headless: no speaker was there to ring, and it says so
    await rig.wait_screen("test-ring-answered")
