"""Assembles the municipality server: storage, authority, hub and its two listening ports."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

import kiosk
from kiosk.protocol.call import CallConfig
from kiosk.protocol.machine import Clock
from kiosk.server import (  # noqa: F401 (each registers its routes or pages)
    care_api,
    console_api,
    console_pages,
    device_api,
    figures_api,
    fleet_api,
    oidc_api,
    openapi,
    oversight_pages,
    pages,
    rollout,
    runtime,
    staff_socket,
)
from kiosk.server import oidc as oidc_login
from kiosk.server.ca import Authority, load_or_create
from kiosk.server.calls import CallManager, TurnConfig
from kiosk.server.cluster import Cluster
from kiosk.server.commands import CommandDesk
from kiosk.server.hub import Hub
from kiosk.server.login_guard import LoginGuard
from kiosk.server.previsit import Sweep
from kiosk.server.request_log import RequestLog
from kiosk.server.store import Store

log = logging.getLogger("kiosk.server")
DEFAULT_CALL_CONFIG = CallConfig()

# The page loads nothing from anywhere else, runs no inline script, and may not be framed,
# re-based or made to post a form elsewhere.
CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
HSTS = "max-age=31536000"  # a year; only sent over HTTPS, where it can be trusted


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return cls(host.strip("[]") or "127.0.0.1", int(port))

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


@dataclass(frozen=True)
class ConsoleProxy:
    """A reverse proxy in front of the console: the address browsers use, and the proxy's own."""

    origins: frozenset[str] = frozenset()  # e.g. https://skaermbesoeg.kommune.dk
    addresses: frozenset[str] = frozenset()  # whose X-Forwarded-For is believed


#: How often the server certificate is checked for renewal (it is renewed weeks before its end).
TLS_RENEW_CHECK_SECONDS = 3600.0


def device_tls(authority: Authority) -> ssl.SSLContext:
    """Server TLS that asks every client for a certificate chaining to our root.

    TLS 1.3 only: we make both ends, and 1.3 has no CBC suites or renegotiation to get wrong.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(authority.server_cert_path, authority.server_key_path)
    ctx.load_verify_locations(cafile=str(authority.ca_cert_path))
    ctx.verify_mode = ssl.CERT_OPTIONAL  # enrollment comes without a certificate; the socket needs one
    return ctx


def console_tls(authority: Authority) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(authority.server_cert_path, authority.server_key_path)
    return ctx


@dataclass
class Server:
    data: Path
    store: Store
    authority: Authority
    hub: Hub
    calls: CallManager
    desk: CommandDesk
    previsit: Sweep
    #: the municipality's identity provider, when staff log in with it (local accounts remain)
    oidc: oidc_login.Settings | None = None
    #: this process's part among several on one PostgreSQL (None: the server works alone)
    cluster: Cluster | None = None
    _rollouts: asyncio.Task[None] | None = None
    _tls: list[ssl.SSLContext] = field(default_factory=list)  # the listening ports' contexts, to renew
    _renewal: asyncio.Task[None] | None = None
    _runtime_watch: asyncio.Task[None] | None = field(default=None, init=False)

    @classmethod
    def open(cls, data: Path, municipality: str = "Demo Kommune", server_names: list[str] | None = None,
             call_config: CallConfig = DEFAULT_CALL_CONFIG, turn: TurnConfig | None = None,
             clock: Clock = time.time, database: str | None = None, alone: bool = True) -> Server:
        """``clock`` is the one wall clock of the store, the hub and the calls (tests set it);
        ``database`` a PostgreSQL URL, or None for SQLite in ``data``; ``alone``: no other process
        serves this database (it takes up the calls in progress; see :meth:`join` otherwise)."""
        authority = load_or_create(data, municipality, server_names)
        store = Store.in_directory(data, clock, database)
        store.forbid_blocking_calls_on_loop()  # the loop's calls go through store.run; a slip fails loudly
        hub = Hub(store)
        return cls(data, store, authority, hub, CallManager(store, hub, call_config, turn, take_up=alone),
                   CommandDesk(store, authority, hub), Sweep(store, authority, hub))

    def join(self, nats_url: str, process: str) -> Cluster:
        """Work as one of several processes on one PostgreSQL, with NATS between them."""
        self.cluster = Cluster(nats_url, process, self.hub, self.calls)
        return self.cluster

    def _app(self, routes: list[web.RouteDef], middlewares: Sequence[Middleware] = ()) -> web.Application:
        # a request line up to 32 KiB: the identity provider's answer comes back in the query
        # (an authorization code may be long), and anything longer still gets a plain 400
        app = web.Application(middlewares=list(middlewares), client_max_size=1024 * 1024,
                              handler_args={"max_line_size": 32 * 1024})
        app[device_api.AUTHORITY] = self.authority
        app[device_api.STORE] = self.store
        app[device_api.HUB] = self.hub
        app[device_api.CALLS] = self.calls
        app[device_api.DESK] = self.desk
        app[device_api.DATA] = self.data
        app.add_routes(routes)
        return app

    def device_app(self) -> web.Application:
        return self._app(device_api.routes())

    def console_app(self, secure_cookie: bool, proxy: ConsoleProxy | None = None,
                    device_url: str = "") -> web.Application:
        """``device_url``: the device port as units reach it, offered for new provisioning files."""
        proxy = proxy or ConsoleProxy()
        app = self._app(console_api.routes(), [console_api.guard])
        app[console_pages.DEVICE_URL] = device_url
        app[console_api.SECURE_COOKIE] = secure_cookie
        app[console_api.EXTRA_ORIGINS] = proxy.origins
        app[console_api.TRUSTED_PROXIES] = proxy.addresses
        app[console_api.LOGIN_GUARD] = LoginGuard(self.store)
        if self.oidc is not None:
            app[oidc_api.PROVIDER] = oidc_login.Provider(self.oidc, self.store)

        async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
            response.headers.update(CONSOLE_HEADERS)
            if request.path.startswith("/api/") or request.path == "/openapi.json":
                response.headers["Cache-Control"] = "no-store"  # answers hold who is logged in and more
            if secure_cookie:
                response.headers["Strict-Transport-Security"] = HSTS

        app.on_response_prepare.append(security_headers)
        spec = openapi.document(kiosk.__version__)

        async def openapi_json(_request: web.Request) -> web.Response:
            return web.json_response(spec)

        app.router.add_get("/openapi.json", openapi_json)

        app.add_routes(pages.routes())
        app.router.add_static("/static/", pages.STATIC)
        return app

    async def start(self, device: Listen, console: Listen, console_https: bool | None = None,
                    proxy: ConsoleProxy | None = None, reuse_port: bool = False) -> list[web.AppRunner]:
        """Start both ports; the console speaks plain HTTP only when bound to loopback.

        ``reuse_port``: several processes on this machine share the ports (SO_REUSEPORT; the
        kernel spreads new connections among them)."""
        if console_https is None:
            console_https = not console.loopback
        if not console_https and not console.loopback:
            raise ValueError("the console may use plain HTTP only on a loopback address")
        runtime.prepare()
        await self.calls.take_up()  # before a unit or a caregiver can come back to a call
        runners = []
        self.renew_tls()  # before the contexts load the certificate
        for app, listen, tls in (
            (self.device_app(), device, device_tls(self.authority)),
            (self.console_app(secure_cookie=console_https, proxy=proxy,
                              device_url=f"https://{device.host}:{device.port}"), console,
             console_tls(self.authority) if console_https else None),
        ):
            if tls is not None:
                self._tls.append(tls)
            runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                   logger=RequestLog(logging.getLogger("kiosk.server.http")))
            await runner.setup()
            await web.TCPSite(runner, listen.host, listen.port, ssl_context=tls, backlog=1024,
                              reuse_port=reuse_port or None).start()
            runners.append(runner)
        self.hub.start()
        await self.calls.start()
        if self.cluster is not None:
            self.cluster.start()
        self._rollouts = asyncio.create_task(rollout.drive_forever(self.store, self.authority), name="rollouts")
        self.previsit.start()
        self._renewal = asyncio.create_task(self._renew_tls_forever(), name="tls-renewal")
        runtime.settle()  # what start-up built lives as long as the process: out of the collector's way
        self._runtime_watch = asyncio.create_task(
            runtime.watch(lambda: (self.hub.attaches, len(self.hub.links))), name="runtime-watch")
        log.info("device port https://%s:%d, console %s://%s:%d", device.host, device.port,
                 "https" if console_https else "http", console.host, console.port)
        return runners

    def renew_tls(self) -> bool:
        """Renew the server certificate if due (on the server's clock); new connections get it."""
        renewed = self.authority.renew_server_certificate(self.store.clock())
        if renewed is None:
            return False
        for ctx in self._tls:  # an SSLContext takes a new chain for every connection after this
            ctx.load_cert_chain(self.authority.server_cert_path, self.authority.server_key_path)
        log.info("server certificate renewed; valid until %s", renewed.not_valid_after_utc.isoformat())
        return True

    async def _renew_tls_forever(self) -> None:
        while True:
            await asyncio.sleep(TLS_RENEW_CHECK_SECONDS)
            try:
                self.renew_tls()
            except (OSError, ValueError) as exc:  # weeks remain before the old one ends: say so, try again
                log.error("could not renew the server certificate (%s); trying again in an hour", exc)

    async def stop(self, runners: list[web.AppRunner]) -> None:
        await self.previsit.stop()
        for task in (self._rollouts, self._renewal, self._runtime_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.cluster is not None:  # first: the others give our units the grace, not "offline"
            await self.cluster.stop()
        await self.hub.stop()
        await self.desk.drain()
        for runner in runners:
            await runner.cleanup()
        await self.store.aclose()
