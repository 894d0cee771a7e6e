"""A real PipeWire for tests: ``pipewire`` + ``wireplumber`` + ``pipewire-pulse`` in a private runtime dir.

Loaded by the root conftest (``pytest_plugins``). The session fixture
``pipewire_server`` starts a private D-Bus session bus (WirePlumber exits
without one), PipeWire with the kiosk's echo-cancel drop-in
(``kiosk/media/audio_echo_cancel.conf``, as the image installs it), WirePlumber
and the pulse server, each with its own ``XDG_RUNTIME_DIR``, config and state
directories, so nothing of the machine's sound is touched and it works as root
(CI) as well as unprivileged. The function fixture ``pipewire`` points this
process's environment at it (so ``pactl``, ``pacat``... started by the code
under test find it) and removes the nodes a test made.

There is no sound card: tests make null sinks (a "speaker" whose monitor is
what the speaker would play) and virtual sources (a "microphone" fed by pw-link
from sink monitors: the room's sound).

If PipeWire is not installed the tests are *skipped* with how to install it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

MEDIA = Path(__file__).resolve().parents[1] / "kiosk" / "media"
DROP_IN = MEDIA / "audio_echo_cancel.conf"  # PipeWire's, as the image installs it
NO_SUSPEND = MEDIA / "audio_no_suspend.lua"  # WirePlumber's, likewise
PROGRAMS = ("dbus-daemon", "pipewire", "wireplumber", "pipewire-pulse", "pw-cli", "pw-dump", "pw-link",
            "pactl", "pacat", "parec")
READY_TIMEOUT = 20.0  # seconds; ready in about one on a loaded machine
RATE = 48000


class PipeWireDidNotStart(RuntimeError):
    pass


class PipeWire:
    """One private PipeWire instance and helpers to shape its graph."""

    def __init__(self, root: Path) -> None:
        self.root = root
        runtime = root / "run"
        self.env = {
            "XDG_RUNTIME_DIR": str(runtime),
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_STATE_HOME": str(root / "state"),
            "PIPEWIRE_RUNTIME_DIR": str(runtime),
            "PULSE_RUNTIME_PATH": str(runtime / "pulse"),
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus",
        }
        self._processes: list[subprocess.Popen[bytes]] = []
        self.made: list[str] = []  # node names made by a test, removed after it

    # --- life ------------------------------------------------------------------

    def start(self) -> PipeWire:
        runtime = Path(self.env["XDG_RUNTIME_DIR"])
        runtime.mkdir(parents=True, mode=0o700)
        drop_ins = Path(self.env["XDG_CONFIG_HOME"]) / "pipewire" / "pipewire.conf.d"
        drop_ins.mkdir(parents=True)
        shutil.copy(DROP_IN, drop_ins / "kiosk-echo-cancel.conf")
        wireplumber = Path(self.env["XDG_CONFIG_HOME"]) / "wireplumber" / "main.lua.d"
        wireplumber.mkdir(parents=True)
        shutil.copy(NO_SUSPEND, wireplumber / "51-kiosk-no-suspend.lua")
        Path(self.env["XDG_STATE_HOME"]).mkdir()
        try:
            self._spawn("dbus-daemon", "--session", "--nofork", f"--address={self.env['DBUS_SESSION_BUS_ADDRESS']}")
            self._wait_for(lambda: (runtime / "bus").exists(), "the D-Bus session bus")
            self._spawn("pipewire")
            self._wait_for(lambda: (runtime / "pipewire-0").exists(), "pipewire")
            self._spawn("wireplumber")
            self._spawn("pipewire-pulse")
            self._wait_for(lambda: "kiosk-echo-cancel-sink" in self.names("sinks"), "the echo canceller's sink")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.terminate()
        for process in reversed(self._processes):
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()

    def pid(self, program: str) -> int:
        """The process id of ``program`` (``pipewire``, ``wireplumber``...) of this instance."""
        return next(p.pid for p in self._processes if program_of(p) == program)

    def _spawn(self, *command: str) -> None:
        log = (self.root / f"{command[0]}.log").open("wb")
        self._processes.append(subprocess.Popen(command, env={**os.environ, **self.env}, stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

    def _wait_for(self, ready: object, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for process in self._processes:
                if process.poll() is not None:
                    raise PipeWireDidNotStart(f"{process.args!r} exited with {process.returncode}; "
                                              f"see the logs in {self.root}")
            assert callable(ready)
            if ready():
                return
            time.sleep(0.05)
        raise PipeWireDidNotStart(f"{what} was not ready within {READY_TIMEOUT:.0f} s; see the logs in {self.root}")

    # --- the graph -------------------------------------------------------------

    def run(self, *command: str, check: bool = True) -> str:
        result = subprocess.run(command, env={**os.environ, **self.env}, capture_output=True, text=True,
                                timeout=15, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def names(self, kind: str) -> list[str]:
        out = self.run("pactl", "list", "short", kind, check=False)
        return [line.split("\t")[1] for line in out.splitlines() if "\t" in line]

    def node_id(self, name: str) -> int | None:
        for obj in json.loads(self.run("pw-dump") or "[]"):
            if obj.get("type") == "PipeWire:Interface:Node" and \
                    obj.get("info", {}).get("props", {}).get("node.name") == name:
                return int(obj["id"])
        return None

    def add_node(self, name: str, media_class: str, priority: int) -> None:
        """A null node (a speaker with no sound card, or a virtual source), kept after pw-cli exits.

        Never suspended, as audio_no_suspend.lua makes a unit's ALSA devices: WirePlumber
        0.4.13 crashes when a node is removed while its idle-suspend timer runs.
        """
        props = (f"{{ factory.name=support.null-audio-sink node.name={name} media.class={media_class} "
                 f"object.linger=true audio.position=[FL FR] monitor.channel-volumes=true "
                 f"priority.session={priority} priority.driver={priority} session.suspend-timeout-seconds=0 }}")
        self.run("pw-cli", "create-node", "adapter", props)
        self.made.append(name)
        # Listed is not ready: WirePlumber configures the node's ports a moment later.
        self._wait_for(lambda: self.has_ports(name, "-i") and self.has_ports(name, "-o"), f"the ports of {name}")
        kind = "sinks" if media_class == "Audio/Sink" else "sources"
        self._wait_for(lambda: name in self.names(kind), f"the pulse server to list {name}")

    def has_ports(self, node: str, direction: str) -> bool:
        """Whether ``node`` has input (``-i``) or output (``-o``) ports yet."""
        return any(line.startswith(f"{node}:") for line in self.run("pw-link", direction).splitlines())

    def add_speaker(self, name: str, priority: int = 1000) -> None:
        self.add_node(name, "Audio/Sink", priority)

    def add_microphone(self, name: str, hears: list[str], priority: int = 1000) -> None:
        """A microphone in a room where the sinks ``hears`` play: their monitors are linked into it."""
        self.add_node(name, "Audio/Source/Virtual", priority)
        for sink in hears:
            for channel in ("FL", "FR"):
                self.run("pw-link", f"{sink}:monitor_{channel}", f"{name}:input_{channel}")

    def remove(self, name: str) -> None:
        """Unplug: the node disappears."""
        node = self.node_id(name)
        if node is not None:
            self.run("pw-cli", "destroy", str(node))
        with contextlib.suppress(ValueError):
            self.made.remove(name)

    def links_to(self, port_prefix: str) -> str:
        """``pw-link -l`` for ports starting with ``port_prefix`` (what they are linked to)."""
        out = self.run("pw-link", "-l")
        lines, keep = [], False
        for line in out.splitlines():
            if not line.startswith(" "):
                keep = line.startswith(port_prefix)
            if keep:
                lines.append(line)
        return "\n".join(lines)

    def linked(self, output_prefix: str, input_prefix: str) -> bool:
        """Whether an output port starting with ``output_prefix`` is linked to an
        input port starting with ``input_prefix`` (``pw-link -l`` shows "|-> input")."""
        return any(line.strip().removeprefix("|->").strip().startswith(input_prefix)
                   for line in self.links_to(output_prefix).splitlines() if line.startswith(" "))

    def record(self, device: str, seconds: float) -> np.ndarray:
        """``seconds`` of mono float samples from a source or a sink's monitor (``name.monitor``)."""
        wanted = int(RATE * seconds) * 2
        process = subprocess.Popen(
            ["parec", "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1", "--latency-msec=20",
             f"--device={device}"], env={**os.environ, **self.env}, stdout=subprocess.PIPE)
        assert process.stdout is not None
        try:
            data = bytearray()
            deadline = time.monotonic() + seconds + 10
            while len(data) < wanted and time.monotonic() < deadline:
                chunk = os.read(process.stdout.fileno(), wanted - len(data))  # what is there, as read1
                if not chunk:
                    break
                data += chunk
        finally:
            process.kill()
            process.wait()
        return np.frombuffer(bytes(data[: len(data) // 2 * 2]), dtype="<i2").astype(np.float64) / 32768.0

    def clean(self) -> None:
        for name in list(self.made):
            self.remove(name)

    def died(self) -> list[str]:
        """Programs of this instance that are no longer running, with how they ended."""
        return [f"{program_of(p)} (exit {p.returncode})" for p in self._processes if p.poll() is not None]


def program_of(process: subprocess.Popen[bytes]) -> str:
    """The program a process of ours runs (each was started with a list of strings)."""
    args = process.args
    assert isinstance(args, list)
    return str(args[0])


# --- measurements ----------------------------------------------------------------


def level_db(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (silence is -200)."""
    rms = float(np.sqrt(np.mean(np.square(samples)))) if len(samples) else 0.0
    return 20 * np.log10(rms) if rms > 1e-10 else -200.0


WINDOW = 0.05  # seconds: the analysis window


def windows(samples: np.ndarray, seconds: float = WINDOW) -> list[np.ndarray]:
    """``samples`` cut into consecutive windows of ``seconds`` (the rest dropped)."""
    size = int(RATE * seconds)
    return [samples[i:i + size] for i in range(0, len(samples) - size + 1, size)]


def steady_level_db(samples: np.ndarray) -> float:
    """The level most of ``samples`` has: the median of 50 ms windows, so a gap
    (a late player on a loaded machine) does not pull it down."""
    return float(np.median([level_db(w) for w in windows(samples)]))


def dominant_frequency(samples: np.ndarray, rate: int = RATE) -> float:
    """The strongest frequency (Hz) in ``samples``: a Hann-windowed FFT's peak."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / len(samples))


def burst_frequency(samples: np.ndarray, low: float, high: float, rate: int = RATE) -> float:
    """The strongest frequency (Hz) between ``low`` and ``high`` of a tone that comes in
    pieces: beeps, or a call's sound with gaps (a late player, concealed packets), each
    piece with its own phase. Hann-windowed 20 ms spectra, overlapping by half, summed
    (Welch) and read at 1 Hz. A piece's spectrum is centred on its tone wherever it
    falls; clicks and gaps spread over the whole band instead of making a peak. (One FFT
    over the whole of such sound, :func:`dominant_frequency`, is not: the pieces' phases
    interfere, and a 523 Hz tone with gaps once peaked at 514 Hz.)"""
    size, hop, bins = rate // 50, rate // 100, rate
    window = np.hanning(size)
    power = np.zeros(bins // 2 + 1)
    for start in range(0, len(samples) - size + 1, hop):
        power += np.abs(np.fft.rfft(samples[start:start + size] * window, bins)) ** 2
    freqs = np.fft.rfftfreq(bins, 1 / rate)
    power[(freqs < low) | (freqs > high)] = 0.0
    return float(freqs[int(np.argmax(power))])


def band_level_db(samples: np.ndarray, low: float, high: float, rate: int = RATE) -> float:
    """The level (dB full scale) of what lies between ``low`` and ``high`` Hz."""
    spectrum = np.fft.rfft(samples)
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    spectrum[(freqs < low) | (freqs > high)] = 0
    return level_db(np.fft.irfft(spectrum, len(samples)))


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def pipewire_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipeWire]:
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        pytest.skip(f"PipeWire is not installed ({', '.join(missing)} missing): apt-get install pipewire "
                    "pipewire-bin pipewire-pulse wireplumber pulseaudio-utils dbus-daemon (scripts/setup.sh)")
    server = PipeWire(tmp_path_factory.mktemp("pipewire")).start()
    yield server
    server.stop()


@pytest.fixture
def pipewire(pipewire_server: PipeWire, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipeWire]:
    """The session's PipeWire, this process's environment pointing at it; a test's nodes removed after it."""
    for key, value in pipewire_server.env.items():
        monkeypatch.setenv(key, value)
    yield pipewire_server
    pipewire_server.clean()
    assert not pipewire_server.died(), f"PipeWire broke during the test: {pipewire_server.died()}"
