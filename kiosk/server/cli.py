"""``kiosk-server``: run the municipality server and administer it from its host.

The administrative subcommands open the same data directory as the running server
(SQLite in WAL mode), so they work while ``serve`` runs; a command queued here is
picked up and delivered by the server within a fraction of a second.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import getpass
import logging
import os
import re
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

import kiosk
from kiosk.cli_util import fail, parse_duration, print_json
from kiosk.protocol import messages as m
from kiosk.protocol import screen_settings
from kiosk.protocol.call import CallConfig
from kiosk.protocol.errors import ProtocolError
from kiosk.server import (
    api_schema,
    assignment,
    auth,
    backup,
    calls,
    cluster,
    commands,
    enrollment,
    migrate,
    oidc,
    photos,
    rollout,
    schedule,
    teams,
    units,
)
from kiosk.server.app import DEFAULT_CALL_CONFIG, ConsoleProxy, Listen, Server
from kiosk.server.ca import write_private
from kiosk.server.calls import TurnConfig
from kiosk.server.console_api import ApiError, make_provisioning_files
from kiosk.server.login_guard import LoginGuard, Scope
from kiosk.server.store import Store, StoreUnavailable, VisitRow


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiosk-server", description="Skærmbesøg municipality server")
    p.add_argument("--version", action="version", version=kiosk.__version__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def data(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data", type=Path, required=True, help="the server's data directory")
        sp.add_argument("--database", metavar="URL", default=os.environ.get("KIOSK_DATABASE"),
                        help="postgresql://USER@HOST/NAME for a shared PostgreSQL (the password from "
                             "~/.pgpass); default: SQLite in the data directory (env KIOSK_DATABASE)")

    sp = sub.add_parser("init", help="create the CA, keys and database (serve does this too)")
    data(sp)
    sp.add_argument("--municipality", default="Demo Kommune")
    sp.add_argument("--server-name", action="append", help="DNS name or IP in the server certificate (repeat)")

    sp = sub.add_parser("serve", help="run the server")
    data(sp)
    sp.add_argument("--device-listen", default="127.0.0.1:8443", type=Listen.parse)
    sp.add_argument("--console-listen", default="127.0.0.1:8080", type=Listen.parse)
    sp.add_argument("--console-https", action="store_true", help="HTTPS on the console even on loopback")
    sp.add_argument("--municipality", default="Demo Kommune", help="only used when DIR is new")
    sp.add_argument("--server-name", action="append", help="only used when DIR is new (repeat)")
    sp.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                    help="for the server's own messages; libraries never log below INFO")
    sp.add_argument("--nats", metavar="URL", default=os.environ.get("KIOSK_NATS"),
                    help="nats://HOST:PORT: work as one of several processes on one PostgreSQL database "
                         "(default: $KIOSK_NATS; unset: this process works alone)")
    sp.add_argument("--process-name", help="this process's name among several (default: host name and pid)")
    sp.add_argument("--reuse-port", action="store_true",
                    help="share the ports with other processes on this machine (SO_REUSEPORT)")
    sp.add_argument("--ring-timeout", type=parse_duration, default=60.0, help="unanswered calls end after this")
    sp.add_argument("--turn", metavar="HOST:PORT", help="our coturn, handed to both peers of every call")
    sp.add_argument("--turn-secret-file", type=Path, help="coturn's static-auth-secret (use-auth-secret)")
    sp.add_argument("--relay-only", action="store_true", help="force media through TURN (for locked-down networks)")
    sp.add_argument("--console-origin", action="append", default=[], metavar="URL",
                    help="the console's address as browsers see it behind a reverse proxy, "
                         "e.g. https://skaermbesoeg.kommune.dk (repeat)")
    sp.add_argument("--oidc", type=Path, metavar="FILE",
                    help="log staff in with the municipality's identity provider (OpenID Connect): "
                         "a YAML file naming it and mapping its claims to roles and teams (see the README)")
    sp.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                    help="a reverse proxy's address: its X-Forwarded-For names the client, "
                         "so login back-off holds the guesser, not everyone (repeat)")

    db = sub.add_parser("db", help="the database's schema").add_subparsers(dest="sub", required=True)
    sp = db.add_parser("upgrade", help="migrate the schema to this version's (serve does this too; safe to repeat)")
    data(sp)

    def passphrase(sp: argparse.ArgumentParser) -> None:
        source = sp.add_mutually_exclusive_group(required=True)
        source.add_argument("--passphrase-file", type=Path, help="a file holding the passphrase (its first line)")
        source.add_argument("--passphrase-stdin", action="store_true", help="read the passphrase from standard input")

    sp = sub.add_parser("backup", help="the database and the keys, encrypted with a passphrase (while serving)")
    data(sp)
    sp.add_argument("--out", type=Path, required=True, help="the backup file to write")
    passphrase(sp)
    sp = sub.add_parser("restore", help="a backup into a new, empty data directory (and empty database)")
    data(sp)
    sp.add_argument("--in", dest="backup", type=Path, required=True, help="the backup file")
    passphrase(sp)

    tok = sub.add_parser("enroll-token", help="one-time enrollment tokens").add_subparsers(dest="sub", required=True)
    sp = tok.add_parser("create", help="write N provisioning files")
    data(sp)
    sp.add_argument("--count", type=int, default=1)
    sp.add_argument("--expires", default="7d", type=parse_duration)
    sp.add_argument("--server-url", required=True, help="the device port as devices reach it, https://HOST:PORT")
    sp.add_argument("--out", type=Path, required=True)

    dev = sub.add_parser("device", help="enrolled devices, and units awaiting approval").add_subparsers(
        dest="sub", required=True)
    sp = dev.add_parser("list")
    data(sp)
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--never-connected-after", type=parse_duration, default=3600.0, metavar="DURATION",
                    help="a unit given a certificate this long ago that never connected is listed as "
                         "'never connected' (default 1h)")
    sp = dev.add_parser("revoke")
    data(sp)
    sp.add_argument("device_id")
    for verdict, text in (("approve", "let in a unit whose token expired on the shelf"),
                          ("reject", "keep out a unit whose token expired on the shelf")):
        sp = dev.add_parser(verdict, help=text)
        data(sp)
        sp.add_argument("device_id", help="as 'device list' shows it, state awaiting-approval")

    rel = sub.add_parser("release", help="OS releases: signed update bundles from kiosk-image bundle"
                         ).add_subparsers(dest="sub", required=True)
    sp = rel.add_parser("add", help="publish a bundle (with the BUNDLE.json beside it) for roll-outs")
    data(sp)
    sp.add_argument("bundle", type=Path)
    sp = rel.add_parser("list")
    data(sp)
    sp.add_argument("--json", action="store_true")

    ro = sub.add_parser("rollout", help="send a release to the fleet in waves").add_subparsers(
        dest="sub", required=True)
    sp = ro.add_parser("start", help="start a roll-out; the first wave is sent at once")
    data(sp)
    sp.add_argument("release", help="the release's version, as 'release list' shows it")
    sp.add_argument("--waves", default="1%,10%,50%,100%", help="cumulative shares of the fleet (default %(default)s)")
    sp.add_argument("--pause", default="24h", type=parse_duration, help="between waves (default %(default)s)")
    sp.add_argument("--max-failed", default="10%", help="halt when more of a wave fails (default %(default)s)")
    sp.add_argument("--device", action="append", help="only these units (repeat); default: every enrolled unit")
    sp = ro.add_parser("status", help="per wave: pending, downloading, installed, booted, good, rolled back")
    data(sp)
    sp.add_argument("rollout_id", nargs="?", help="default: the latest")
    sp.add_argument("--json", action="store_true")
    sp = ro.add_parser("halt", help="stop sending further waves (units already updating go on)")
    data(sp)
    sp.add_argument("rollout_id")
    sp.add_argument("--reason", default="halted by hand")

    cmd = sub.add_parser("command", help="signed commands to devices").add_subparsers(dest="sub", required=True)
    sp = cmd.add_parser("send")
    data(sp)
    sp.add_argument("device_id")
    sp.add_argument("kind", help=", ".join(m.COMMAND_KINDS))
    sp.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--expires", default="1d", type=parse_duration)
    sp.add_argument("--json", action="store_true")
    sp = cmd.add_parser("show")
    data(sp)
    sp.add_argument("command_id")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--png", type=Path, metavar="FILE", help="a screenshot command's picture, written here")
    sp = cmd.add_parser("screenshot", help="ask to see a unit's screen (its citizen is asked first) and wait")
    data(sp)
    sp.add_argument("device_id")
    sp.add_argument("--png", type=Path, metavar="FILE", help="where the picture is written, if one comes")
    sp.add_argument("--wait", type=float, default=SCREENSHOT_WAIT_SECONDS, metavar="SECONDS",
                    help="how long to wait for the answer (the citizen has 60 s); 0: do not wait")
    sp.add_argument("--expires", default="10m", type=parse_duration)
    sp.add_argument("--json", action="store_true")

    usr = sub.add_parser("user", help="console accounts").add_subparsers(dest="sub", required=True)
    sp = usr.add_parser("add")
    data(sp)
    sp.add_argument("username")
    sp.add_argument("--role", choices=auth.ROLES, required=True)
    sp.add_argument("--display-name", help="how the citizen's screen names this person when they call")
    sp.add_argument("--team", action="append", default=[], help="a team this person works in (repeat); "
                    "management's figures are counted per team")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    sp = usr.add_parser("unlock", help="lift the wait that failed logins put on an account or a client address")
    data(sp)
    sp.add_argument("username", nargs="?")
    sp.add_argument("--address", help="a client address, as the audit log's login-failed entries show it")
    sp = usr.add_parser("photo", help="the photo the citizen's screen shows when this person calls")
    data(sp)
    sp.add_argument("username")
    sp.add_argument("file", type=Path, nargs="?", help="a PNG, JPEG or WebP photo (made small on the way in)")
    sp.add_argument("--remove", action="store_true", help="remove the photo instead")
    sp = usr.add_parser("held", help="accounts and addresses with failed logins on record")
    data(sp)
    sp.add_argument("--json", action="store_true")

    cit = sub.add_parser("citizen", help="citizens, their screen and their care team").add_subparsers(
        dest="sub", required=True)
    sp = cit.add_parser("add", help="register a citizen, assign a screen and send it the assignment")
    data(sp)
    sp.add_argument("--name", required=True)
    sp.add_argument("--device", required=True, help="the enrolled screen's device id")
    sp.add_argument("--caregiver", action="append", default=[], help="user name allowed to call (repeat)")
    sp.add_argument("--json", action="store_true")

    vis = sub.add_parser("visit", help="citizens' planned video visits (each change goes to the screen)"
                         ).add_subparsers(dest="sub", required=True)
    when_help = "local time, YYYY-MM-DD HH:MM (or ISO 8601 with an offset)"
    sp = vis.add_parser("add", help="plan a visit")
    data(sp)
    sp.add_argument("--citizen", required=True, help="the citizen's id")
    sp.add_argument("--at", required=True, help=when_help)
    sp.add_argument("--staff-name", required=True)
    sp.add_argument("--staff-role", required=True, help="e.g. sygeplejerske")
    sp.add_argument("--kind", default="", help="what the visit is for, e.g. medicin")
    sp.add_argument("--repeat", default="once", choices=m.REPEATS, help="daily: every day at the same time")
    sp.add_argument("--json", action="store_true")
    sp = vis.add_parser("list", help="a citizen's plan")
    data(sp)
    sp.add_argument("--citizen", required=True)
    sp.add_argument("--json", action="store_true")
    sp = vis.add_parser("move", help="give a visit a new time")
    data(sp)
    sp.add_argument("visit_id")
    sp.add_argument("--at", required=True, help=when_help)
    sp.add_argument("--json", action="store_true")
    sp = vis.add_parser("cancel", help="cancel a visit (and its repeats)")
    data(sp)
    sp.add_argument("visit_id")
    sp.add_argument("--json", action="store_true")

    cl = sub.add_parser("call", help="call records").add_subparsers(dest="sub", required=True)
    sp = cl.add_parser("list")
    data(sp)
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--json", action="store_true")

    aud = sub.add_parser("audit", help="the append-only audit log").add_subparsers(dest="sub", required=True)
    sp = aud.add_parser("list")
    data(sp)
    sp.add_argument("--device")
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--json", action="store_true")
    sp = aud.add_parser("verify", help="check the hash chain of the whole log")
    data(sp)
    return p


def _parse_args(pairs: list[str]) -> dict[str, str]:
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--arg takes KEY=VALUE, got {pair!r}")
        args[key] = value
    return args


#: How long ``command screenshot`` waits: the citizen's minute, and the picture's way back.
SCREENSHOT_WAIT_SECONDS = 90.0


def _show_command(store: Store, command_id: str, as_json: bool, png: Path | None) -> None:
    row = store.command(command_id)
    if row is None:
        fail(f"no command {command_id}")
    device = store.device(row.device_id)
    view = commands.view(row, device.cert_pem if device else None)
    detail = (view["result"] or {}).get("detail") or {}
    picture = detail.get("png") if row.kind == "screenshot" else None
    if png is not None and picture:
        png.write_bytes(base64.b64decode(picture))
    if as_json:
        print_json(view)
        return
    answer = f", answer {detail['answer']}" if row.kind in ("screenshot", "test-ring") and "answer" in detail else ""
    saved = f", picture written to {png}" if png is not None and picture else ""
    print(f"{view['id']} {view['kind']} -> {view['device_id']}: {view['state']}{answer}{saved}"
          + (f" ({view['reason']})" if view["reason"] else ""))


def _shape_args(kind: str, args: dict[str, str]) -> dict[str, object]:
    """From flat ``KEY=VALUE`` pairs to the command's fields."""
    if kind == "set-config":  # every pair is a setting, read as its type
        try:
            return {"settings": screen_settings.from_text(args)}
        except ProtocolError as exc:
            fail(f"set-config: {exc.detail}")
    if kind == "assign" and "contact_staff" in args:  # comma separated
        return {**args, "contact_staff": [s.strip() for s in args["contact_staff"].split(",") if s.strip()]}
    return dict(args)


def _when(text: str) -> float:
    """A time as people type it, in this host's local time unless it names its offset."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"--at takes a time like 2026-12-01 08:00, got {text!r}")
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


def _print_visit(row: VisitRow) -> None:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.at))
    kind = f" ({row.kind})" if row.kind else ""
    print(f"{row.id}  {when}  {row.repeat:<8} {row.staff_name}, {row.staff_role}{kind}")

def _turn_config(args: argparse.Namespace) -> TurnConfig | None:
    if not args.turn:
        if args.relay_only:
            fail("--relay-only needs --turn")
        return None
    if not args.turn_secret_file:
        fail("--turn needs --turn-secret-file")
    listen = Listen.parse(args.turn)
    try:
        secret = args.turn_secret_file.read_text().strip()
    except OSError as exc:
        fail(f"cannot read the TURN secret: {exc}")
    if len(secret) < 16:
        fail("the TURN secret must be at least 16 characters")
    return TurnConfig(listen.host, listen.port, secret, args.relay_only)


async def _serve(args: argparse.Namespace) -> None:
    server = _open(args, CallConfig(ring_timeout=args.ring_timeout), _turn_config(args))
    if args.oidc is not None:
        try:
            server.oidc = oidc.load_settings(args.oidc)
        except ValueError as exc:
            fail(str(exc))
    if args.nats:
        if args.database is None:
            fail("--nats needs --database postgresql://...: the processes share one database")
        try:
            server.join(args.nats, args.process_name or cluster.process_name_default())
        except ValueError as exc:
            fail(str(exc))
    runners = await server.start(args.device_listen, args.console_listen,
                                 True if args.console_https else None,
                                 ConsoleProxy(frozenset(args.console_origin), frozenset(args.trusted_proxy)),
                                 reuse_port=args.reuse_port)
    print(f"kiosk-server {kiosk.__version__}: {server.authority.municipality}; "
          f"root CA SHA-256 {server.authority.ca_fingerprint}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(runners)


def _open(args: argparse.Namespace, call_config: CallConfig = DEFAULT_CALL_CONFIG,
          turn: TurnConfig | None = None) -> Server:
    """The server's data directory and database, migrated; a database that cannot be opened ends it."""
    try:
        return Server.open(args.data, getattr(args, "municipality", "Demo Kommune"),
                           getattr(args, "server_name", None), call_config, turn, database=args.database,
                           alone=not getattr(args, "nats", None))
    except (ValueError, StoreUnavailable) as exc:
        fail(str(exc))


def _passphrase(args: argparse.Namespace) -> bytes:
    try:
        text = args.passphrase_file.read_text() if args.passphrase_file else sys.stdin.read()
    except OSError as exc:
        fail(f"cannot read the passphrase: {exc}")
    return text.splitlines()[0].encode() if text.strip() else b""


def _restore(args: argparse.Namespace) -> None:
    try:
        sealed = args.backup.read_bytes()
    except OSError as exc:
        fail(f"cannot read the backup: {exc}")
    try:
        manifest = backup.restore(sealed, _passphrase(args), args.data, args.database)
    except backup.BackupError as exc:
        fail(str(exc))
    made = time.strftime("%Y-%m-%d %H:%M", time.localtime(manifest.created_at))
    print(f"restored the backup of {made} into {args.data}; root CA SHA-256 {manifest.ca_sha256}. "
          "Start the server where the units expect it (same name and port): they reconnect by themselves.")


def _write_backup(args: argparse.Namespace, server: Server) -> None:
    try:
        sealed = backup.make_backup(server.data, server.store, server.authority.ca_fingerprint, _passphrase(args))
    except backup.BackupError as exc:
        fail(str(exc))
    staged = args.out.with_name(args.out.name + ".partial")
    try:
        write_private(staged, sealed)
        os.replace(staged, args.out)
    except OSError as exc:
        fail(f"cannot write the backup: {exc}")
    print(f"wrote {args.out} ({len(sealed) // 1024} KiB); keep it and its passphrase apart")


def main(argv: list[str] | None = None) -> None:
    os.umask(0o077)  # keys, database and provisioning files are for the server's owner only
    args = _parser().parse_args(argv)
    if args.cmd == "serve":
        # Libraries at INFO at the most: their DEBUG lines carry statements with their parameters
        # (personal data) and SDPs (addresses); aiosqlite's alone were 56,000 lines in 10 minutes.
        own = logging.getLevelName(args.log_level)
        logging.basicConfig(level=max(own, logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("kiosk").setLevel(own)
        asyncio.run(_serve(args))
        return
    if args.cmd == "restore":  # before anything is created in the data directory
        _restore(args)
        return
    if args.cmd == "backup" and not (args.data / "ca.key").exists():
        fail(f"no kiosk-server in {args.data} (run 'kiosk-server init', or 'kiosk-server restore' a backup)")
    server = _open(args)
    actor = f"cli:{getpass.getuser()}"
    try:
        _run(args, server, actor)
    except (commands.CommandError, ApiError, rollout.RolloutError) as exc:
        fail(str(exc))
    finally:
        server.store.close()


def _print_rollout(view: dict[str, Any]) -> None:
    print(f"roll-out {view['id']} of {view['release']}: {view['state']}, wave {view['wave']} of {len(view['waves'])}"
          + (f" ({view['reason']})" if view["reason"] else ""))
    columns = ("pending", "downloading", "installed", "booted", "good", "rolled-back", "failed")
    print(f"{'wave':>4} {'units':>6} " + " ".join(f"{c:>11}" for c in columns))
    for wave in view["waves"]:
        print(f"{wave['wave']:>4} {wave['units']:>6} " + " ".join(f"{wave[c]:>11}" for c in columns)
              + ("" if wave["sent"] else "   (not sent yet)"))
        for problem in wave["problems"]:
            print(f"       {problem['device_id']} {problem['stage']}: {problem['detail']}")


def _run(args: argparse.Namespace, server: Server, actor: str) -> None:
    store = server.store
    match args.cmd, getattr(args, "sub", None):
        case "backup", _:
            _write_backup(args, server)
        case "db", "upgrade":
            print(f"database schema at revision {migrate.current_of(store.engine)}")
        case "init", _:
            print(f"{server.authority.municipality}: root CA SHA-256 {server.authority.ca_fingerprint}")
        case "enroll-token", "create":
            if not 1 <= args.count <= 1000:
                fail("--count must be between 1 and 1000")
            files = make_provisioning_files(store, server.authority, args.server_url, args.count,
                                            args.expires, actor)
            args.out.mkdir(parents=True, exist_ok=True)
            for name, content in files:
                path = args.out / name
                path.write_text(content)
                path.chmod(0o600)  # a token is a secret until it is used
                print(path)
        case "device", "list":
            found = units.units(store, None, never_connected_after=args.never_connected_after).units
            if args.json:
                print_json(msgspec.to_builtins(found))
            else:
                for u in found:
                    extra = f"  serial {u.serial_number or '-'}, token batch {u.batch}" if u.batch else ""
                    print(f"{u.id}  {u.state:<20} {u.connection}{extra}")
        case "device", ("approve" | "reject"):
            decided = {"approve": enrollment.APPROVED, "reject": enrollment.REJECTED}[args.sub]
            if not store.decide_enrollment(args.device_id, decided, actor):
                fail(f"no unit awaiting approval as {args.device_id} (see kiosk-server device list)")
            print(f"{decided} {args.device_id}: " + ("it enrolls at its next try, within a minute"
                                                     if decided == enrollment.APPROVED else "it stays out"))
        case "device", "revoke":
            if not store.revoke_device(args.device_id, actor):
                fail(f"no device {args.device_id}, or it is already revoked")
            print(f"revoked {args.device_id}; its connection is closed within a second")
        case "release", "add":
            added = rollout.add_release(store, args.data, args.bundle, actor)
            print(f"release {added.version} ({added.arch}, {added.bytes} bytes) added")
        case "release", "list":
            published = rollout.release_list(store)
            if args.json:
                print_json([dataclasses.asdict(r) for r in published])
            for release in [] if args.json else published:
                print(f"{release.version:<28} {release.arch:<6} {release.bytes:>12} bytes  "
                      f"sha256 {release.sha256[:16]}…")
        case "rollout", "start":
            share = args.max_failed.rstrip("%")
            if not share.replace(".", "", 1).isdigit():
                fail(f"--max-failed must be a percentage such as 10%, not {args.max_failed!r}")
            ro = rollout.start(store, args.release, args.waves, args.pause, float(share) / 100, actor, args.device)
            print(ro.id)
        case "rollout", "status":
            view = rollout.status(store, args.rollout_id)
            if args.json:
                print_json(view)
            else:
                _print_rollout(view)
        case "rollout", "halt":
            if not rollout.halt(store, args.rollout_id, actor, args.reason):
                fail(f"no running roll-out {args.rollout_id}")
            print(f"halted {args.rollout_id}")
        case "command", "send":
            action = commands.parse_action(args.kind, _shape_args(args.kind, _parse_args(args.arg)))
            command = commands.queue(store, server.authority, args.device_id, action, actor, args.expires)
            if args.json:
                print_json({"id": command.id, "state": "pending", "expires_at": command.expires_at})
            else:
                print(command.id)
        case "command", "screenshot":
            command = commands.queue(store, server.authority, args.device_id, m.Screenshot(), actor, args.expires)
            deadline = time.monotonic() + args.wait
            while (row := store.command(command.id)) is not None and row.state in ("pending", "delivered") \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
            _show_command(store, command.id, args.json, args.png)
        case "command", "show":
            _show_command(store, args.command_id, args.json, args.png)
        case "user", "add":
            try:  # the name people log in with, and the audit log's actor: one format for both
                msgspec.convert(args.username, api_schema.Name)
            except msgspec.ValidationError:
                fail("a user name is 1-64 letters, digits, '.', '_', '@' or '-'")
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
            try:
                hashed = auth.hash_password(password)
            except ValueError as exc:
                fail(str(exc))
            if store.user(args.username) is not None:
                fail(f"user {args.username} exists already")
            if unfit := [t for t in args.team if not re.fullmatch(teams.TEAM_PATTERN, t)]:
                fail(f"a team name is 1-64 letters, digits, spaces or .,&/()-; not {unfit[0]!r}")
            store.add_user(args.username, hashed, args.role, actor, args.display_name)
            with store.tx() as conn:
                teams.set_teams(conn, args.username, args.team)
            print(f"added {args.username} ({args.role}{''.join(f', {t}' for t in args.team)})")
        case "user", "photo":
            if (args.file is None) == (not args.remove):
                fail("give a photo FILE, or --remove")
            try:
                photo = None if args.remove else photos.normalize(args.file.read_bytes())
            except (OSError, photos.PhotoError) as exc:
                fail(f"{args.file}: {exc}")
            if not store.set_user_photo(args.username, photo, actor):
                fail(f"no user {args.username}")
            print(f"{args.username}: photo removed" if photo is None else
                  f"{args.username}: photo stored ({len(photo)} bytes as shown on the screen)")
        case "user", "unlock":
            scopes = ([Scope("account", args.username)] if args.username else []) + (
                [Scope("address", args.address)] if args.address else [])
            if not scopes:
                fail("name a user, or an --address, to unlock")
            guard = LoginGuard(store)
            for scope in scopes:
                lifted = guard.unlock(scope, actor)
                print(f"{scope.kind} {scope.value}: " + ("unlocked" if lifted else "had no failed logins on record"))
        case "user", "held":
            held = LoginGuard(store).held()
            if args.json:
                print_json([{"kind": scope.kind, "value": scope.value, "failures": state.failures,
                             "blocked_until": state.blocked_until} for scope, state in held])
            for scope, state in [] if args.json else held:
                wait = max(0.0, state.blocked_until - store.clock())
                print(f"{scope.kind:<8} {scope.value:<40} {state.failures:>5} failures, waits {wait:.0f} s")
        case "citizen", "add":
            citizen_id, command = assignment.assign(store, server.authority, args.device, args.name,
                                                    args.caregiver, actor)
            out = {"citizen_id": citizen_id, "assign_command": command.id}
            print_json(out) if args.json else print(citizen_id)
        case "visit", "add":
            visit = schedule.add(store, server.authority, args.citizen, {
                "at": _when(args.at), "staff_name": args.staff_name, "staff_role": args.staff_role,
                "kind": args.kind, "repeat": args.repeat}, actor)
            print_json(schedule.view(visit)) if args.json else print(visit.id)
        case "visit", "list":
            if store.citizen(args.citizen) is None:
                fail(f"no citizen {args.citizen}")
            plan = store.visits_of(args.citizen)
            if args.json:
                print_json([schedule.view(planned) for planned in plan])
            for planned in [] if args.json else plan:
                _print_visit(planned)
        case "visit", "move":
            visit = schedule.move(store, server.authority, args.visit_id, _when(args.at), actor)
            print_json(schedule.view(visit)) if args.json else _print_visit(visit)
        case "visit", "cancel":
            visit = schedule.cancel(store, server.authority, args.visit_id, actor)
            print_json(schedule.view(visit)) if args.json else print(f"cancelled {visit.id}")
        case "call", "list":
            records = [calls.record_view(r) for r in store.call_records(args.limit)]
            if args.json:
                print_json(records)
            else:
                for rec in records:
                    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec["placed_at"]))
                    talk = f"{rec['talk_seconds']:.0f} s" if rec["talk_seconds"] is not None else "-"
                    print(f"{when} {rec['caller']:<16} {rec['end_reason']:<20} talk {talk}")
        case "audit", "list":
            entries = store.audit_entries(args.device, args.limit)
            if args.json:
                print_json(msgspec.to_builtins(entries))
            else:
                for e in entries:
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
                    print(f"{e.seq:>6} {when} {e.actor:<24} {e.action:<22} {e.device_id or '-'}")
        case "audit", "verify":
            bad = store.verify_audit_chain()
            if bad is not None:
                fail(f"the audit log was altered at entry {bad}", code=3)
            print("audit log intact")


if __name__ == "__main__":
    main()
