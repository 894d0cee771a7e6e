"""Login with the municipality's identity provider: OpenID Connect, authorization code with PKCE.

Staff log in to the console as they log in to everything else in the municipality. The
provider is named in the server's settings (a YAML file, ``kiosk-server serve --oidc``),
together with how its claims map to our roles and teams: a person whose token matches no
role is refused, and told so plainly. Local accounts remain for small sites and the demo.

What is kept between the two legs of a login (the redirect to the provider and its answer)
lives in the database, so any server process may receive the answer: the ``state`` (hashed),
the PKCE ``code_verifier``, the ``nonce`` and a hash of a random value held in a cookie of the
browser that started, so an answer only completes a login in that same browser. Authlib makes
the authorization URL and redeems the code; joserfc checks the ID token's signature against
the provider's published keys and its issuer, audience, expiry and nonce.

A person who logs in this way gets an account row of their own (the audit log names it),
with no password, its role and teams updated from the claims at each login. An account name
that is already a local account is refused: the provider may not take over a local account.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
import yaml
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.engine import Row

from kiosk.server import auth, teams
from kiosk.server.store import Store, oidc_identities, oidc_pending, users

#: how long a person may take at the provider's login page
PENDING_SECONDS = 600.0
#: how long the provider's metadata and keys are trusted before they are fetched again
DISCOVERY_SECONDS = 3600.0
HTTP_TIMEOUT = 10.0
#: an account made by this module has no password: no password checks against this
NO_PASSWORD = "!oidc"
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")



class Settings(msgspec.Struct, forbid_unknown_fields=True):
    """The provider and how its claims map to roles and teams (the ``--oidc`` YAML file)."""

    issuer: str  # e.g. https://login.kommune.dk/adfs
    client_id: str
    client_secret_file: str  # a path: the secret itself stays out of the settings file
    redirect_uri: str  # .../api/login/oidc/callback, as browsers reach the console
    #: claim value -> role, in order: the first value the person has gives their role
    roles: dict[str, str]
    roles_claim: str = "groups"
    #: claim value -> team name; a person may work in several teams
    teams: dict[str, str] = {}
    teams_claim: str = "groups"
    username_claim: str = "preferred_username"
    scopes: list[str] = msgspec.field(default_factory=lambda: ["openid", "profile"])
    #: the CA that signed the provider's certificate, when not the system's trust store
    ca_file: str | None = None  # a path
    #: how the login button is labelled
    label: str = "Kommunens login"


class Refused(Exception):
    """A login that does not go through; ``code`` for programs, the message for the person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def load_settings(path: Path) -> Settings:
    """The settings file, checked: every role known, plain HTTP only on loopback; ValueError if not."""
    try:
        settings = msgspec.convert(yaml.safe_load(path.read_text()), Settings)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ValueError(f"OIDC settings {path}: {exc}") from None
    if unknown := sorted(set(settings.roles.values()) - set(auth.ROLES)):
        raise ValueError(f"OIDC settings {path}: unknown role {unknown[0]!r}; roles are {', '.join(auth.ROLES)}")
    if unfit := [t for t in settings.teams.values() if not re.fullmatch(teams.TEAM_PATTERN, t)]:
        raise ValueError(f"OIDC settings {path}: unfit team name {unfit[0]!r}")
    for url in (settings.issuer, settings.redirect_uri):
        if not (url.startswith("https://") or re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])[:/]", url)):
            raise ValueError(f"OIDC settings {path}: {url} must use https (plain http only on loopback)")
    if not Path(settings.client_secret_file).is_file():
        raise ValueError(f"OIDC settings {path}: no client secret file {settings.client_secret_file}")
    return settings


# ----------------------------------------------------------------- claims -> person
@dataclass(frozen=True, slots=True)
class Person:
    username: str
    role: str
    teams: tuple[str, ...]
    display_name: str | None


def _values(claims: Mapping[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def person(settings: Settings, claims: Mapping[str, Any]) -> Person:
    """Who the verified claims say this is, in our terms; Refused when they give no role."""
    username = claims.get(settings.username_claim)
    if not isinstance(username, str) or not ACCOUNT_NAME.fullmatch(username):
        raise Refused("unfit-username", f"the login's {settings.username_claim!r} is missing or not a valid "
                                        "user name (letters, digits, '.', '_', '@', '-'; at most 64)")
    held = set(_values(claims, settings.roles_claim))
    role = next((r for value, r in settings.roles.items() if value in held), None)
    if role is None:
        raise Refused("no-role", f"{username} has no role in Skærmbesøg: none of the groups of this login "
                                 "is given a role. Ask the municipality's administrator for access.")
    held_teams = set(_values(claims, settings.teams_claim))
    team_names = tuple(sorted({team for value, team in settings.teams.items() if value in held_teams}))
    name = claims.get("name")
    return Person(username, role, team_names, name[:100] if isinstance(name, str) else None)


# ----------------------------------------------------------------- the protocol
def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Started:
    authorization_url: str
    browser_secret: str  # goes into the browser's cookie


class Provider:
    """One identity provider, as the settings name it."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self._secret = Path(settings.client_secret_file).read_text().strip()
        self._metadata: dict[str, Any] = {}
        self._keys: KeySet | None = None
        self._fetched_at = -DISCOVERY_SECONDS

    def _client(self) -> AsyncOAuth2Client:
        verify: ssl.SSLContext | bool = True
        if self.settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=self.settings.ca_file)
        return AsyncOAuth2Client(self.settings.client_id, self._secret, scope=" ".join(self.settings.scopes),
                                 redirect_uri=self.settings.redirect_uri, code_challenge_method="S256",
                                 timeout=HTTP_TIMEOUT, verify=verify)

    async def _discover(self, client: AsyncOAuth2Client, again: bool = False) -> dict[str, Any]:
        if again or time.monotonic() - self._fetched_at >= DISCOVERY_SECONDS:
            try:
                # withhold_token: these are public documents, asked for before any token exists
                found = await client.request("GET", self.settings.issuer.rstrip("/")
                                             + "/.well-known/openid-configuration", withhold_token=True)
                found.raise_for_status()
                meta = found.json()
                if meta.get("issuer") != self.settings.issuer:
                    raise Refused("provider-mismatch", f"the provider names itself {meta.get('issuer')!r}, "
                                                      f"not {self.settings.issuer!r}")
                jwks = await client.request("GET", meta["jwks_uri"], withhold_token=True)
                jwks.raise_for_status()
                self._keys = KeySet.import_key_set(jwks.json())
            except Refused:
                raise
            except Exception as exc:  # noqa: BLE001 (network, HTTP status, JSON, keys: all the same to a person)
                raise Refused("provider-unreachable", "the municipality's login could not be reached "
                                                      f"({type(exc).__name__}); try again in a moment") from None
            self._metadata, self._fetched_at = meta, time.monotonic()
        return self._metadata

    async def start(self) -> Started:
        """A new login: where to send the browser, and the secret its cookie keeps."""
        async with self._client() as client:
            meta = await self._discover(client)
            verifier, nonce, state = secrets.token_urlsafe(48), secrets.token_urlsafe(24), secrets.token_urlsafe(24)
            url, _ = client.create_authorization_url(meta["authorization_endpoint"], state=state,
                                                     code_verifier=verifier, nonce=nonce)
        browser = secrets.token_urlsafe(32)
        await self.store.run(_remember, _hash(state), _hash(browser), verifier, nonce)
        return Started(str(url), browser)

    async def finish(self, query: Mapping[str, str], browser_secret: str | None) -> Person:
        """The provider's answer: the person it vouches for, or Refused (with what to do)."""
        row = await self.store.run(_take, _hash(query.get("state", "")))
        if row is None or row.expires_at < self.store.clock():
            raise Refused("login-expired", "this login was not started here or took too long; please start again")
        if browser_secret is None or not secrets.compare_digest(row.browser_hash, _hash(browser_secret)):
            raise Refused("other-browser", "this login was started in another browser; please start again here")
        if "error" in query:
            raise Refused("provider-refused", "the municipality's login did not complete "
                                              f"({query['error'][:60]}); please start again")
        async with self._client() as client:
            meta = await self._discover(client)
            try:
                token = await client.fetch_token(meta["token_endpoint"], code=query.get("code", ""),
                                                 code_verifier=row.code_verifier)
            except Exception as exc:  # noqa: BLE001 (a refused code, the network, a bad answer: one outcome)
                raise Refused("code-refused", "the municipality's login did not confirm this login "
                                              f"({type(exc).__name__}); please start again") from None
            claims = await self._verified_claims(client, str(token.get("id_token", "")), row.nonce)
        who = person(self.settings, claims)
        await self.store.run(_account, self.settings.issuer, who, str(claims["sub"])[:255])
        return who

    async def _verified_claims(self, client: AsyncOAuth2Client, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            decoded = jwt.decode(id_token, self._key_set(), algorithms=["RS256", "PS256", "ES256", "EdDSA"])
        except JoseError:  # perhaps the provider rolled its keys: fetch them once more
            await self._discover(client, again=True)
            try:
                decoded = jwt.decode(id_token, self._key_set(), algorithms=["RS256", "PS256", "ES256", "EdDSA"])
            except (JoseError, ValueError) as exc:
                raise Refused("bad-token", f"the login's token does not verify ({type(exc).__name__})") from None
        except ValueError as exc:
            raise Refused("bad-token", f"the login's token does not verify ({type(exc).__name__})") from None
        registry = jwt.JWTClaimsRegistry(
            leeway=60, iss={"essential": True, "value": self.settings.issuer},
            aud={"essential": True, "value": self.settings.client_id}, exp={"essential": True},
            sub={"essential": True}, nonce={"essential": True, "value": nonce})
        try:
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise Refused("bad-token", f"the login's token is not for us or too old ({exc.error})") from None
        return dict(decoded.claims)

    def _key_set(self) -> KeySet:
        assert self._keys is not None  # discovery ran before any token is checked
        return self._keys


# ------------------------------------------------------------------ the database's part
def _remember(store: Store, state_hash: str, browser_hash: str, verifier: str, nonce: str) -> None:
    """Keep what the provider's answer must match (and forget the logins nobody finished)."""
    now = store.clock()
    with store.tx() as conn:
        conn.execute(oidc_pending.delete().where(oidc_pending.c.expires_at < now))
        conn.execute(oidc_pending.insert().values(state_hash=state_hash, browser_hash=browser_hash,
                                                  code_verifier=verifier, nonce=nonce,
                                                  expires_at=now + PENDING_SECONDS))


def _take(store: Store, state_hash: str) -> Row[Any] | None:
    """The login this state started, if any; taken, so a state is good once."""
    with store.tx() as conn:
        row = conn.execute(sa.select(oidc_pending).where(oidc_pending.c.state_hash == state_hash)).first()
        conn.execute(oidc_pending.delete().where(oidc_pending.c.state_hash == state_hash))
    return row


def _account(store: Store, issuer: str, who: Person, subject: str) -> None:
    """Make or update this person's account from the claims; Refused if the name is a
    local account's, or this person had another name here before."""
    with store.tx() as conn:
        linked = conn.execute(sa.select(oidc_identities.c.username).where(
            oidc_identities.c.issuer == issuer, oidc_identities.c.subject == subject)).scalar()
        existing = conn.execute(sa.select(users.c.username, users.c.role)
                                .where(users.c.username == who.username)).first()
        if linked is None and existing is not None:
            raise Refused("name-taken", f"the user name {who.username} belongs to another account here; "
                                        "ask the administrator")
        if linked is not None and linked != who.username:
            raise Refused("name-changed", f"this person logged in before as {linked}; ask the administrator")
        if existing is None:
            conn.execute(users.insert().values(username=who.username, password_hash=NO_PASSWORD,
                                               role=who.role, created_at=store.clock(),
                                               display_name=who.display_name))
            conn.execute(oidc_identities.insert().values(issuer=issuer, subject=subject,
                                                         username=who.username))
            store.append_audit(conn, "server", "user-added", user=who.username, role=who.role, method="oidc")
        else:
            conn.execute(users.update().where(users.c.username == who.username)
                         .values(role=who.role, display_name=who.display_name))
            if existing.role != who.role:
                store.append_audit(conn, "server", "user-role-changed", user=who.username, role=who.role,
                                   method="oidc")
        teams.set_teams(conn, who.username, who.teams)
