"""One caregiver call (kiosk.caregiver.call.StaffCall) fed the server's messages by hand.

The verdicts are the shared call machine's: these tests check that the
caregiver reaches the ones the server records, and that what it sends back
is what the page sends. The whole client against a real server and unit is
in tests/e2e/test_call_client.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from kiosk.caregiver import CallEndedEarly, StaffCall, TestMedia, open_test_media
from kiosk.media.loopback import loopback_only
from kiosk.media.peer import CallPeer, rtc_configuration
from kiosk.protocol import messages as m
from kiosk.protocol.call import EndReason

pytestmark = pytest.mark.timeout(30)

TINY = TestMedia(64, 48, 5)


class Rig:
    def __init__(self) -> None:
        self.sent: list[m.StaffToServer] = []
        self.over: list[StaffCall] = []
        self.now = 100.0
        self.call = StaffCall("citizen-1", TINY, send=self.send, on_over=self.over.append, prepare_media=False,
                              clock=lambda: self.now)

    async def send(self, message: m.StaffToServer) -> None:
        self.sent.append(message)

    def place(self) -> None:
        assert self.call.press_call() == m.CallStart(citizen_id="citizen-1")
        self.call.on_message(m.CallPlaced(call_id="c1", citizen_name="Karen", ice_servers=[]), 100.01)


async def test_withdrawn_while_ringing_is_cancelled_by_caller() -> None:
    rig = Rig()
    rig.place()
    rig.call.on_message(m.CallRinging(call_id="c1"), 100.02)
    rig.call.on_message(m.CallRinging(call_id="c1"), 100.05)  # a duplicate keeps the first time
    result = await rig.call.hang_up()
    assert result.end_reason is EndReason.CANCELLED_BY_CALLER and result.refused is None
    assert rig.sent == [m.CallHangUp(call_id="c1", reason="hung-up")]
    assert result.times.ringing == 100.02 and result.times.hang_up_sent == 100.0
    assert rig.over == [rig.call]
    assert await rig.call.hang_up() == result  # again: nothing more is sent
    assert len(rig.sent) == 1


async def test_the_servers_reason_is_the_calls_reason_and_nothing_is_sent() -> None:
    rig = Rig()
    rig.place()
    facts = m.DeviceFacts(online=True, online_since=10.0, last_seen=150.0, rang_for_seconds=60.0, ui_alive=True,
                         screen_awake=False)
    rig.call.on_message(m.CallEnded(call_id="c1", reason=EndReason.NOT_ANSWERED, facts=facts), 160.0)
    result = await rig.call.wait_ended(5)
    assert (result.end_reason, result.facts, result.times.ended) == (EndReason.NOT_ANSWERED, facts, 160.0)
    assert rig.sent == [] and rig.over == [rig.call]
    with pytest.raises(CallEndedEarly) as early:
        await rig.call.wait_answered(1)
    assert early.value.reason is EndReason.NOT_ANSWERED


async def test_a_refusal_before_the_call_was_placed_is_no_end_reason() -> None:
    rig = Rig()
    rig.call.press_call()
    rejected = m.Rejected(reason="forbidden", detail="you are not in this citizen's care team")
    assert rig.call.belongs(rejected)
    rig.call.on_message(rejected, 100.01)
    with pytest.raises(CallEndedEarly):
        await rig.call.wait_placed(1)
    result = await rig.call.wait_ended(1)
    assert result.end_reason is None and result.refused == "forbidden" and rig.sent == []


async def test_a_closed_socket_ends_the_call_as_the_server_records_it() -> None:
    rig = Rig()
    rig.place()
    rig.call.connection_lost()  # the server feeds its machine our hang-up when the socket closes
    result = await rig.call.wait_ended(1)
    assert result.end_reason is EndReason.CANCELLED_BY_CALLER and result.error == "the call socket closed"


async def test_only_this_calls_messages_belong_to_it() -> None:
    rig = Rig()
    rig.place()
    assert rig.call.belongs(m.CallRinging(call_id="c1"))
    assert not rig.call.belongs(m.CallRinging(call_id="other"))
    assert not rig.call.belongs(m.CallPlaced(call_id="c2", citizen_name="x", ice_servers=[]))  # placed already
    await rig.call.hang_up()
    assert not rig.call.belongs(m.CallEnded(call_id="c1", reason=EndReason.HUNG_UP_BY_STAFF))  # it is over


@pytest.mark.slow
async def test_an_offer_that_cannot_be_answered_is_a_media_failure() -> None:
    rig = Rig()
    rig.place()
    rig.call.on_message(m.CallAnswer(call_id="c1", sdp="v=0\r\nnot an offer\r\n"), 101.0)
    result = await rig.call.wait_ended(15)
    assert result.end_reason is EndReason.MEDIA_FAILED
    assert result.error is not None and "could not answer the offer" in result.error
    assert rig.sent == [m.CallHangUp(call_id="c1", reason="media-failed")]  # no CallAccept, no quality


async def test_an_unusable_offer_while_it_rings_fails_the_call_only_once_answered() -> None:
    """While it rings the call is not ours to fail (the server would not hear of it): the
    citizen's answer finds no connection, and that is a media failure."""
    rig = Rig()
    rig.place()
    rig.call.on_message(m.CallOffer(call_id="c1", sdp="v=0\r\nnot an offer\r\n"), 100.5)
    await asyncio.sleep(0.3)
    assert not rig.call.ended and rig.sent == []
    rig.call.on_message(m.CallAnswer(call_id="c1"), 101.0)
    result = await rig.call.wait_ended(15)
    assert result.end_reason is EndReason.MEDIA_FAILED and result.error is not None
    assert rig.sent == [m.CallHangUp(call_id="c1", reason="media-failed")]


@pytest.mark.slow
async def test_the_caregiver_answers_the_ring_offer_sends_nothing_until_the_answer_then_starts() -> None:
    """Against a real unit peer (the one DeviceCall uses) on loopback: connected while it rings,
    no media either way; "answered" without SDP starts ours, and the call counts as connected."""
    with loopback_only():
        rig = Rig()
        rig.call._media_task = asyncio.ensure_future(open_test_media(TINY))  # as the page opens it before calling
        rig.place()
        unit = CallPeer(rtc_configuration([], relay_only=False), label="unit")
        try:
            accept = await offer_while_ringing(rig, unit)
            assert rig.call.times.accept_sent is not None
            await unit.accept(accept.sdp)
            await unit.wait_connected(10)
            staff = rig.call.peer
            assert staff is not None and staff.held
            await staff.wait_connected(10)
            await asyncio.sleep(0.3)
            assert (await staff.sent_and_received())["video_sent"] == 0  # our camera is open, sending nothing
            assert (await staff.sent_and_received())["audio_sent"] == 0
            assert not rig.call.in_call and rig.sent == [accept]  # connected while ringing is not in call

            await unit.open_media(lambda: open_test_media(TINY))
            unit.start_media()
            rig.call.on_message(m.CallAnswer(call_id="c1"), 101.0)
            await rig.call.wait_media(video=3, audio=5, timeout=15)
            await unit.wait_frames(video=3, audio=5, timeout=15)
            assert rig.sent[1:] == [m.CallConnected(call_id="c1")] and rig.call.in_call
        finally:
            await rig.call.hang_up()
            await unit.close()


@pytest.mark.slow
async def test_a_ring_that_ends_unanswered_closes_the_caregivers_pre_connected_peer() -> None:
    with loopback_only():
        rig = Rig()
        rig.place()
        unit = CallPeer(rtc_configuration([], relay_only=False), label="unit")
        try:
            await offer_while_ringing(rig, unit)
            peer = rig.call.peer
            assert peer is not None and not peer.closed
            rig.call.on_message(m.CallEnded(call_id="c1", reason=EndReason.NOT_ANSWERED), 160.0)
            result = await rig.call.wait_ended(5)
            assert result.end_reason is EndReason.NOT_ANSWERED and peer.closed
            assert result.quality is None  # no media flowed: no quality report
            assert not any(isinstance(sent, m.CallQualityReport | m.CallConnected) for sent in rig.sent)
        finally:
            await unit.close()


async def offer_while_ringing(rig: Rig, unit: CallPeer) -> m.CallAccept:
    """The unit's offer, made as it rings, handed to the caregiver; its answer, sent while ringing."""
    await unit.prepare_offer("video/VP8")
    prepared = unit.take_prepared_offer()
    assert prepared is not None
    rig.call.on_message(m.CallOffer(call_id="c1", sdp=prepared[1]), 100.5)
    await until(lambda: any(isinstance(sent, m.CallAccept) for sent in rig.sent), "our answer while ringing")
    accept = rig.sent[0]
    assert isinstance(accept, m.CallAccept)
    return accept


async def until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("size", ["12", "0x48", "axb"])
def test_the_command_line_refuses_a_bad_size_with_a_clear_error(size: str) -> None:
    done = subprocess.run([sys.executable, "-m", "kiosk.caregiver", "--console", "http://127.0.0.1:9", "--user",
                           "anne", "--citizen", "c", "--password-stdin", "--size", size],
                          input="x\n", capture_output=True, text=True, timeout=20)
    assert done.returncode == 2 and ("WIDTHxHEIGHT" in done.stderr or "positive" in done.stderr), done.stderr
