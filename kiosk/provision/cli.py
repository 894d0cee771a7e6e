"""``kiosk-agent``: the device agent (runs as root on the unit) and its local tools."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import logging
import logging.handlers
import os
import signal
import socket
from pathlib import Path

import kiosk
from kiosk.cli_util import fail, print_json
from kiosk.protocol import messages as m
from kiosk.protocol import update
from kiosk.protocol.errors import ProtocolError
from kiosk.provision import enroll, updater
from kiosk.provision.agent import Agent, enroll_until_done, resume_interrupted_wipe
from kiosk.provision.state import StateDir
from kiosk.provision.system_actions import RecordingActions, SystemActions, SystemdActions

log = logging.getLogger("kiosk.agent")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"at": round(record.created, 3), "level": record.levelname,
                           "logger": record.name, "msg": record.getMessage()})


def _logging(state: StateDir, level: str) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # WatchedFileHandler reopens the file after a wipe deletes it.
    file_handler = logging.handlers.WatchedFileHandler(state.log_path)
    file_handler.setFormatter(JsonLines())
    handlers.append(file_handler)
    logging.basicConfig(level=level, handlers=handlers, force=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiosk-agent", description="Skærmbesøg kiosk device agent")
    p.add_argument("--version", action="version", version=kiosk.__version__)
    sub = p.add_subparsers(dest="cmd", required=True)

    sp = sub.add_parser("run", help="enroll if needed, then stay connected and obey signed commands")
    sp.add_argument("--state", type=Path, required=True)
    sp.add_argument("--provision", type=Path, help="provisioning file (needed until the unit is enrolled)")
    sp.add_argument("--system-actions", choices=("systemd", "record"), default="record",
                    help="'systemd' on a unit; 'record' (default) only writes what it would do")
    sp.add_argument("--backoff-cap", type=float, default=60.0,
                    help="longest wait between reconnects and between enrollment attempts (s)")
    sp.add_argument("--log-level", default="INFO")
    sp.add_argument("--rauc", default="rauc", help="RAUC's command (OS updates into the other A/B slot)")
    sp.add_argument("--boot-cmdline", type=Path, default=Path("/proc/cmdline"),
                    help="where the bootloader's kiosk.slot= is read (the running slot)")
    sp.add_argument("--os-release", type=Path, default=Path("/etc/os-release"),
                    help="where the image's IMAGE_VERSION is read")
    sp.add_argument("--boot-id", type=Path, default=Path("/proc/sys/kernel/random/boot_id"),
                    help="where this boot's id is read (a new one tells an update's reboot happened)")
    sp.add_argument("--update-health-deadline", type=float, default=update.HEALTH_DEADLINE_SECONDS,
                    help="seconds a freshly updated slot has to reach the server with its screen alive")

    sp = sub.add_parser("enroll", help="enroll once and exit (for logistics and tests)")
    sp.add_argument("--state", type=Path, required=True)
    sp.add_argument("--provision", type=Path, required=True)

    sp = sub.add_parser("status", help="what this unit is and whom it obeys")
    sp.add_argument("--state", type=Path, required=True)
    sp.add_argument("--json", action="store_true")

    sp = sub.add_parser("audit", help="the unit's own trail: enrollment, refused commands, wipes")
    sp.add_argument("--state", type=Path, required=True)
    return p


def _ask_running_agent(state: StateDir) -> m.AgentStatus | None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(state.socket_path))
            s.sendall(m.encode(m.GetStatus()) + b"\n")
            line = s.makefile("rb").readline()
        reply = m.AGENT_TO_UI.decode(line)
        return reply if isinstance(reply, m.AgentStatus) else None
    except (OSError, ProtocolError):
        return None


def _status(state: StateDir) -> dict[str, object]:
    running = _ask_running_agent(state)  # it knows what the disk cannot say (e.g. awaiting approval)
    out: dict[str, object] = {"state": running.state if running else state.device_state(),
                              "agent_version": kiosk.__version__}
    if state.enrolled:
        pin = state.pin()
        out |= {"device_id": pin.device_id, "server": pin.url, "municipality": pin.municipality,
                "ca_sha256": pin.ca_sha256}
    out |= {"agent_running": running is not None,
            "server_online": running.server_online if running else False}
    return out


def _lock(state: StateDir) -> int:
    fd = os.open(state.root / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"another kiosk-agent is already running on {state.root}")
    return fd


async def _run(args: argparse.Namespace, state: StateDir) -> None:
    resume_interrupted_wipe(state)  # before anything else, above all before the UI socket opens
    if not state.enrolled:
        if args.provision is None:
            fail("this unit is not enrolled yet: pass --provision FILE")
        try:
            await enroll_until_done(state, args.provision, retry_cap=args.backoff_cap)
        except enroll.EnrollmentRefused as exc:
            state.audit("enrollment-refused", code=exc.code, detail=str(exc))
            fail(f"enrollment refused ({exc.code}): {exc}", code=2)
    elif args.provision is not None:
        enroll.finish(state, args.provision)  # the power went after the identity was saved
    actions: SystemActions = (SystemdActions() if args.system_actions == "systemd"
                              else RecordingActions(state.root / "system-actions.log"))
    agent = Agent(state, actions, backoff_cap=args.backoff_cap,
                  rauc=updater.Rauc(state.identity, args.rauc),
                  running=updater.Running.read(args.boot_cmdline, args.os_release, args.boot_id),
                  health_deadline=args.update_health_deadline)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: task.cancel() if task else None)
    try:
        await agent.run()
    except asyncio.CancelledError:
        log.info("stopping")


def main(argv: list[str] | None = None) -> None:
    os.umask(0o077)
    args = _parser().parse_args(argv)
    state = StateDir(args.state)
    match args.cmd:
        case "run":
            state.create()
            _lock(state)
            _logging(state, args.log_level)
            asyncio.run(_run(args, state))
        case "enroll":
            state.create()
            _lock(state)
            if state.enrolled:
                fail(f"already enrolled as {state.pin().device_id}; a factory reset is needed to enroll again")
            try:
                pin = enroll.enroll_blocking(state, args.provision)
            except enroll.EnrollmentRefused as exc:
                fail(f"enrollment refused ({exc.code}): {exc}", code=2)
            except enroll.EnrollmentDeferred as exc:
                fail(f"not enrolled yet ({exc.code}): {exc}", code=3)
            print(f"enrolled as {pin.device_id} with {pin.url} ({pin.municipality})")
        case "status":
            status = _status(state)
            if args.json:
                print_json(status)
            else:
                for key, value in status.items():
                    print(f"{key:>14}: {value}")
        case "audit":
            for entry in state.audit_entries():
                print(json.dumps(entry, ensure_ascii=False))


if __name__ == "__main__":
    main()
