"""Calls over impaired links, per profile: set-up, answer → first frame, freezes, lost sound.

Run from the repository root:

    nice .venv/bin/python bench/rural_calls.py --calls 200 [--talk 10] [--json build/bench-rural.json]

Each call is two :class:`kiosk.media.peer.CallPeer` (the peer the unit and the Python
caregiver both use) in this process, relay-only through a real coturn started on
127.0.0.1 (scripts/coturn.sh, as the tests start it); the unit's leg goes through
:class:`tests.impairment.UdpImpairmentRelay` (its docstring says what it emulates and
what it cannot). Media are test sources, 320x240 at 15 fps and a tone, VP8, both ways.

Profiles (the unit's leg, both directions; delay one way):

- ``clean``: loopback;
- ``rural``: 5 % random loss, 150 ms + up to 10 ms jitter (300 ms round trip);
- ``1mbit``: as ``rural``, through a 1 Mbit/s bottleneck;
- ``outage``: clean, with the link dark for 5 s from 3 s after the answer.

Each call is pre-connected as the unit and the caregiver make it (tests/media/rural.py):
offer and answer exchanged while it rings ``--ring`` seconds, no media before the answer,
the caregiver's media one unit-leg trip after it.

Per call: *set up* (connected within 30 s, the server's connect timeout), *answer →
connected* (0 when ICE and DTLS were up while it rang), *answer → first frame* (the later
of the two sides' first decoded video frame), *frozen* (seconds without a new video frame beyond 0.5 s, both sides, per
minute of call and as a share of it), *sound lost* (audio packets lost for good, 20 ms each,
both sides, per minute: aiortc conceals nothing, so this is what a listener misses;
the audio-concealment figure of a browser), and for ``outage`` the time from sound returning to
video returning. Per profile, loss recovery's counts over both sides of all its calls: packets
NACKed, NACKs repeated, holes given up, key frames requested. Percentiles are nearest-rank.
Bounded by ``--max-seconds``.

``--processes K`` runs K copies of this bench side by side, each with its own coturn and relay,
seeds ``--seed`` to ``--seed + K - 1``, and its share of the calls; their calls are pooled and
summarized as one run. It is how N = 200 per profile fits in an hour on this machine (one call
at a time, a profile takes ~45 minutes): the copies share the cores, so their figures are, if
anything, worse than one call at a time would give.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiosk.media.keyframes import LossRecovery, installed_loss_recovery  # noqa: E402
from kiosk.media.peer import LocalMedia  # noqa: E402
from tests.impairment import CLEAN, RURAL_4G, RURAL_4G_1MBIT, Impairment  # noqa: E402
from tests.media.rural import RING_SECONDS, Rig, connected_after_answer, media_of, rig_with  # noqa: E402
from tests.turn_fixture import TurnServer, running_coturn  # noqa: E402

PROFILES: dict[str, tuple[Impairment, float | None]] = {  # impairment, outage start (s after answer)
    "clean": (CLEAN, None),
    "rural": (RURAL_4G, None),
    "1mbit": (RURAL_4G_1MBIT, None),
    "outage": (CLEAN, 3.0),
}
OUTAGE = 5.0


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def one_call(rig: Rig, talk: float, outage_at: float | None,
                   media: Callable[[], Awaitable[LocalMedia]], ring: float) -> dict[str, Any]:
    started = time.monotonic()
    try:
        unit, caregiver, answered = await rig.call(media, ring)
    except Exception as exc:  # noqa: BLE001 - any failure to set up is a call that did not set up
        return {"set_up": False, "error": f"{type(exc).__name__}: {exc}"[:200], "seconds": time.monotonic() - started}
    setup = connected_after_answer(unit, caregiver, answered)
    sides = (unit, caregiver)
    try:
        if outage_at is not None:
            await asyncio.sleep(max(0.0, answered + outage_at - time.monotonic()))
            rig.relay.outage(OUTAGE)
        await asyncio.sleep(max(0.0, answered + talk - time.monotonic()))
        firsts = [s.peer.first_video_at for s in sides]
        lost_sound = [await s.sound_lost_s() for s in sides]
        qualities = [await s.peer.close() for s in sides]
        frozen_per_min, frozen_share, sound_lost = [], [], []
        for lost, quality in zip(lost_sound, qualities, strict=True):
            if quality is None or quality.duration_s <= 0:
                continue
            minutes = quality.duration_s / 60
            frozen_per_min.append(quality.frozen_s / minutes)
            frozen_share.append(quality.frozen_s / quality.duration_s)
            sound_lost.append(lost / minutes)
        first_frame = max(f for f in firsts if f is not None) - answered if None not in firsts else None
        return {
            "set_up": True, "connect_s": setup, "first_frame_s": first_frame,
            "frozen_per_min": frozen_per_min, "frozen_share": frozen_share, "sound_lost_per_min": sound_lost,
            "recovery_s": [s.peer.link.recovery_s for s in sides],
            "failed": [s.peer.label for s in sides if "failed" in s.states],
        }
    finally:
        await asyncio.gather(unit.peer.close(), caregiver.peer.close())


def summarize(calls: list[dict[str, Any]]) -> dict[str, Any]:
    up = [c for c in calls if c["set_up"]]

    def values(key: str) -> list[float]:
        out: list[float] = []
        for call in up:
            value = call[key]
            out += [v for v in value if v is not None] if isinstance(value, list) else [value] * (value is not None)
        return out

    connect, first, share = values("connect_s"), values("first_frame_s"), values("frozen_share")
    frozen, sound, recovery = values("frozen_per_min"), values("sound_lost_per_min"), values("recovery_s")
    return {
        "calls": len(calls), "set_up": len(up), "set_up_share": len(up) / len(calls) if calls else None,
        "connect_p50_s": pct(connect, 50), "connect_p99_s": pct(connect, 99),
        "first_frame_p50_s": pct(first, 50), "first_frame_p99_s": pct(first, 99),
        "frozen_s_per_min_mean": statistics.fmean(frozen) if frozen else None,
        "frozen_share_mean": statistics.fmean(share) if share else None,
        "frozen_share_p99": pct(share, 99),
        "sound_lost_s_per_min_mean": statistics.fmean(sound) if sound else None,
        "video_back_after_sound_p50_s": pct(recovery, 50), "video_back_after_sound_max_s": pct(recovery, 100),
        "calls_ended_by_a_peer": sum(1 for c in up if c["failed"]),
        "errors": sorted({c["error"] for c in calls if not c["set_up"]}),
    }


RECOVERY_COUNTS = ("packets_nacked", "nacks_repeated", "holes_given_up", "keyframes_requested")


def recovery_counts(recovery: LossRecovery | None) -> dict[str, int]:
    """Loss recovery's counts over the profile's calls (both sides): what the freezes came from."""
    if recovery is None:
        return {}
    counts = {"packets_nacked": recovery.packets_nacked, "nacks_repeated": recovery.nacks_repeated,
              "holes_given_up": recovery.holes_skipped, "keyframes_requested": recovery.keyframes_requested}
    recovery.buffers.clear()  # the next profile counts afresh
    recovery.nack_generators.clear()
    return counts


async def bench(args: argparse.Namespace, turn: TurnServer) -> dict[str, Any]:
    deadline = time.monotonic() + args.max_seconds
    media = media_of(320, 240, 15)
    report: dict[str, Any] = {"profiles": {}, "calls": {}}
    for name in args.profiles:
        impairment, outage_at = PROFILES[name]
        talk = max(args.talk, (outage_at or 0.0) + OUTAGE + 4.0) if outage_at is not None else args.talk
        calls: list[dict[str, Any]] = []
        async for rig in rig_with(turn, impairment, seed=args.seed):
            for _ in range(args.calls):
                if time.monotonic() > deadline:
                    break
                calls.append(await one_call(rig, talk, outage_at, media, args.ring))
        report["profiles"][name] = {"talk_s": talk, **summarize(calls), **recovery_counts(installed_loss_recovery())}
        report["calls"][name] = calls
        print(f"{name}: {json.dumps(report['profiles'][name])}", flush=True)
    return report


def in_processes(args: argparse.Namespace) -> dict[str, Any]:
    """``--processes``: copies of this bench side by side, their calls pooled (the module's docstring)."""
    with tempfile.TemporaryDirectory(prefix="bench-rural-") as tmp:
        children: list[tuple[subprocess.Popen[bytes], Path]] = []
        for i in range(args.processes):
            out = Path(tmp) / f"{i}.json"
            calls = args.calls // args.processes + (i < args.calls % args.processes)
            command = [sys.executable, __file__, "--calls", str(calls), "--talk", str(args.talk),
                       "--ring", str(args.ring), "--seed", str(args.seed + i), "--max-seconds", str(args.max_seconds),
                       "--json", str(out), "--profiles", *args.profiles]
            children.append((subprocess.Popen(command), out))
        failed = [child.args for child, _ in children if child.wait() != 0]
        if failed:
            raise SystemExit(f"a copy of the bench failed: {failed}")
        return pooled([json.loads(out.read_text()) for _, out in children])


def pooled(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several copies' reports: their calls summarized together, their counts added."""
    report: dict[str, Any] = {"profiles": {}, "calls": {}}
    for name in reports[0]["calls"]:
        calls = [call for r in reports for call in r["calls"][name]]
        counts = {key: sum(r["profiles"][name].get(key, 0) for r in reports) for key in RECOVERY_COUNTS}
        report["profiles"][name] = {"talk_s": reports[0]["profiles"][name]["talk_s"], **summarize(calls), **counts}
        report["calls"][name] = calls
        print(f"{name} (all {len(reports)} copies): {json.dumps(report['profiles'][name])}", flush=True)
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=200, help="calls per profile (default 200)")
    p.add_argument("--talk", type=float, default=10.0, help="seconds each call lasts after the answer (default 10)")
    p.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    p.add_argument("--ring", type=float, default=RING_SECONDS,
                   help=f"seconds the unit rings before the answer, pre-connecting (default {RING_SECONDS})")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="stop placing calls after this long")
    p.add_argument("--processes", type=int, default=1, help="copies of this bench side by side, calls pooled")
    args = p.parse_args()
    if args.processes < 1 or args.calls < args.processes:
        p.error("--processes must be at least 1 and at most --calls")
    if args.processes > 1:
        load, started = os.getloadavg(), time.monotonic()
        report = in_processes(args)
        return finish(args, report, load, started)
    with tempfile.TemporaryDirectory(prefix="bench-rural-") as tmp, running_coturn(Path(tmp)) as turn:
        load = os.getloadavg()
        started = time.monotonic()
        report = asyncio.run(bench(args, turn))
    return finish(args, report, load, started)


def finish(args: argparse.Namespace, report: dict[str, Any], load: tuple[float, float, float], started: float) -> int:
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "load_before": load, "load_after": os.getloadavg(),
                         "seconds": round(time.monotonic() - started, 1), "calls_per_profile": args.calls,
                         "talk_s": args.talk, "ring_s": args.ring, "processes": args.processes}
    print(json.dumps(report["machine"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
