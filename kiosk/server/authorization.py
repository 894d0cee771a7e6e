"""The authorization table: every console route and every role → allowed or refused (403).

It is computed from the one route table (:data:`kiosk.server.console_api.ROUTES`) and the
roles' permissions (:mod:`kiosk.server.auth`), never written by hand: a new route appears
in it by being registered. ``docs/authorization.md`` is this table rendered; a test keeps
the file current (so a review sees every change of who may do what) and checks a running
server against every cell.

    python -m kiosk.server.authorization > docs/authorization.md
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kiosk.server import auth
from kiosk.server.console_api import PUBLIC, RouteInfo


@dataclass(frozen=True, slots=True)
class Cell:
    method: str
    path: str
    permission: str | None
    allowed: dict[str, bool]  # role -> may use the route


def allowed(role: str, permission: str | None) -> bool:
    """Whether a logged-in person of ``role`` gets past the route's permission check."""
    return permission in (PUBLIC, None) or auth.may(role, permission)


def table(routes: Iterable[RouteInfo]) -> list[Cell]:
    return [Cell(r.method, r.path, r.permission, {role: allowed(role, r.permission) for role in auth.ROLES})
            for r in sorted(routes, key=lambda r: (r.path, r.method))]


def markdown(routes: Iterable[RouteInfo]) -> str:
    head = ["method", "route", "permission", *auth.ROLES]
    lines = [
        "# Who may use which console route",
        "",
        "Generated from the route table by `python -m kiosk.server.authorization`; a test keeps this",
        "file current and checks every cell against a running server. A refused request gets 403,",
        "and the refusal of a logged-in person is written to the audit log (`access-refused`).",
        "`command:*` routes also check the command's own kind (`command:<kind>`) per request.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for cell in table(routes):
        permission = {PUBLIC: "anyone", None: "any logged-in person"}.get(cell.permission, cell.permission)
        marks = ["yes" if cell.allowed[role] else "403" for role in auth.ROLES]
        lines.append(f"| {cell.method} | `{cell.path}` | {permission} | " + " | ".join(marks) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from kiosk.server import app  # noqa: F401 (registers every route)
    from kiosk.server.console_api import ROUTES

    print(markdown(ROUTES), end="")
