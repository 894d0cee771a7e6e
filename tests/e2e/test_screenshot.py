"""A look at the screen (and support's test ring) through the real server and agent, where no
screen app answers, and from a hostile unit: results that break the rules are refused with a
reason and audited.

(The citizen's yes, no and silence on the real window are in tests/ui/test_screen_look.py.)
"""

from __future__ import annotations

import asyncio
import io
import random
import time
from typing import Any

import pytest
from PIL import Image
from websockets.asyncio.client import connect

from kiosk.protocol import messages as m
from kiosk.protocol import signing
from kiosk.provision import enroll
from kiosk.provision.state import StateDir
from tests.harness import AgentProcess, ServerProcess


def server_audit(server: ServerProcess, command_id: str) -> list[dict[str, Any]]:
    return [e for e in server.cli_json("audit", "list", "--limit", "500")
            if e["detail"].get("command_id") == command_id]


def test_without_a_screen_app_the_result_says_so_and_both_sides_audit_it(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    view = server.wait_command(server.send(device_id, "screenshot"))
    assert view["state"] == "failed" and view["result_verified"] is True
    assert "the screen app is not running" in view["reason"]
    assert [e["action"] for e in server_audit(server, view["id"])] == ["command-queued", "command-result"]
    trail = [e for e in agent.audit() if e.get("command_id") == view["id"]]
    assert [e["event"] for e in trail] == ["command-accepted", "screenshot-requested", "screenshot-failed"]
    assert trail[1]["ask_consent"] is False  # nobody lives with this unit
    out = server.cli("command", "show", view["id"])
    assert "failed" in out.stdout and "the screen app is not running" in out.stdout

    rang = server.wait_command(server.send(device_id, "test-ring"))  # no screen app: it cannot ring either
    assert rang["state"] == "failed" and rang["result_verified"] is True and rang["result"]["detail"] == {}
    assert "the screen app is not running" in rang["reason"]
    assert [e["event"] for e in agent.audit() if e.get("command_id") == rang["id"]] == [
        "command-accepted", "test-ring-requested"]


def noise_png(side: int) -> bytes:
    image = Image.frombytes("RGB", (side, side), random.Random(1).randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def calm_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 200), (240, 240, 240)).save(out, format="PNG")
    return out.getvalue()


#: What a hostile unit (its own genuine key) answers to a look at the screen or a test ring,
#: and the words the server's refusal must hold.
FORGED: list[tuple[str, str, dict[str, Any], str]] = [
    ("oversized", "screenshot", {"answer": "yes", "png": noise_png(200), "width": 200, "height": 200},
     str(m.MAX_SCREENSHOT_PNG_BYTES)),
    ("not-a-png", "screenshot", {"answer": "yes", "png": b"GIF89a" + b"\0" * 64, "width": 1, "height": 1},
     "not a PNG"),
    ("no-with-picture", "screenshot", {"answer": "no", "png": calm_png(), "width": 320, "height": 200},
     "a picture came"),
    ("unknown-answer", "screenshot", {"answer": "maybe"}, "answer"),
    ("wrong-size", "screenshot", {"answer": "unassigned", "png": calm_png(), "width": 1280, "height": 800}, "size"),
    ("answered-when", "test-ring", {"answer": "answered", "ring_sound": "played"}, "answered_after"),
]


@pytest.mark.slow
def test_a_hostile_units_results_are_refused_with_a_reason(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    agent.stop()  # the unit's key and certificate now speak for a hostile program
    state = StateDir(agent.state)
    sent = {name: server.send(device_id, kind) for name, kind, _detail, _words in FORGED}

    async def answer_forged() -> dict[str, m.ResultAck]:
        url = state.pin().url.replace("https://", "wss://", 1) + "/api/v1/socket"
        acks: dict[str, m.ResultAck] = {}
        async with connect(url, ssl=enroll.device_context(state), max_size=8 * 1024 * 1024) as ws:
            for name, kind, detail, _words in FORGED:
                result = m.CommandResult(command_id=sent[name], device_id=device_id, kind=kind,
                                         outcome="ok", finished_at=time.time(), detail=m.to_builtins(detail))
                envelope = signing.seal(state.device_key(), result)
                await ws.send(m.encode(m.ResultDelivery(envelope=envelope)).decode())
                while True:
                    reply = m.SERVER_TO_DEVICE.decode(await asyncio.wait_for(ws.recv(), 20))
                    if isinstance(reply, m.ResultAck) and reply.command_id == sent[name]:
                        acks[name] = reply
                        break
        return acks

    acks = asyncio.run(answer_forged())
    audit = server.cli_json("audit", "list", "--limit", "500")  # once: each acknowledged result is in it
    for name, _kind, _detail, words in FORGED:
        assert acks[name].accepted is False, name
        view = server.show(sent[name])
        assert view["state"] == "failed", (name, view)
        assert view["reason"].startswith("the unit's result was refused") and words in view["reason"], (name, view)
        assert view["result"]["detail"] == {}, "nothing of a refused result is shown"
        [entry] = [e for e in audit if e["detail"].get("command_id") == sent[name] and e["action"] == "command-result"]
        assert entry["detail"]["outcome"] == "failed" and "answer" not in entry["detail"]
