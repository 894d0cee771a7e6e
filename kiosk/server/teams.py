"""Care teams: which teams a person works in. Management's figures are counted per team.

A person may work in several teams (or none); the municipality's identity provider names
them in a claim (:mod:`kiosk.server.oidc`), local accounts get them from ``kiosk-server user
add --team``. Team names are not personal data; a team's figures are still shown only for
cells of five or more (:mod:`kiosk.server.figures`).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kiosk.server.store import Store, user_teams

#: a team's name, as the console shows it
TEAM_PATTERN = r"^[\w .,&/()-]{1,64}$"



def set_teams(conn: Connection, username: str, teams: Iterable[str]) -> None:
    """Replace a person's teams (inside the caller's transaction)."""
    conn.execute(user_teams.delete().where(user_teams.c.username == username))
    rows = [{"username": username, "team": t} for t in sorted(set(teams))]
    if rows:
        conn.execute(user_teams.insert(), rows)


def teams_of(store: Store, username: str) -> list[str]:
    with store.read() as conn:
        return list(conn.execute(sa.select(user_teams.c.team).where(user_teams.c.username == username)
                                 .order_by(user_teams.c.team)).scalars())


def team_map(conn: Connection) -> dict[str, tuple[str, ...]]:
    """Every person with a team, and their teams."""
    out: dict[str, list[str]] = {}
    for username, team in conn.execute(sa.select(user_teams.c.username, user_teams.c.team)):
        out.setdefault(username, []).append(team)
    return {u: tuple(sorted(t)) for u, t in out.items()}
