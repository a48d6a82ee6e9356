"""signaling.auth: tokens are HS256 only, time-checked against an injectable `now`, and grants
can only narrow the role's."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from signaling.auth import ROLE_GRANTS, Grants, issue_token, verify_token
from signaling.errors import AuthError, TokenExpired, TokenInvalid, TokenMissing

SECRET = "unit-test-secret-" + "0" * 48
NOW = 1_800_000_000.0


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "hanoi-hq",
        "room": "national",
        "role": "chair",
        "iss": "hoinghi",
        "iat": int(NOW),
        "exp": int(NOW) + 60,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=alg)


def code(token: str | None, now: float = NOW) -> str:
    with pytest.raises(AuthError) as info:
        verify_token(SECRET, token, now=now)
    assert info.value.close_code == 4001
    return info.value.code


def test_valid_token_round_trip() -> None:
    token = issue_token(
        SECRET, "national", "hanoi-hq", "chair", name="Hà Nội HQ", province="01", ttl_s=60, now=NOW
    )
    grant = verify_token(SECRET, token, now=NOW + 30)
    assert (grant.identity, grant.room, grant.role) == ("hanoi-hq", "national", "chair")
    assert (grant.name, grant.province, grant.display_name) == ("Hà Nội HQ", "01", "Hà Nội HQ")
    assert grant.grants == ROLE_GRANTS["chair"]
    assert grant.expires_at == NOW + 60


def test_display_name_defaults_to_identity() -> None:
    grant = verify_token(SECRET, issue_token(SECRET, "r", "xa-1", "commune", now=NOW), now=NOW)
    assert grant.name is None and grant.display_name == "xa-1"


def test_expiry_uses_the_given_now() -> None:
    token = issue_token(SECRET, "r", "a", "commune", ttl_s=60, now=NOW)
    verify_token(SECRET, token, now=NOW + 59)
    assert code(token, now=NOW + 60) == "token_expired"
    with pytest.raises(TokenExpired):
        verify_token(SECRET, token, now=NOW + 10_000)


def test_missing_token() -> None:
    for token in (None, ""):
        with pytest.raises(TokenMissing):
            verify_token(SECRET, token, now=NOW)


def test_forged_signature_and_garbage() -> None:
    assert code(signed(claims(), secret="another-secret-" + "1" * 32)) == "token_invalid"
    assert code("not-a-jwt") == "token_invalid"
    assert code("a.b.c") == "token_invalid"
    good = signed(claims())
    head, body, sig = good.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(body + "=="))
    tampered["role"] = "chair"
    tampered["sub"] = "someone-else"
    body2 = base64.urlsafe_b64encode(json.dumps(tampered).encode()).rstrip(b"=").decode()
    assert code(f"{head}.{body2}.{sig}") == "token_invalid"


def test_only_hs256_is_accepted() -> None:
    assert code(jwt.encode(claims(), None, algorithm="none")) == "token_invalid"
    # hand-made `none` token with an empty signature
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    assert code(f"{header}.{body}.") == "token_invalid"
    assert code(signed(claims(), alg="HS512")) == "token_invalid"
    assert code(signed(claims(), alg="HS384")) == "token_invalid"


@pytest.mark.parametrize("missing", ["sub", "room", "role", "exp", "iss"])
def test_required_claims(missing: str) -> None:
    assert code(signed(claims(**{missing: None}))) == "token_invalid"


@pytest.mark.parametrize(
    "over",
    [
        {"role": "king"},
        {"role": 3},
        {"sub": "has space"},
        {"sub": "x" * 65},
        {"sub": ""},
        {"sub": "ngô"},
        {"room": ""},
        {"room": 5},
        {"iss": "someone"},
        {"exp": "soon"},
        {"name": 5},
        {"province": ""},
        {"nbf": NOW + 100},
        {"grants": ["publish"]},
        {"grants": {"publish": "no"}},
        {"grants": {"teleport": False}},
    ],
    ids=lambda o: json.dumps(o)[:40],
)
def test_bad_claims_are_invalid(over: dict[str, Any]) -> None:
    assert code(signed(claims(**over))) == "token_invalid"


def test_identity_pattern_accepts_the_documented_alphabet() -> None:
    grant = verify_token(SECRET, signed(claims(sub="Xa_01.tinh-26")), now=NOW)
    assert grant.identity == "Xa_01.tinh-26"
    assert verify_token(SECRET, signed(claims(sub="x" * 64)), now=NOW).identity == "x" * 64


def test_roles_table_matches_the_doc() -> None:
    table = {role: g.names() for role, g in ROLE_GRANTS.items()}
    assert table == {
        "chair": {"publish", "subscribe", "moderate", "record", "observe_all"},
        "province": {"publish", "subscribe"},
        "commune": {"publish", "subscribe"},
        "secretary": {"subscribe", "record"},
        "operator": {"subscribe", "moderate", "record", "observe_all"},
        "observer": {"subscribe"},
    }


def test_grants_narrow_never_widen() -> None:
    narrowed = verify_token(SECRET, signed(claims(grants={"publish": False})), now=NOW)
    assert narrowed.grants == Grants(subscribe=True, moderate=True, record=True, observe_all=True)
    widened = verify_token(
        SECRET,
        signed(claims(role="observer", grants={"publish": True, "moderate": True})),
        now=NOW,
    )
    assert widened.grants == ROLE_GRANTS["observer"]
    token = issue_token(SECRET, "r", "a", "commune", grants={"subscribe": False}, now=NOW)
    assert verify_token(SECRET, token, now=NOW).grants == Grants(publish=True)
    token = issue_token(SECRET, "r", "a", "province", grants=Grants(), now=NOW)
    assert verify_token(SECRET, token, now=NOW).grants == Grants()


def test_issue_token_refuses_what_verify_would() -> None:
    for kwargs in (
        {"role": "king"},
        {"identity": "bad id"},
        {"room": ""},
        {"ttl_s": 0},
        {"name": ""},
    ):
        args: dict[str, Any] = {"room": "r", "identity": "a", "role": "commune", **kwargs}
        with pytest.raises(ValueError):
            issue_token(SECRET, **args)
    with pytest.raises(ValueError):
        issue_token("", "r", "a", "commune")


def test_errors_are_auth_errors_with_stable_codes() -> None:
    assert (TokenMissing.code, TokenInvalid.code, TokenExpired.code) == (
        "token_missing",
        "token_invalid",
        "token_expired",
    )
