"""Wi-Fi for staff at installation, through NetworkManager's ``nmcli`` (the image's network stack).

:func:`scan` lists networks and :func:`join` connects; both run ``nmcli`` with
its terse output and return a clear Danish/English-neutral error text on
failure, never a stack trace. :class:`NetworkPage` is the setup page.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from kivy.metrics import dp
from kivy.uix.boxlayout import BoxLayout

from kiosk.ui import theme
from kiosk.ui.widgets import BigButton, Sizes, Text

NMCLI_SECONDS: Final = 30.0


@dataclass(frozen=True)
class WifiNetwork:
    ssid: str
    signal: int  # 0..100
    secured: bool
    in_use: bool


class NetworkError(Exception):
    """nmcli is missing, NetworkManager is not running, or the network refused us."""


def split_terse(line: str) -> list[str]:
    """One line of ``nmcli -t`` output: fields split at ``:``, with ``\\:`` and ``\\\\`` unescaped."""
    fields, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def parse_scan(output: str) -> list[WifiNetwork]:
    """``nmcli -t -f IN-USE,SSID,SIGNAL,SECURITY dev wifi list``: strongest first, one per name."""
    best: dict[str, WifiNetwork] = {}
    for line in output.splitlines():
        fields = split_terse(line)
        if len(fields) != 4 or not fields[1]:
            continue  # hidden networks have no name to show
        in_use, ssid, signal, security = fields
        network = WifiNetwork(ssid, int(signal) if signal.isdigit() else 0, security not in ("", "--"),
                              in_use.strip() == "*")
        if ssid not in best or network.signal > best[ssid].signal:
            best[ssid] = network
    return sorted(best.values(), key=lambda n: (-n.in_use, -n.signal))


async def _nmcli(*args: str) -> str:
    if shutil.which("nmcli") is None:
        raise NetworkError("NetworkManager (nmcli) is not installed on this unit")
    proc = await asyncio.create_subprocess_exec("nmcli", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), NMCLI_SECONDS)
    except TimeoutError:
        proc.kill()
        raise NetworkError("NetworkManager did not answer in time") from None
    if proc.returncode != 0:
        raise NetworkError(err.decode(errors="replace").strip() or f"nmcli failed ({proc.returncode})")
    return out.decode(errors="replace")


async def scan() -> list[WifiNetwork]:
    return parse_scan(await _nmcli("-t", "-f", "IN-USE,SSID,SIGNAL,SECURITY", "dev", "wifi", "list", "--rescan", "yes"))


async def join(ssid: str, password: str) -> None:
    args = ["dev", "wifi", "connect", ssid]
    if password:
        args += ["password", password]
    await _nmcli(*args)


class NetworkPage(BoxLayout):  # type: ignore[misc]
    """The Wi-Fi list; choosing a network asks for its password on the Danish keyboard."""

    def __init__(self, sizes: Sizes, translate: Callable[[str], str], keyboard: Callable[..., Any],
                 **kwargs: Any) -> None:
        super().__init__(orientation="vertical", spacing=dp(8), **kwargs)
        self._sizes, self._ = sizes, translate
        self._keyboard = keyboard
        self.status = Text(self._("Looking for Wi-Fi networks…"), theme.BODY_SP, sizes)
        self.add_widget(self.status)
        self.list = BoxLayout(orientation="vertical", spacing=dp(8))
        self.add_widget(self.list)
        self._task = asyncio.ensure_future(self._scan())

    async def _scan(self) -> None:
        try:
            networks = await scan()
        except NetworkError as exc:
            self.status.text = self._("Wi-Fi cannot be set up here: {why}").format(why=exc)
            return
        self.status.text = self._("Choose a network") if networks else self._("No Wi-Fi networks found")
        for network in networks[:5]:
            words = f"{network.ssid}  ({network.signal} %)" + (" ✓" if network.in_use else "")
            self.list.add_widget(BigButton(words, partial(self.ask_password, network), self._sizes,
                                           size_sp=theme.SMALL_SP + 4))

    def ask_password(self, network: WifiNetwork) -> None:
        self.list.clear_widgets()
        self.status.text = self._("Password for {ssid}").format(ssid=network.ssid)
        keyboard = self._keyboard()
        self.list.add_widget(keyboard)
        self.list.add_widget(BigButton(self._("Connect"), lambda: self._join(network, keyboard.text), self._sizes,
                                       size_hint_y=None, height=dp(90)))

    def _join(self, network: WifiNetwork, password: str) -> None:
        self.status.text = self._("Connecting to {ssid}…").format(ssid=network.ssid)
        self._task = asyncio.ensure_future(self._joining(network, password))

    async def _joining(self, network: WifiNetwork, password: str) -> None:
        try:
            await join(network.ssid, password)
        except NetworkError as exc:
            self.status.text = self._("Could not connect: {why}").format(why=exc)
            return
        self.status.text = self._("Connected to {ssid}").format(ssid=network.ssid)
