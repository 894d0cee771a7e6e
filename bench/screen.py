"""The citizen's screen (the Kivy app): idle CPU, and video rendered at 640x480.

Run from the repository root (Xvfb must be installed; the bench starts its own):

    .venv/bin/python bench/screen.py [--idle-seconds 30] [--render-seconds 20] [--json build/bench-screen.json]

(a) **idle CPU**: a real ``kiosk-server``, an enrolled and assigned
    ``kiosk-agent`` (set up as :mod:`bench.calls` does) and the real full-screen
    ``kiosk-ui`` (1280x800, under Xvfb) showing the idle screen. CPU time
    (utime + stime from ``/proc/PID/stat``) of kiosk-ui over ``--idle-seconds``,
    as a share of one core; Xvfb's own CPU beside it (it composes what the app
    draws: on a unit the GPU does that).

(b) **video rendering**: a probe process runs the app's own
    :class:`kiosk.ui.video.VideoView` full screen under Xvfb and hands it
    640x480 yuv420p frames (a lavfi test pattern decoded once beforehand, so
    making them costs nothing during the run) at 30 frames a second, as a call
    does; counted: frames uploaded and drawn per second, and the probe's CPU as a
    share of one core. A second run hands a new frame at every screen refresh
    with no frame cap, to show the headroom; a third does the same in a 640x480
    window, to show how much of the cost is filling pixels (software GL here).

Bounded: every run has a time limit and every process started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from kiosk.ui.virtual_display import kivy_env, xvfb  # noqa: E402 (after the path is set)

BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = {"idle_cpu_percent": 2.0, "render_fps": 25.0}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def cpu_share(pid: int, seconds: float) -> float:
    """Percent of one core ``pid`` used over the next ``seconds``."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def idle_round(tmp: Path, seconds: float) -> dict[str, float]:
    # bench/calls.py (this directory is on sys.path when run): the same server, agent and citizen
    from calls import Rig, set_up  # type: ignore[import-not-found]

    rig = Rig(tmp)
    try:
        asyncio.run(set_up(rig, ring_timeout=30))
        with xvfb() as (display, screen_server):
            ui = subprocess.Popen([str(BIN / "kiosk-ui"), "--state", str(rig.state), "--size", "1280x800",
                                   "--log-level", "WARNING"], env=kivy_env(display, tmp / "kivy"),
                                  stdout=subprocess.DEVNULL, stderr=(tmp / "kiosk-ui.log").open("ab"))
            try:
                time.sleep(8)  # start-up, the agent's status, the first draw
                assert ui.poll() is None, (tmp / "kiosk-ui.log").read_text()[-2000:]
                xvfb_before = cpu_seconds(screen_server.pid)
                started = time.monotonic()
                ui_share = cpu_share(ui.pid, seconds)
                xvfb_share = 100.0 * (cpu_seconds(screen_server.pid) - xvfb_before) / (time.monotonic() - started)
                rss = int(next(line.split()[1] for line in Path(f"/proc/{ui.pid}/status").read_text().splitlines()
                               if line.startswith("VmRSS:"))) / 1024
            finally:
                stop(ui)
    finally:
        rig.stop()
    return {"kiosk_ui_cpu_percent": ui_share, "xvfb_cpu_percent": xvfb_share, "kiosk_ui_rss_mb": rss,
            "seconds": seconds}


def render_round(tmp: Path, seconds: float, fps: float, window: str = "1280x800") -> dict[str, float]:
    with xvfb() as (display, _pid):
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--render-probe", "--seconds",
                              str(seconds), "--fps", str(fps), "--window", window],
                             env=kivy_env(display, tmp / "kivy-render"),
                             capture_output=True, text=True, timeout=seconds + 90)
    if out.returncode != 0:
        raise RuntimeError(f"the render probe failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def render_probe(seconds: float, fps: float, window: tuple[int, int] = (1280, 800)) -> int:
    """In its own process: the app's VideoView, full screen, fed 640x480 frames at ``fps`` (0: every refresh)."""
    from kiosk.ui.app import configure

    configure(window)
    if fps == 0:
        from kivy.config import Config

        Config.set("graphics", "maxfps", "0")
    import av
    from kivy.app import App
    from kivy.clock import Clock

    from kiosk.ui.video import VideoView

    container = av.open("testsrc2=size=640x480:rate=30", format="lavfi")
    frames = [frame.reformat(format="yuv420p") for _, frame in zip(range(60), container.decode(video=0),
                                                                    strict=False)]
    # (the container stays open: its frames may share its buffers)
    report: dict[str, float] = {}

    class Probe(App):  # type: ignore[misc]
        def build(self) -> Any:
            self.view = VideoView()
            self.fed = 0
            return self.view

        def on_start(self) -> None:
            Clock.schedule_once(self.begin, 2.0)  # the window settles first

        def begin(self, _dt: float) -> None:
            self.view.frames_shown = 0
            self.cpu0, self.t0 = cpu_seconds(os.getpid()), time.monotonic()
            if fps:
                Clock.schedule_interval(self.feed, 1.0 / fps)
            else:
                Clock.schedule_interval(self.feed, 0)
            Clock.schedule_once(self.end, seconds)

        def feed(self, _dt: float) -> None:
            self.view.show(frames[self.fed % len(frames)])
            self.fed += 1

        def end(self, _dt: float) -> None:
            elapsed = time.monotonic() - self.t0
            report.update({"frames_fed_per_s": self.fed / elapsed, "frames_rendered_per_s": self.view.frames_shown
                           / elapsed, "cpu_percent": 100.0 * (cpu_seconds(os.getpid()) - self.cpu0) / elapsed,
                           "textures_made": self.view.textures_made, "seconds": elapsed})
            self.stop()

    Probe().run()
    print(json.dumps(report))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--render-seconds", type=float, default=20.0)
    p.add_argument("--json", type=Path)
    p.add_argument("--render-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=20.0, help=argparse.SUPPRESS)
    p.add_argument("--fps", type=float, default=30.0, help=argparse.SUPPRESS)
    p.add_argument("--window", default="1280x800", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.render_probe:
        width, height = (int(v) for v in args.window.split("x"))
        return render_probe(args.seconds, args.fps, (width, height))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-screen-") as tmp:
        print(f"(a) idle: server, agent, kiosk-ui under Xvfb, {args.idle_seconds:.0f} s …", flush=True)
        idle = idle_round(Path(tmp), args.idle_seconds)
        print(f"(b) rendering 640x480 at 30 fps for {args.render_seconds:.0f} s, then uncapped …", flush=True)
        at_30 = render_round(Path(tmp), args.render_seconds, 30.0)
        uncapped = render_round(Path(tmp), args.render_seconds, 0.0)
        small = render_round(Path(tmp), args.render_seconds, 0.0, "640x480")
    report: dict[str, dict[str, Any]] = {
        "idle": idle, "render_640x480_at_30fps": at_30, "render_640x480_uncapped": uncapped,
        "render_640x480_uncapped_in_a_640x480_window": small,
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "load_before": " ".join(f"{v:.1f}" for v in load_before),
                    "load_after": " ".join(f"{v:.1f}" for v in os.getloadavg())},
    }
    print(f"idle kiosk-ui CPU {idle['kiosk_ui_cpu_percent']:.2f} % of a core (target < "
          f"{TARGETS['idle_cpu_percent']} %), Xvfb {idle['xvfb_cpu_percent']:.2f} %, "
          f"RSS {idle['kiosk_ui_rss_mb']:.0f} MB")
    print(f"640x480 at 30 fps: {at_30['frames_rendered_per_s']:.1f} frames rendered/s (target >= "
          f"{TARGETS['render_fps']}), CPU {at_30['cpu_percent']:.1f} % of a core")
    print(f"640x480 uncapped: {uncapped['frames_rendered_per_s']:.1f} frames rendered/s, "
          f"CPU {uncapped['cpu_percent']:.1f} % of a core")
    print(f"640x480 uncapped in a 640x480 window: {small['frames_rendered_per_s']:.1f} frames rendered/s, "
          f"CPU {small['cpu_percent']:.1f} % of a core")
    print(f"load average before {report['machine']['load_before']}, after {report['machine']['load_after']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
