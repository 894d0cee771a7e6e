"""A stand-in for ``pyudev.Monitor``: same fileno()/poll() contract, fed by tests."""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass, field


@dataclass
class FakeDevice:
    """The attributes of ``pyudev.Device`` that hotplug reads."""

    action: str
    subsystem: str
    device_node: str | None
    properties: dict[str, str] = field(default_factory=dict)


class FakeMonitor:
    """Readable when an event is queued, like the netlink socket pyudev wraps."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._events: deque[FakeDevice] = deque()

    def emit(self, device: FakeDevice) -> None:
        self._events.append(device)
        self._writer.send(b"!")

    def fileno(self) -> int:
        return self._reader.fileno()

    def poll(self, timeout: float | None = None) -> FakeDevice | None:
        if not self._events:
            return None
        self._reader.recv(1)
        return self._events.popleft()

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


def camera(action: str, node: str = "/dev/video0") -> FakeDevice:
    return FakeDevice(action, "video4linux", node, {"ID_V4L_CAPABILITIES": ":capture:"})


def microphone(action: str, node: str = "/dev/snd/pcmC1D0c") -> FakeDevice:
    return FakeDevice(action, "sound", node)
