"""Access tokens: HS256 JWTs whose claims say who joins which room with which grants.

The role fixes the most a token can allow; a `grants` claim can only take permissions away.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import jwt

from signaling.errors import TokenExpired, TokenInvalid, TokenMissing

ALGORITHM = "HS256"
ISSUER = "hoinghi"
IDENTITY_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_TEXT_CHARS = 128


@dataclass(frozen=True)
class Grants:
    publish: bool = False
    subscribe: bool = False
    moderate: bool = False
    record: bool = False
    observe_all: bool = False

    def to_json(self) -> dict[str, bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def names(self) -> frozenset[str]:
        return frozenset(name for name, on in self.to_json().items() if on)

    def narrowed(self, claim: Mapping[str, Any]) -> Grants:
        """Apply a token's `grants` claim: a key set to false removes that permission; true, or
        an absent key, keeps the role's value (a token can never widen)."""
        names = GRANT_NAMES
        unknown = set(claim) - names
        if unknown:
            raise TokenInvalid(f"unknown grant {sorted(unknown)[0]!r}")
        if not all(isinstance(v, bool) for v in claim.values()):
            raise TokenInvalid("grants must be true or false")
        return Grants(**{n: getattr(self, n) and claim.get(n, True) for n in names})


GRANT_NAMES = frozenset(f.name for f in fields(Grants))

ROLE_GRANTS: dict[str, Grants] = {
    "chair": Grants(publish=True, subscribe=True, moderate=True, record=True, observe_all=True),
    "province": Grants(publish=True, subscribe=True),
    "commune": Grants(publish=True, subscribe=True),
    "secretary": Grants(subscribe=True, record=True),
    "operator": Grants(subscribe=True, moderate=True, record=True, observe_all=True),
    "observer": Grants(subscribe=True),
}
ROLES = tuple(ROLE_GRANTS)


@dataclass(frozen=True)
class Grant:
    """A verified token: who, where, what they may do, until when (unix seconds)."""

    identity: str
    room: str
    role: str
    grants: Grants
    expires_at: float
    name: str | None = None
    province: str | None = None
    jti: str | None = None  # the token's id, when it has one: connections are counted by it

    @property
    def display_name(self) -> str:
        return self.name or self.identity


def _check_identity(identity: object) -> str:
    if not isinstance(identity, str) or not IDENTITY_RE.fullmatch(identity):
        raise TokenInvalid("identity must be 1-64 characters of [A-Za-z0-9._-]")
    return identity


def _check_text(value: object, what: str, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT_CHARS:
        raise TokenInvalid(f"{what} must be a string of 1-{MAX_TEXT_CHARS} characters")
    return value


def issue_token(
    secret: str,
    room: str,
    identity: str,
    role: str,
    name: str | None = None,
    province: str | None = None,
    ttl_s: float = 3600,
    grants: Mapping[str, bool] | Grants | None = None,
    now: float | None = None,
    jti: str | None = None,
) -> str:
    """Sign a token. Raises ValueError for what verify_token would refuse anyway."""
    if not secret:
        raise ValueError("empty secret")
    if role not in ROLE_GRANTS:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    try:
        _check_identity(identity)
        _check_text(room, "room", optional=False)
        _check_text(name, "name", optional=True)
        _check_text(province, "province", optional=True)
        _check_text(jti, "jti", optional=True)
    except TokenInvalid as exc:
        raise ValueError(exc.message) from None
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "sub": identity,
        "room": room,
        "role": role,
        "iss": ISSUER,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
    }
    if name is not None:
        claims["name"] = name
    if province is not None:
        claims["province"] = province
    if jti is not None:
        claims["jti"] = jti
    if grants is not None:
        claims["grants"] = grants.to_json() if isinstance(grants, Grants) else dict(grants)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str | None, now: float | None = None) -> Grant:
    """Check signature and claims; `now` (unix seconds) replaces the wall clock in tests.

    Raises TokenMissing, TokenInvalid or TokenExpired (signaling.errors.AuthError).
    """
    if not token:
        raise TokenMissing()
    if not isinstance(token, str):
        raise TokenInvalid()
    try:
        # Only HS256: a token naming `none` or another algorithm fails here. Time claims are
        # checked below against `now` so tests can drive the clock.
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={
                "require": ["exp", "sub", "room", "role", "iss"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError:
        raise TokenInvalid() from None
    current = time.time() if now is None else now
    exp = claims["exp"]
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenInvalid("exp must be a number")
    if current >= exp:
        raise TokenExpired()
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int | float) or current < nbf):
        raise TokenInvalid("token not valid yet")
    role = claims["role"]
    if role not in ROLE_GRANTS:
        raise TokenInvalid("unknown role")
    grants = ROLE_GRANTS[role]
    claim = claims.get("grants")
    if claim is not None:
        if not isinstance(claim, dict):
            raise TokenInvalid("grants must be an object")
        grants = grants.narrowed(claim)
    return Grant(
        identity=_check_identity(claims["sub"]),
        room=str(_check_text(claims["room"], "room", optional=False)),
        role=role,
        grants=grants,
        expires_at=float(exp),
        name=_check_text(claims.get("name"), "name", optional=True),
        province=_check_text(claims.get("province"), "province", optional=True),
        jti=_check_text(claims.get("jti"), "jti", optional=True),
    )
