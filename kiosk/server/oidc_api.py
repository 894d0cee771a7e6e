"""The console's login with the municipality's identity provider (:mod:`kiosk.server.oidc`).

Two legs, both in the one route table. ``GET /api/login/oidc`` is a link on the login page:
it refuses a navigation started by another site's page (the Origin check of a GET, by
``Sec-Fetch-Site``) and sends the browser to the provider, with a short-lived cookie that
binds the login to this browser. ``GET /api/login/oidc/callback`` is where the provider sends
the browser back: it takes the same login lock-out as the password login (429 while the
address must wait; each failure counts and is audited), then opens a session exactly as the
password login does and sends the browser to the console. A browser is answered with a plain
page in Danish and English when the login is refused; a program with the JSON error.
"""

from __future__ import annotations

import html
from typing import Annotated

import msgspec
from aiohttp import web

from kiosk.server import oidc
from kiosk.server.console_api import (
    LOGIN_GUARD,
    PUBLIC,
    SECURE_COOKIE,
    ApiError,
    admit_login,
    client_address,
    login_failed,
    open_session,
    read_query,
    refuse_cross_site,
    route,
)
from kiosk.server.device_api import error, json_response
from kiosk.server.login_guard import LoginGuard

#: set when the server has the municipality's login (kiosk-server serve --oidc)
PROVIDER: web.AppKey[oidc.Provider] = web.AppKey("oidc_provider", oidc.Provider)
BROWSER_COOKIE = "kiosk_oidc"
BROWSER_COOKIE_PATH = "/api/login/oidc"
STYLESHEET = "/static/style.css"


class LoginOptions(msgspec.Struct):
    """How one may log in here: a password always; the municipality's login when set up."""

    oidc: bool
    oidc_label: str | None


#: Printable ASCII, as OAuth's values are: the whole request line then fits aiohttp's 8 KiB
PRINTABLE = r"^[\x21-\x7e]*$"


class CallbackQuery(msgspec.Struct, forbid_unknown_fields=False):
    """What the provider sends back (any other parameter it adds is ignored)."""

    state: Annotated[str, msgspec.Meta(max_length=200, pattern=PRINTABLE)] = ""
    code: Annotated[str, msgspec.Meta(max_length=2000, pattern=PRINTABLE)] = ""
    error: Annotated[str, msgspec.Meta(max_length=200, pattern=PRINTABLE)] | None = None


def _provider(request: web.Request) -> oidc.Provider:
    provider = request.app.get(PROVIDER)
    if provider is None:
        raise ApiError(404, "oidc-not-configured", "this server has no municipal login; log in with a password")
    return provider


@route("GET", "/api/login/options", PUBLIC, "How one may log in here", response=LoginOptions)
async def login_options(request: web.Request) -> web.StreamResponse:
    provider = request.app.get(PROVIDER)
    return json_response(LoginOptions(provider is not None, provider.settings.label if provider else None))


@route("GET", "/api/login/oidc", PUBLIC, "Log in with the municipality's identity provider: a redirect "
       "to it (authorization code with PKCE)", status=303, errors=(403, 404, 502))
async def start_oidc(request: web.Request) -> web.StreamResponse:
    try:
        refuse_cross_site(request, json_required=False)
        provider = _provider(request)
        try:
            started = await provider.start()
        except oidc.Refused as exc:
            raise ApiError(502, exc.code, str(exc)) from None
    except ApiError as exc:
        return _refusal(request, exc)
    response = web.Response(status=303, headers={"Location": started.authorization_url})
    # Lax: the provider's redirect back is a top-level navigation from another site
    response.set_cookie(BROWSER_COOKIE, started.browser_secret, httponly=True, samesite="Lax",
                        secure=request.app[SECURE_COOKIE], max_age=int(oidc.PENDING_SECONDS),
                        path=BROWSER_COOKIE_PATH)
    return response


@route("GET", "/api/login/oidc/callback", PUBLIC, "Where the identity provider sends the browser back; "
       "opens a session and redirects to the console. Failures count toward the login wait (429)",
       status=303, query=CallbackQuery, errors=(401, 403, 404, 429))
async def finish_oidc(request: web.Request) -> web.StreamResponse:
    address = client_address(request)
    try:
        provider = _provider(request)
        query = read_query(request, CallbackQuery)
        await admit_login(request, address, None)
        try:
            who = await provider.finish({k: v for k, v in (("state", query.state), ("code", query.code),
                                                          ("error", query.error)) if v is not None},
                                        request.cookies.get(BROWSER_COOKIE))
        except oidc.Refused as exc:
            await login_failed(request, address, None, method="oidc", reason=exc.code)
            raise ApiError(403 if exc.code in ("no-role", "name-taken", "name-changed") else 401,
                           exc.code, str(exc)) from None
    except ApiError as exc:
        return _refusal(request, exc)
    await request.app[LOGIN_GUARD].run(LoginGuard.succeeded, address, who.username)
    response = await open_session(request, web.Response(status=303, headers={"Location": "/"}), who.username,
                                  address, method="oidc")
    response.del_cookie(BROWSER_COOKIE, path=BROWSER_COOKIE_PATH)
    return response


# ------------------------------------------------------------------ refusals
_TITLES = {
    "no-role": ("Du har ikke adgang til Skærmbesøg", "You have no access to Skærmbesøg"),
    "too-many-attempts": ("For mange mislykkede login", "Too many failed logins"),
}
_DEFAULT_TITLE = ("Login lykkedes ikke", "The login did not succeed")
_DANISH = {
    "no-role": "Dit login i kommunen giver dig ingen rolle i Skærmbesøg. Bed kommunens administrator om adgang.",
    "too-many-attempts": "Vent lidt, og prøv så igen.",
    "oidc-not-configured": "Denne server har intet kommunalt login. Log ind med brugernavn og adgangskode.",
    "login-expired": "Login blev ikke startet her, eller det tog for lang tid. Start forfra.",
    "other-browser": "Login blev startet i en anden browser. Start forfra i denne.",
    "name-taken": "Brugernavnet tilhører en anden konto her. Kontakt administratoren.",
}
_DANISH_DEFAULT = "Start forfra. Sker det igen, så kontakt kommunens administrator."


def _refusal(request: web.Request, exc: ApiError) -> web.StreamResponse:
    """A browser gets a plain page (no script) saying what happened and what to do; a program JSON.
    A browser says it is navigating (Sec-Fetch-Mode); a program, or a page's fetch, does not."""
    if request.headers.get("Sec-Fetch-Mode") != "navigate":
        response = error(exc.status, exc.code, str(exc))
    else:
        title_da, title_en = _TITLES.get(exc.code, _DEFAULT_TITLE)
        text_da = _DANISH.get(exc.code, _DANISH_DEFAULT)
        page = (
            '<!doctype html>\n<html lang="da"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(title_da)}</title><link rel="stylesheet" href="{STYLESHEET}"></head>'
            f'<body><main><h1>{html.escape(title_da)}</h1><p id="reason">{html.escape(text_da)}</p>'
            f'<h2 lang="en">{html.escape(title_en)}</h2><p lang="en">{html.escape(str(exc))}</p>'
            '<p><a href="/">Til forsiden / To the start page</a></p></main></body></html>\n'
        )
        response = web.Response(status=exc.status, text=page, content_type="text/html", charset="utf-8")
    response.headers.update(exc.headers)
    return response

