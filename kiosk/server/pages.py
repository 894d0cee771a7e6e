"""The console's pages: server-rendered HTML in the reader's language, one layout, navigation per role.

Each page states the permission it needs, as the API's routes do, and shows what the JSON API
would answer; its buttons act through that API (a little JavaScript per page, never inline,
so the Content-Security-Policy stays strict). Strings are English in the templates and
translated by gettext catalogs (``kiosk/server/locale``); Danish is the default.
"""

from __future__ import annotations

import datetime
import gettext
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import jinja2
from aiohttp import web
from babel.dates import format_datetime
from babel.messages.pofile import read_po

from kiosk.server import auth
from kiosk.server.console_api import refused, session_user
from kiosk.server.store import UserRow

log = logging.getLogger("kiosk.server.pages")

TEMPLATES: Final = Path(__file__).parent / "templates"
STATIC: Final = Path(__file__).parent / "static"
LOCALE: Final = Path(__file__).parent / "locale"
DOMAIN: Final = "console"
LANGUAGES: Final = {"da": "Dansk", "en": "English"}
DEFAULT_LANGUAGE: Final = "da"
LANG_COOKIE: Final = "kiosk_lang"

Context = dict[str, Any]


def N_(text: str) -> str:
    """Marks English text for the catalog; the page translates it when it renders."""
    return text

PageHandler = Callable[[web.Request, UserRow], Awaitable[Context]]


class Catalog(gettext.NullTranslations):
    """A ``.po`` file read as it stands (Babel): no compiled ``.mo`` to forget to rebuild."""

    def __init__(self, po_path: Path) -> None:
        super().__init__()
        with po_path.open("rb") as po:
            messages = read_po(po)
        # the pages use no plural forms: ngettext falls back to English, which a test would see
        self._messages = {str(m.id): str(m.string) for m in messages
                          if isinstance(m.id, str) and m.id and m.string and not m.fuzzy}

    def gettext(self, message: str) -> str:
        return self._messages.get(message, message)


@cache
def catalog(language: str) -> gettext.NullTranslations:
    if language == "en":  # the templates' own language
        return gettext.NullTranslations()
    return Catalog(LOCALE / language / "LC_MESSAGES" / f"{DOMAIN}.po")


def when(timestamp: float | None, language: str) -> str:
    """A moment as people here read it ("29.11.2026 10.30"), in the server's time zone."""
    if timestamp is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp).astimezone()
    return format_datetime(moment, "short", locale="en_GB" if language == "en" else language)  # not US order


@cache
def environment(language: str) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(catalog(language), newstyle=True)  # type: ignore[attr-defined]
    env.filters["when"] = lambda ts: when(ts, language)
    return env


def translate(language: str, text: str) -> str:
    return catalog(language).gettext(text)


# ----------------------------------------------------------------------- the page table
@dataclass(frozen=True)
class PageInfo:
    path: str
    permission: str | None  # None: anyone logged in
    title: str  # English; the catalog translates it
    template: str
    handler: PageHandler
    nav: bool  # listed in the navigation of every role that may open it


PAGES: list[PageInfo] = []


def page(path: str, permission: str | None, title: str, template: str,
         nav: bool = True) -> Callable[[PageHandler], PageHandler]:
    def wrap(handler: PageHandler) -> PageHandler:
        PAGES.append(PageInfo(path, permission, title, template, handler, nav))
        return handler
    return wrap


def may_open(role: str, info: PageInfo) -> bool:
    return info.permission is None or auth.may(role, info.permission)


def home_of(role: str) -> str:
    """Where a person lands after logging in: the first page of their navigation."""
    return next((p.path for p in PAGES if p.nav and may_open(role, p)), "/")


def language_of(request: web.Request) -> str:
    chosen = request.query.get("lang") or request.cookies.get(LANG_COOKIE) or DEFAULT_LANGUAGE
    return chosen if chosen in LANGUAGES else DEFAULT_LANGUAGE


def render(request: web.Request, template: str, title: str, user: UserRow | None, context: Context,
           status: int = 200) -> web.Response:
    language = language_of(request)
    other = next(code for code in LANGUAGES if code != language)
    nav = [{"path": p.path, "title": p.title, "current": p.path == request.path}
           for p in PAGES if user is not None and p.nav and may_open(user.role, p)]
    html = environment(language).get_template(template).render(
        lang=language, other_lang=other, other_lang_name=LANGUAGES[other], user=user, nav=nav,
        title=translate(language, title), path=request.path, **context)
    response = web.Response(text=html, content_type="text/html", status=status)
    if request.query.get("lang") in LANGUAGES:
        response.set_cookie(LANG_COOKIE, language, samesite="Strict", max_age=365 * 24 * 3600, path="/")
    return response


def refusal(request: web.Request, user: UserRow | None, status: int, message: str) -> web.Response:
    return render(request, "error.html", message, user, {"status": status, "message": message}, status)


def _serve(info: PageInfo) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def serve(request: web.Request) -> web.StreamResponse:
        user = await session_user(request)
        if user is None:
            return login_page(request)
        if not may_open(user.role, info):
            await refused(request, user, "forbidden")
            return refusal(request, user, 403, N_("This page is not for your role."))
        try:
            context = await info.handler(request, user)
        except web.HTTPNotFound:
            return refusal(request, user, 404, N_("There is no such page."))
        except Exception:  # the reader sees a plain apology; the trace goes to the server's log only
            log.exception("page %s failed", info.path)
            return refusal(request, user, 500, N_("Something went wrong on the server. Please try again."))
        return render(request, info.template, info.title, user, context)
    return serve


async def home(request: web.Request) -> web.StreamResponse:
    user = await session_user(request)
    if user is None:
        return login_page(request)
    landing = home_of(user.role)
    if landing == "/":  # a role with no page of its own: said, not an endless redirect to here
        return refusal(request, user, 403, N_("This page is not for your role."))
    raise web.HTTPFound(landing)


def login_page(request: web.Request) -> web.Response:
    """The login form, with the municipality's own login where this server has one."""
    from kiosk.server.oidc_api import PROVIDER  # it registers API routes that import this frame's guard

    return render(request, "login.html", N_("Log in"), None, {"oidc": PROVIDER in request.app})


def routes() -> list[web.RouteDef]:
    return [web.get("/", home)] + [web.get(p.path, _serve(p)) for p in PAGES]

