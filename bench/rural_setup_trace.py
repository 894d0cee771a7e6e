"""What a slow rural call waits for: the unit leg's datagrams, from the ring's start to connected.

Run from the repository root:

    PYTHONPATH=$PWD .venv/bin/python bench/rural_setup_trace.py --calls 30 [--slower-than 1.0]

The rig of bench/rural_calls.py (tests/media/rural.py: two CallPeer, relay-only, the unit's
leg through :class:`tests.impairment.UdpImpairmentRelay` at 5 % loss and 300 ms round trip
in front of a real coturn), with the relay recording every datagram it passes or drops:
TURN transactions (Allocate, its 401, Refresh, CreatePermission, ChannelBind) with their
transaction ids so a retransmission shows as the same id again, ICE checks inside TURN
channels (or Send/Data indications), DTLS handshake records. Each call rings
``--ring`` seconds, is answered, and ends once both sides are connected. For every call
whose answer -> connected exceeds ``--slower-than`` seconds, the timeline from the ring's
start is printed; a summary line for every call. A diagnostic, not a benchmark: it logs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aioice import stun  # noqa: E402

from kiosk.media.encoders import VP8_MIME  # noqa: E402
from kiosk.media.keyframes import install_loss_recovery  # noqa: E402
from tests.impairment import RURAL_4G, LinkImpairment, UdpImpairmentRelay  # noqa: E402
from tests.media.rural import RING_SECONDS, SETUP_BOUND, SMALL, Rig  # noqa: E402
from tests.turn_fixture import TurnServer, running_coturn  # noqa: E402

DTLS_HANDSHAKE = {1: "ClientHello", 2: "ServerHello", 3: "HelloVerifyRequest", 11: "Certificate",
                  12: "ServerKeyExchange", 13: "CertificateRequest", 14: "ServerHelloDone",
                  15: "CertificateVerify", 16: "ClientKeyExchange"}


def _stun(data: bytes) -> str:
    try:
        message = stun.parse_message(data)
    except ValueError:
        return f"stun? {len(data)} B"
    extra = ""
    if message.message_class in (stun.Class.ERROR,) and message.error_code:
        extra = f" {message.error_code}"
    if "USE-CANDIDATE" in message.attributes:
        extra += " USE-CANDIDATE"
    return f"{message.message_method.name} {message.message_class.name}{extra} {message.transaction_id.hex()[:6]}"


def _payload(data: bytes) -> str:
    """A datagram a peer sends inside TURN: an ICE check, DTLS, or media."""
    first = data[0] if data else 0
    if first < 4:
        return "ICE " + _stun(data)
    if 20 <= first < 64:
        if first == 22 and len(data) > 13:
            epoch = int.from_bytes(data[3:5], "big")
            kind = DTLS_HANDSHAKE.get(data[13], f"hs{data[13]}") if epoch == 0 else "encrypted flight"
            return f"DTLS {kind} {len(data)} B"
        return f"DTLS ct={first} {len(data)} B"
    if 128 <= first < 192:
        return f"RTP/RTCP {len(data)} B"
    return f"? {len(data)} B"


def describe(data: bytes) -> str:
    if len(data) >= 4 and (data[0] & 0xC0) == 0x40:
        channel = int.from_bytes(data[0:2], "big")
        return f"ch{channel:x} " + _payload(data[4:])
    text = _stun(data)
    if text.startswith(("SEND", "DATA")):
        try:
            inner = stun.parse_message(data).attributes.get("DATA")
        except ValueError:
            inner = None
        if isinstance(inner, bytes):
            text += " [" + _payload(inner) + "]"
    return "TURN " + text


@dataclass
class Trace:
    started: float = 0.0
    recording: bool = False
    lines: list[tuple[float, str]] = field(default_factory=list)
    lost: Counter[str] = field(default_factory=Counter)

    def mark(self, what: str) -> None:
        self.lines.append((time.monotonic() - self.started, f"== {what}"))


class TracingRelay(UdpImpairmentRelay):
    """The impairment relay, writing down each datagram's fate (the same decision it acts on)."""

    trace: Trace

    def _schedule(self, link: LinkImpairment, data: bytes, deliver: Callable[[bytes], None]) -> None:
        now = self._clock()
        at = link.admit(len(data), now)
        trace = self.trace
        if trace.recording:
            text = describe(data)
            arrow = "unit >" if link is self.up else "unit <"
            ms = "" if at is None else f" (+{(at - now) * 1000:.0f} ms)"
            trace.lines.append((now - trace.started, f"{arrow} {text}{' LOST' if at is None else ms}"))
            if at is None:
                trace.lost[text.split(" ")[0] + " " + " ".join(text.split(" ")[1:3])] += 1
        if at is None:
            return
        if at <= now:
            deliver(data)
        else:
            asyncio.get_running_loop().call_later(at - now, deliver, data)


async def one_call(rig: Rig, relay: TracingRelay, ring: float) -> tuple[float, Trace]:
    trace = relay.trace = Trace(started=time.monotonic(), recording=True)
    unit, caregiver = rig.side("unit", through_relay=True), rig.side("caregiver", through_relay=False)
    try:
        await asyncio.gather(unit.peer.prepare_offer(VP8_MIME), caregiver.peer.open_media(SMALL))
        trace.mark("unit's offer gathered")
        prepared = unit.peer.take_prepared_offer()
        assert prepared is not None
        answer = await caregiver.peer.answer(prepared[1], hold=True)
        trace.mark("caregiver's answer gathered")
        await unit.peer.accept(answer)
        trace.mark("unit accepted the answer (ICE starts)")
        for side in (unit, caregiver):
            pc = side.peer.pc
            assert pc is not None
            label = side.peer.label

            def ice_changed(pc: object = pc, label: str = label) -> None:
                trace.mark(f"{label} ICE {getattr(pc, 'iceConnectionState', '?')}")

            pc.on("iceconnectionstatechange", ice_changed)
        await asyncio.sleep(max(0.0, trace.started + ring - time.monotonic()))
        await unit.peer.open_media(SMALL)
        answered = time.monotonic()
        trace.mark("answered")
        unit.peer.start_media()
        caregiver.peer.start_media()
        await asyncio.gather(unit.peer.wait_connected(SETUP_BOUND), caregiver.peer.wait_connected(SETUP_BOUND))
        for side in (unit, caregiver):
            at = side.peer.ice_connected_at
            if at is not None:
                trace.lines.append((at - trace.started, f"== {side.peer.label} connected (ICE + DTLS)"))
        trace.recording = False
        times = [t for t in (unit.peer.ice_connected_at, caregiver.peer.ice_connected_at) if t is not None]
        return max(0.0, max(times) - answered), trace
    finally:
        trace.recording = False
        await asyncio.gather(unit.peer.close(), caregiver.peer.close())


async def run(args: argparse.Namespace, turn: TurnServer) -> None:
    install_loss_recovery()
    lost_all: Counter[str] = Counter()
    slow = 0
    async with TracingRelay((turn.host, turn.port), RURAL_4G, seed=args.seed) as relay:
        relay.trace = Trace()
        rig = Rig(turn, relay, answered_trip=RURAL_4G.delay)
        for n in range(args.calls):
            connect, trace = await one_call(rig, relay, args.ring)
            lost_all.update(trace.lost)
            up = max((t for t, line in trace.lines if "connected" in line), default=float("nan"))
            print(f"call {n}: answer -> connected {connect:.2f} s, ring start -> connected {up:.2f} s, "
                  f"lost {dict(trace.lost)}", flush=True)
            if connect > args.slower_than:
                slow += 1
                for t, line in sorted(trace.lines, key=lambda item: item[0]):
                    if "RTP/RTCP" not in line:
                        print(f"   {t:6.3f}  {line}")
    print(f"{slow}/{args.calls} calls slower than {args.slower_than} s; lost over all calls: {dict(lost_all)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--ring", type=float, default=RING_SECONDS)
    p.add_argument("--slower-than", type=float, default=1.0, help="print the timeline of calls slower than this")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="trace-rural-") as tmp, running_coturn(Path(tmp)) as turn:
        asyncio.run(run(args, turn))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
