"""wsq.auth: token verification (contract section 7), rights, mint_token, JWKS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from wsq.auth import NO_RIGHTS, Authenticator, Principal, Rights, mint_token
from wsq.config import KeyConfig, TenantConfig, load_settings
from wsq.core.errors import ConfigError, TokenExpired, Unauthorized
from wsq.core.limits import MAX_TOKEN_CHARS

NOW = 1_700_000_000.0
SECRET = "s" * 64  # long enough for HS512
OTHER_SECRET = "o" * 64


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_pem(private_key: Any) -> str:
    pem: bytes = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


_DROP = object()  # claims(name=_DROP) leaves the claim out


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": "acme", "sub": "user-1", "iat": int(NOW), "exp": int(NOW) + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


def sign(payload: dict[str, Any], key: Any, alg: str, kid: str | None = None) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def tenant(*keys: KeyConfig, name: str = "acme", issuer: str | None = None) -> TenantConfig:
    return TenantConfig(name=name, issuer=issuer if issuer is not None else name, keys=keys)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ec384_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_auth(clock: Clock) -> Callable[..., Authenticator]:
    """Authenticators over static keys (they own no HTTP client: nothing to close)."""

    def make(*tenants: TenantConfig, **kwargs: Any) -> Authenticator:
        kwargs.setdefault("clock", clock)
        return Authenticator({t.name: t for t in tenants}, **kwargs)

    return make


# --------------------------------------------------------------------------------- algorithms


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_algorithms(alg: str, make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg=alg, kid="k1", secret=SECRET)))
    principal = await auth.verify(sign(claims(), SECRET, alg, kid="k1"))
    assert principal == Principal(tenant="acme", sub="user-1", exp=int(NOW) + 600, rights=NO_RIGHTS)


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
async def test_rsa_algorithms(
    alg: str, rsa_key: rsa.RSAPrivateKey, make_auth: Callable[..., Authenticator]
) -> None:
    auth = make_auth(tenant(KeyConfig(alg=alg, public_key=public_pem(rsa_key))))
    principal = await auth.verify(sign(claims(), rsa_key, alg))
    assert (principal.tenant, principal.sub) == ("acme", "user-1")


@pytest.mark.parametrize("alg", ["ES256", "ES384"])
async def test_ec_algorithms(
    alg: str,
    ec256_key: ec.EllipticCurvePrivateKey,
    ec384_key: ec.EllipticCurvePrivateKey,
    make_auth: Callable[..., Authenticator],
) -> None:
    key = ec256_key if alg == "ES256" else ec384_key
    auth = make_auth(tenant(KeyConfig(alg=alg, kid="e", public_key=public_pem(key))))
    principal = await auth.verify(sign(claims(), key, alg, kid="e"))
    assert principal.sub == "user-1"


async def test_eddsa(
    ed_key: ed25519.Ed25519PrivateKey, make_auth: Callable[..., Authenticator]
) -> None:
    auth = make_auth(tenant(KeyConfig(alg="EdDSA", public_key=public_pem(ed_key))))
    principal = await auth.verify(sign(claims(), ed_key, "EdDSA"))
    assert principal.sub == "user-1"


async def test_short_hmac_secret_works_without_warnings(
    make_auth: Callable[..., Authenticator], caplog: pytest.LogCaptureFixture
) -> None:
    # filterwarnings=error: PyJWT's per-call InsecureKeyLengthWarning would fail this test.
    with caplog.at_level(logging.WARNING, logger="wsq.auth"):
        t = tenant(KeyConfig(alg="HS256", kid="k", secret="change-me"))
        auth = make_auth(t)
    assert "shorter than 32 bytes" in caplog.text
    assert "change-me" not in caplog.text
    principal = await auth.verify(mint_token(t, "u", now=NOW))
    assert principal.sub == "u"


# ------------------------------------------------------------------------ algorithm refusals


async def test_alg_none_is_refused(make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    for alg in ("none", "None", "NONE"):
        header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        payload = b64url(json.dumps(claims()).encode())
        for token in (f"{header}.{payload}.", f"{header}.{payload}"):
            with pytest.raises(Unauthorized):
                await auth.verify(token)
    with pytest.raises(Unauthorized, match="algorithm"):
        await auth.verify(jwt.encode(claims(), "", algorithm="none"))


def _hs256_signed_with(secret: bytes, payload: dict[str, Any], kid: str | None = None) -> str:
    """An HS256 token made by hand (PyJWT refuses a PEM key as an HMAC secret)."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


async def test_hs256_token_signed_with_rsa_public_key_is_refused(
    rsa_key: rsa.RSAPrivateKey, make_auth: Callable[..., Authenticator]
) -> None:
    """Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret."""
    pem = public_pem(rsa_key)
    # A tenant with only the RSA key (with and without kid), and one with an HMAC key too.
    auth = make_auth(
        tenant(KeyConfig(alg="RS256", kid="r1", public_key=pem)),
        tenant(KeyConfig(alg="RS256", public_key=pem), name="beta"),
        tenant(
            KeyConfig(alg="RS256", kid="r1", public_key=pem),
            KeyConfig(alg="HS256", kid="h1", secret=SECRET),
            name="gamma",
        ),
    )
    for iss in ("acme", "beta", "gamma"):
        for kid in (None, "r1"):
            for secret in (pem.encode(), pem.strip().encode()):
                forged = _hs256_signed_with(secret, claims(iss=iss), kid=kid)
                with pytest.raises(Unauthorized):
                    await auth.verify(forged)
    # The same holds one level down: jwt.decode with the key's own algorithm refuses it.
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(_hs256_signed_with(pem.encode(), claims()), pem, algorithms=["RS256"])


async def test_algorithm_must_match_the_key(
    rsa_key: rsa.RSAPrivateKey,
    ec256_key: ec.EllipticCurvePrivateKey,
    ec384_key: ec.EllipticCurvePrivateKey,
    make_auth: Callable[..., Authenticator],
) -> None:
    auth = make_auth(
        tenant(
            KeyConfig(alg="RS256", kid="r", public_key=public_pem(rsa_key)),
            KeyConfig(alg="ES256", kid="e", public_key=public_pem(ec256_key)),
            KeyConfig(alg="HS256", kid="h", secret=SECRET),
        )
    )
    # Same key material, another algorithm of the same family.
    with pytest.raises(Unauthorized, match="does not match"):
        await auth.verify(sign(claims(), rsa_key, "RS512", kid="r"))
    with pytest.raises(Unauthorized, match="does not match"):
        await auth.verify(sign(claims(), SECRET, "HS512", kid="h"))
    # Another family altogether, kid pointing at the key.
    with pytest.raises(Unauthorized, match="does not match"):
        await auth.verify(sign(claims(), ec384_key, "ES384", kid="e"))
    # No kid and no key of that algorithm.
    with pytest.raises(Unauthorized, match="algorithm"):
        await auth.verify(sign(claims(), rsa_key, "PS256"))
    with pytest.raises(Unauthorized, match="algorithm"):
        await auth.verify(sign(claims(), rsa_key, "RS384"))
    # The right combinations do verify.
    assert (await auth.verify(sign(claims(), rsa_key, "RS256", kid="r"))).sub == "user-1"
    assert (await auth.verify(sign(claims(), ec256_key, "ES256"))).sub == "user-1"


# ------------------------------------------------------------------------------------ kid


async def test_kid_selects_the_key(
    rsa_key: rsa.RSAPrivateKey, make_auth: Callable[..., Authenticator]
) -> None:
    secrets = {f"k{i}": f"{i}" * 40 for i in range(1, 4)}
    t = tenant(
        *(KeyConfig(alg="HS256", kid=kid, secret=s) for kid, s in secrets.items()),
        KeyConfig(alg="RS256", kid="r", public_key=public_pem(rsa_key)),
    )
    auth = make_auth(t)
    for kid, secret in secrets.items():
        principal = await auth.verify(sign(claims(sub=kid), secret, "HS256", kid=kid))
        assert principal.sub == kid
    # kid k2, but signed with k1's secret: the kid picks k2 and the signature fails.
    with pytest.raises(Unauthorized, match="signature"):
        await auth.verify(sign(claims(), secrets["k1"], "HS256", kid="k2"))
    # No kid: the tenant's keys of the token's algorithm are tried.
    assert (await auth.verify(sign(claims(), secrets["k3"], "HS256"))).sub == "user-1"
    assert (await auth.verify(sign(claims(), rsa_key, "RS256"))).sub == "user-1"


async def test_unknown_kid(make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(
        tenant(
            KeyConfig(alg="HS256", kid="k1", secret=SECRET),
            KeyConfig(alg="HS256", kid="k2", secret=OTHER_SECRET),
        )
    )
    with pytest.raises(Unauthorized, match="kid"):
        await auth.verify(sign(claims(), SECRET, "HS256", kid="k3"))
    header = b64url(json.dumps({"alg": "HS256", "kid": 7}).encode())
    with pytest.raises(Unauthorized):
        await auth.verify(f"{header}.{b64url(b'{}')}.{b64url(b'x')}")


async def test_key_without_kid_stands_for_any_kid(make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    assert (await auth.verify(sign(claims(), SECRET, "HS256", kid="whatever"))).sub == "user-1"
    with pytest.raises(Unauthorized, match="signature"):
        await auth.verify(sign(claims(), OTHER_SECRET, "HS256", kid="whatever"))


# -------------------------------------------------------------------------------- claims


async def test_issuer_picks_the_tenant(make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(
        tenant(KeyConfig(alg="HS256", secret=SECRET)),
        tenant(KeyConfig(alg="HS256", secret=OTHER_SECRET), name="beta", issuer="https://idp.beta"),
    )
    assert (await auth.verify(sign(claims(), SECRET, "HS256"))).tenant == "acme"
    # The principal names the tenant (config key), not the issuer.
    beta = await auth.verify(sign(claims(iss="https://idp.beta"), OTHER_SECRET, "HS256"))
    assert beta.tenant == "beta"
    # A tenant's token signed with another tenant's key.
    with pytest.raises(Unauthorized, match="signature"):
        await auth.verify(sign(claims(iss="https://idp.beta"), SECRET, "HS256"))
    # beta's issuer is not its name.
    with pytest.raises(Unauthorized, match="issuer"):
        await auth.verify(sign(claims(iss="beta"), OTHER_SECRET, "HS256"))


async def test_issuer_defaults_to_the_name_when_empty(
    make_auth: Callable[..., Authenticator],
) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET), issuer=""))
    assert (await auth.verify(sign(claims(), SECRET, "HS256"))).tenant == "acme"


@pytest.mark.parametrize("iss", [_DROP, None, "", 42, ["acme"], "nobody"])
async def test_missing_or_unknown_issuer(iss: Any, make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    # By hand: PyJWT refuses to encode a non-string iss.
    token = _hs256_signed_with(SECRET.encode(), claims(iss=iss))
    with pytest.raises(Unauthorized, match="iss"):
        await auth.verify(token)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sub": _DROP}, "sub"),
        ({"sub": ""}, "sub"),
        ({"sub": 42}, "sub"),
        ({"sub": None}, "sub"),
        ({"exp": _DROP}, "exp"),
        ({"exp": None}, "exp"),
        ({"exp": "tomorrow"}, "exp"),
        ({"exp": True}, "exp"),
        ({"nbf": "now"}, "nbf"),
        ({"iat": [1]}, "iat"),
    ],
)
async def test_required_claims(
    overrides: dict[str, Any], message: str, make_auth: Callable[..., Authenticator]
) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    with pytest.raises(Unauthorized, match=message):
        await auth.verify(sign(claims(**overrides), SECRET, "HS256"))


async def test_non_finite_exp_is_refused(make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    header = b64url(json.dumps({"alg": "HS256"}).encode())
    for exp in ("NaN", "Infinity"):
        body = json.dumps(claims()).replace(str(int(NOW) + 600), exp)
        signing_input = f"{header}.{b64url(body.encode())}"
        sig = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(Unauthorized, match="exp"):
            await auth.verify(f"{signing_input}.{b64url(sig)}")


async def test_expired_token(clock: Clock, make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)), leeway_s=5.0)
    token = sign(claims(exp=int(NOW) + 60), SECRET, "HS256")
    assert (await auth.verify(token)).exp == int(NOW) + 60
    clock.now = NOW + 66
    with pytest.raises(TokenExpired) as info:
        await auth.verify(token)
    assert not isinstance(info.value, Unauthorized)
    assert info.value.condition == "wsq:token-expired"
    # Expiry is only reported for a genuine token: a forged expired one is merely unauthorized.
    with pytest.raises(Unauthorized):
        await auth.verify(sign(claims(exp=int(NOW)), OTHER_SECRET, "HS256"))


async def test_leeway(clock: Clock, make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)), leeway_s=5.0)
    exp = int(NOW)
    token = sign(claims(exp=exp, iat=exp - 60), SECRET, "HS256")
    clock.now = exp + 4  # past exp, within the leeway
    assert (await auth.verify(token)).exp == exp
    clock.now = exp + 5
    with pytest.raises(TokenExpired):
        await auth.verify(token)
    strict = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)), leeway_s=0.0)
    clock.now = exp
    with pytest.raises(TokenExpired):
        await strict.verify(token)


async def test_nbf(clock: Clock, make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)), leeway_s=5.0)
    soon = sign(claims(nbf=int(NOW) + 4), SECRET, "HS256")
    assert (await auth.verify(soon)).sub == "user-1"  # within the leeway
    later = sign(claims(nbf=int(NOW) + 30), SECRET, "HS256")
    with pytest.raises(Unauthorized, match="nbf"):
        await auth.verify(later)
    clock.now = NOW + 30
    assert (await auth.verify(later)).sub == "user-1"


async def test_iat_in_the_future(clock: Clock, make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)), leeway_s=5.0)
    assert (await auth.verify(sign(claims(iat=int(NOW) + 4), SECRET, "HS256"))).sub == "user-1"
    with pytest.raises(Unauthorized, match="iat"):
        await auth.verify(sign(claims(iat=int(NOW) + 60), SECRET, "HS256"))


async def test_audience_and_unknown_claims_are_ignored(
    make_auth: Callable[..., Authenticator],
) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    token = sign(claims(aud="someone", jti=5, extra={"x": 1}), SECRET, "HS256")
    assert (await auth.verify(token)).sub == "user-1"


async def test_float_exp_is_floored(make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    principal = await auth.verify(sign(claims(exp=NOW + 100.75), SECRET, "HS256"))
    assert principal.exp == int(NOW) + 100
    assert isinstance(principal.exp, int)


# ------------------------------------------------------------------- signatures and garbage


async def test_wrong_signature(
    rsa_key: rsa.RSAPrivateKey,
    rsa_key2: rsa.RSAPrivateKey,
    make_auth: Callable[..., Authenticator],
) -> None:
    auth = make_auth(
        tenant(
            KeyConfig(alg="HS256", kid="h", secret=SECRET),
            KeyConfig(alg="RS256", kid="r", public_key=public_pem(rsa_key)),
        )
    )
    with pytest.raises(Unauthorized, match="signature"):
        await auth.verify(sign(claims(), OTHER_SECRET, "HS256", kid="h"))
    with pytest.raises(Unauthorized, match="signature"):
        await auth.verify(sign(claims(), rsa_key2, "RS256", kid="r"))
    # A genuine token with a changed payload.
    token = sign(claims(), SECRET, "HS256", kid="h")
    header, _, sig = token.split(".")
    tampered = f"{header}.{b64url(json.dumps(claims(sub='admin')).encode())}.{sig}"
    with pytest.raises(Unauthorized, match="signature"):
        await auth.verify(tampered)
    # A genuine token with a truncated signature.
    with pytest.raises(Unauthorized):
        await auth.verify(token[:-4])


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "...",
        "a.b",
        "eyJhbGciOiJIUzI1NiJ9",
        f"{b64url(b'not json')}.{b64url(b'{}')}.{b64url(b'x')}",
        f"{b64url(b'[1]')}.{b64url(b'{}')}.{b64url(b'x')}",
        f"{b64url(json.dumps({'alg': 'HS256'}).encode())}.{b64url(b'[1, 2]')}.{b64url(b'x')}",
        f"{b64url(json.dumps({'alg': 'HS256'}).encode())}.{b64url(b'not json')}.{b64url(b'x')}",
        f"{b64url(json.dumps({'alg': 'HS256'}).encode())}.{b64url(b'{}')}.!!!",
        f"{b64url(json.dumps({'typ': 'JWT'}).encode())}.{b64url(b'{}')}.{b64url(b'x')}",
        "\u00e9\u00e9.\u00e9.\u00e9",
        " " * 10,
    ],
)
async def test_garbage_tokens(token: str, make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    with pytest.raises(Unauthorized):
        await auth.verify(token)


@pytest.mark.parametrize("token", [None, 42, b"a.b.c", "", ["a.b.c"], {"token": "x"}, 1.5])
async def test_non_string_or_empty_token(
    token: object, make_auth: Callable[..., Authenticator]
) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    with pytest.raises(Unauthorized, match="non-empty string"):
        await auth.verify(token)


async def test_oversized_token(make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    token = sign(claims(pad="x" * MAX_TOKEN_CHARS), SECRET, "HS256")
    with pytest.raises(Unauthorized, match="longer"):
        await auth.verify(token)


async def test_crit_header_is_refused(make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"crit": ["exp-ext"]})
    with pytest.raises(Unauthorized):
        await auth.verify(token)


async def test_messages_never_contain_the_token_or_secret(
    rsa_key: rsa.RSAPrivateKey, make_auth: Callable[..., Authenticator]
) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", kid="h", secret=SECRET)))
    bad_tokens = [
        sign(claims(), OTHER_SECRET, "HS256", kid="h"),
        sign(claims(iss="nobody"), SECRET, "HS256"),
        sign(claims(wsq={"publish": ["bad..pattern"]}), SECRET, "HS256"),
        sign(claims(exp=int(NOW) - 100), SECRET, "HS256"),
        sign(claims(), rsa_key, "RS256", kid="h"),
        "x" * (MAX_TOKEN_CHARS + 1),
    ]
    for token in bad_tokens:
        with pytest.raises((Unauthorized, TokenExpired)) as info:
            await auth.verify(token)
        text = str(info.value) + info.value.description + repr(info.value.to_error())
        for part in token.split("."):
            assert part not in text
        assert SECRET not in text
        assert info.value.__cause__ is None  # nothing chained that could carry the token


# ---------------------------------------------------------------------------------- rights


async def test_rights_claim(make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    rights = {"publish": ["chat.*", "chat.*"], "subscribe": ["news.>", "user.42"], "x": 1}
    principal = await auth.verify(sign(claims(wsq=rights), SECRET, "HS256"))
    assert [p.text for p in principal.rights.publish] == ["chat.*"]  # duplicates dropped
    assert [p.text for p in principal.rights.subscribe] == ["news.>", "user.42"]
    # Missing claim, null claim, missing or null lists: no rights.
    for value in (_DROP, None, {}, {"publish": None}):
        principal = await auth.verify(sign(claims(wsq=value), SECRET, "HS256"))
        assert principal.rights == NO_RIGHTS


@pytest.mark.parametrize(
    ("wsq_claim", "message"),
    [
        ("publish", '"wsq" must be an object'),
        (["chat.a"], '"wsq" must be an object'),
        (42, '"wsq" must be an object'),
        ({"publish": "chat.a"}, r'"wsq\.publish" must be a list'),
        ({"subscribe": {"a": 1}}, r'"wsq\.subscribe" must be a list'),
        ({"publish": [1]}, r'"wsq\.publish\[0\]" is not a valid'),
        ({"publish": ["ok", None]}, r'"wsq\.publish\[1\]" is not a valid'),
        ({"subscribe": ["a..b"]}, r'"wsq\.subscribe\[0\]" is not a valid'),
        ({"subscribe": ["a.>.b"]}, r'"wsq\.subscribe\[0\]" is not a valid'),
        ({"subscribe": [""]}, r'"wsq\.subscribe\[0\]" is not a valid'),
        ({"subscribe": ["a b"]}, r'"wsq\.subscribe\[0\]" is not a valid'),
        ({"publish": ["x" * 256]}, r'"wsq\.publish\[0\]" is not a valid'),
        ({"publish": ["a"] * 1025}, "more than 1024"),
    ],
)
async def test_bad_rights_claim(
    wsq_claim: Any, message: str, make_auth: Callable[..., Authenticator]
) -> None:
    auth = make_auth(tenant(KeyConfig(alg="HS256", secret=SECRET)))
    with pytest.raises(Unauthorized, match=message):
        await auth.verify(sign(claims(wsq=wsq_claim), SECRET, "HS256"))


def test_rights_matching() -> None:
    rights = Rights.of(publish=["chat.*", "user.42.inbox"], subscribe=["news.>", "a.*.c.>"])
    assert rights.can_publish("chat.room1")
    assert not rights.can_publish("chat")
    assert not rights.can_publish("chat.room1.x")
    assert rights.can_publish("user.42.inbox")
    assert not rights.can_publish("user.43.inbox")
    assert not rights.can_publish("news.x")  # subscribe rights do not grant publish
    assert rights.can_subscribe("news.sport")
    assert rights.can_subscribe("news.sport.football.today")
    assert not rights.can_subscribe("news")
    assert not rights.can_subscribe("newsy.x")
    assert rights.can_subscribe("a.b.c.d")
    assert rights.can_subscribe("a.x.c.d.e")
    assert not rights.can_subscribe("a.b.c")
    assert not rights.can_subscribe("a.b.x.d")
    assert not rights.can_subscribe("chat.room1")
    assert not NO_RIGHTS.can_publish("chat.room1")
    assert not NO_RIGHTS.can_subscribe("chat.room1")
    everything = Rights.of(publish=[">"], subscribe=["*"])
    assert everything.can_publish("a") and everything.can_publish("a.b.c")
    assert everything.can_subscribe("a") and not everything.can_subscribe("a.b")
    with pytest.raises(ValueError):
        Rights.of(publish=["a..b"])


# ------------------------------------------------------------------------------ mint_token


async def test_mint_token_round_trip(make_auth: Callable[..., Authenticator]) -> None:
    t = tenant(
        KeyConfig(alg="HS384", kid="k1", secret=SECRET),
        KeyConfig(alg="HS512", kid="k2", secret=OTHER_SECRET),
        issuer="https://issuer.example",
    )
    auth = make_auth(t)
    token = mint_token(t, "alice", publish=["chat.*"], subscribe=["news.>"], ttl_s=120, now=NOW)
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("HS384", "k1")
    body = jwt.decode(token, options={"verify_signature": False})
    assert body["iss"] == "https://issuer.example"
    assert (body["iat"], body["exp"]) == (int(NOW), int(NOW) + 120)
    principal = await auth.verify(token)
    assert principal == Principal(
        tenant="acme", sub="alice", exp=int(NOW) + 120, rights=Rights.of(["chat.*"], ["news.>"])
    )
    assert principal.rights.can_publish("chat.x") and principal.rights.can_subscribe("news.a.b")
    # kid picks the key.
    token2 = mint_token(t, "bob", kid="k2", now=NOW)
    assert jwt.get_unverified_header(token2)["alg"] == "HS512"
    assert (await auth.verify(token2)).rights == NO_RIGHTS
    # Default now: the real clock.
    body3 = jwt.decode(mint_token(t, "carol"), options={"verify_signature": False})
    assert abs(body3["iat"] - time.time()) < 5 and body3["exp"] == body3["iat"] + 3600


async def test_mint_token_without_kid(make_auth: Callable[..., Authenticator]) -> None:
    t = tenant(KeyConfig(alg="HS256", secret=SECRET))
    token = mint_token(t, "u", now=NOW)
    assert "kid" not in jwt.get_unverified_header(token)
    assert (await make_auth(t).verify(token)).sub == "u"


def test_mint_token_errors(rsa_key: rsa.RSAPrivateKey) -> None:
    rsa_only = tenant(KeyConfig(alg="RS256", public_key=public_pem(rsa_key)))
    with pytest.raises(ConfigError, match="HMAC"):
        mint_token(rsa_only, "u")
    with pytest.raises(ConfigError, match="kid"):
        mint_token(tenant(KeyConfig(alg="HS256", kid="k1", secret=SECRET)), "u", kid="k9")
    t = tenant(KeyConfig(alg="HS256", secret=SECRET))
    with pytest.raises(ValueError, match="sub"):
        mint_token(t, "")
    with pytest.raises(ValueError, match="pattern"):
        mint_token(t, "u", publish=["a..b"])


def test_mint_token_skips_public_keys_to_find_the_hmac_key(rsa_key: rsa.RSAPrivateKey) -> None:
    t = tenant(
        KeyConfig(alg="RS256", kid="r", public_key=public_pem(rsa_key)),
        KeyConfig(alg="HS256", kid="h", secret=SECRET),
    )
    assert jwt.get_unverified_header(mint_token(t, "u"))["kid"] == "h"


# -------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ((), "no keys"),
        ((KeyConfig(alg="none", secret=SECRET),), "not supported"),
        ((KeyConfig(alg="PS256", public_key="x"),), "not supported"),
        ((KeyConfig(alg="hs256", secret=SECRET),), "not supported"),
        ((KeyConfig(alg="HS256"),), "exactly one"),
        ((KeyConfig(alg="HS256", secret=SECRET, jwks_url="https://x/jwks"),), "exactly one"),
        ((KeyConfig(alg="RS256", secret=SECRET),), "HMAC"),
        ((KeyConfig(alg="HS256", secret=""),), "empty"),
        ((KeyConfig(alg="HS256", public_key="x"),), "public key needs"),
        ((KeyConfig(alg="RS256", public_key="not a pem"),), "not a PEM public key"),
        ((KeyConfig(alg="HS256", jwks_url="https://idp/jwks"),), "JWKS"),
        ((KeyConfig(alg="RS256", jwks_url="ftp://idp/jwks"),), "http"),
        ((KeyConfig(alg="RS256", jwks_url="/jwks"),), "http"),
        (
            (
                KeyConfig(alg="HS256", kid="a", secret=SECRET),
                KeyConfig(alg="HS512", kid="a", secret=SECRET),
            ),
            "twice",
        ),
    ],
)
def test_bad_key_config(keys: tuple[KeyConfig, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Authenticator({"acme": tenant(*keys)})


def test_public_key_of_the_wrong_kind(
    rsa_key: rsa.RSAPrivateKey,
    ec256_key: ec.EllipticCurvePrivateKey,
    ec384_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    cases = [
        ("RS256", public_pem(ec256_key)),
        ("ES256", public_pem(ec384_key)),
        ("ES384", public_pem(ec256_key)),
        ("ES256", public_pem(rsa_key)),
        ("EdDSA", public_pem(rsa_key)),
        ("RS256", public_pem(ed_key)),
    ]
    for alg, pem in cases:
        with pytest.raises(ConfigError, match=alg):
            Authenticator({"acme": tenant(KeyConfig(alg=alg, public_key=pem))})
    # A PEM public key used as an HMAC secret is refused as well.
    with pytest.raises(ConfigError, match="public key"):
        Authenticator({"acme": tenant(KeyConfig(alg="HS256", secret=public_pem(rsa_key)))})


def test_a_private_key_pem_is_refused_as_the_configuration_refuses_it(
    rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    # One key policy (wsq/keys.py): the configuration and the authenticator agree. The gateway
    # only verifies; a private key in its settings is one more place for it to leak from.
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(ConfigError, match="public_key holds a PRIVATE key"):
        Authenticator({"acme": tenant(KeyConfig(alg="RS256", public_key=pem))})
    (tmp_path / "key.pem").write_text(pem)
    (tmp_path / "wsq.toml").write_text(
        '[tenants.acme]\nkeys = [{ alg = "RS256", public_key_file = "key.pem" }]\n'
    )
    with pytest.raises(ConfigError, match="public_key_file: holds a PRIVATE key"):
        load_settings(config_path=str(tmp_path / "wsq.toml"), environ={})


def test_shared_issuer_is_a_config_error() -> None:
    a = tenant(KeyConfig(alg="HS256", secret=SECRET), name="a", issuer="same")
    b = tenant(KeyConfig(alg="HS256", secret=SECRET), name="b", issuer="same")
    with pytest.raises(ConfigError, match="share issuer"):
        Authenticator({"a": a, "b": b})


def test_config_error_never_shows_the_secret() -> None:
    secret = "-----BEGIN PUBLIC KEY-----\nTOPSECRET\n-----END PUBLIC KEY-----"
    with pytest.raises(ConfigError) as info:
        Authenticator({"acme": tenant(KeyConfig(alg="HS256", secret=secret))})
    assert "TOPSECRET" not in str(info.value)


# ------------------------------------------------------------------------------------ JWKS


class JwksServer:
    """A JWKS document served over real HTTP from a thread; counts requests."""

    def __init__(self) -> None:
        self.document: bytes = b'{"keys": []}'
        self.status = 200
        self.delay_s = 0.0
        self.requests = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests += 1
                    body, status, delay = server.document, server.status, server.delay_s
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self._running = True

    def publish(self, *jwks: object) -> None:
        self.document = json.dumps({"keys": list(jwks)}).encode()

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)


def jwk(private_key: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    assert isinstance(data, dict)
    if kid is not None:
        data["kid"] = kid
    data.update(extra)
    return data


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


@pytest.fixture
async def jwks_auth(
    clock: Clock, jwks_server: JwksServer
) -> AsyncIterator[Callable[..., Authenticator]]:
    made: list[Authenticator] = []

    def make(alg: str = "RS256", url: str | None = None, **kwargs: Any) -> Authenticator:
        kwargs.setdefault("clock", clock)
        t = tenant(KeyConfig(alg=alg, jwks_url=url or jwks_server.url))
        auth = Authenticator({"acme": t}, **kwargs)
        made.append(auth)
        return auth

    yield make
    for auth in made:
        await auth.aclose()


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_jwks_fetch_and_cache(
    rsa_key: rsa.RSAPrivateKey,
    jwks_server: JwksServer,
    jwks_auth: Callable[..., Authenticator],
) -> None:
    jwks_server.publish(jwk(rsa_key, "k1"))
    auth = jwks_auth()
    assert jwks_server.requests == 0  # nothing fetched before it is needed
    for _ in range(5):
        assert (await auth.verify(sign(claims(), rsa_key, "RS256", kid="k1"))).sub == "user-1"
    assert (await auth.verify(sign(claims(), rsa_key, "RS256"))).sub == "user-1"  # no kid
    assert jwks_server.requests == 1


@pytest.mark.parametrize("alg", ["RS384", "ES256", "ES384", "EdDSA"])
async def test_jwks_key_types(
    alg: str,
    rsa_key: rsa.RSAPrivateKey,
    ec256_key: ec.EllipticCurvePrivateKey,
    ec384_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
    jwks_server: JwksServer,
    jwks_auth: Callable[..., Authenticator],
) -> None:
    keys = {"RS384": rsa_key, "ES256": ec256_key, "ES384": ec384_key, "EdDSA": ed_key}
    # The JWKS holds every kind of key: only the one fit for the tenant's algorithm is used.
    jwks_server.publish(*(jwk(k, f"kid-{a}") for a, k in keys.items()))
    auth = jwks_auth(alg)
    key = keys[alg]
    assert (await auth.verify(sign(claims(), key, alg, kid=f"kid-{alg}"))).sub == "user-1"
    assert (await auth.verify(sign(claims(), key, alg))).sub == "user-1"
    # A key of the JWKS that does not fit the configured algorithm is unknown to this tenant.
    other_alg, other = ("ES256", ec256_key) if alg != "ES256" else ("ES384", ec384_key)
    with pytest.raises(Unauthorized):
        await auth.verify(sign(claims(), other, other_alg, kid=f"kid-{other_alg}"))


async def test_jwks_skips_unfit_keys(
    rsa_key: rsa.RSAPrivateKey,
    rsa_key2: rsa.RSAPrivateKey,
    jwks_server: JwksServer,
    jwks_auth: Callable[..., Authenticator],
) -> None:
    jwks_server.publish(
        jwk(rsa_key2, "enc", use="enc"),
        jwk(rsa_key2, "rs512", alg="RS512"),
        {"kty": "oct", "kid": "sym", "k": b64url(SECRET.encode())},
        {"kty": "RSA", "kid": "broken", "n": "AQAB"},
        "not a key",
        jwk(rsa_key, "good"),
    )
    auth = jwks_auth()
    assert (await auth.verify(sign(claims(), rsa_key, "RS256", kid="good"))).sub == "user-1"
    for kid in ("enc", "rs512", "broken"):
        with pytest.raises(Unauthorized, match="kid"):
            await auth.verify(sign(claims(), rsa_key2, "RS256", kid=kid))
    # A symmetric key published in the JWKS is never used as an HMAC secret.
    with pytest.raises(Unauthorized):
        await auth.verify(sign(claims(), SECRET, "HS256", kid="sym"))


async def test_jwks_stale_cache_is_refreshed_in_the_background(
    clock: Clock,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key2: rsa.RSAPrivateKey,
    jwks_server: JwksServer,
    jwks_auth: Callable[..., Authenticator],
) -> None:
    jwks_server.publish(jwk(rsa_key, "k1"))
    auth = jwks_auth(jwks_ttl_s=300.0)
    token = sign(claims(exp=int(NOW) + 3600), rsa_key, "RS256", kid="k1")
    await auth.verify(token)
    clock.now += 299
    await auth.verify(token)
    assert jwks_server.requests == 1
    # Stale: the old keys keep serving while a refresh runs.
    jwks_server.publish(jwk(rsa_key, "k1"), jwk(rsa_key2, "k2"))
    clock.now += 2
    await auth.verify(token)
    await eventually(lambda: jwks_server.requests == 2)
    token2 = sign(claims(exp=int(NOW) + 3600), rsa_key2, "RS256", kid="k2")
    await eventually(lambda: auth._sources[jwks_server.url]._inflight is None)
    assert (await auth.verify(token2)).sub == "user-1"
    assert jwks_server.requests == 2


async def test_jwks_key_rotation_refetches_on_unknown_kid(
    clock: Clock,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key2: rsa.RSAPrivateKey,
    jwks_server: JwksServer,
    jwks_auth: Callable[..., Authenticator],
) -> None:
    jwks_server.publish(jwk(rsa_key, "k1"))
    auth = jwks_auth(jwks_min_refresh_interval_s=10.0)
    old = sign(claims(), rsa_key, "RS256", kid="k1")
    await auth.verify(old)
    assert jwks_server.requests == 1
    # The issuer rotates: k1 gone, k2 published. A k2 token makes the gateway refetch.
    jwks_server.publish(jwk(rsa_key2, "k2"))
    clock.now += 11
    new = sign(claims(), rsa_key2, "RS256", kid="k2")
    assert (await auth.verify(new)).sub == "user-1"
    assert jwks_server.requests == 2
    # k1 is gone from the cache; asking again soon does not refetch (rate limit).
    with pytest.raises(Unauthorized, match="kid"):
        await auth.verify(old)
    assert jwks_server.requests == 2


async def test_jwks_refresh_rate_limit(
    clock: Clock,
    rsa_key: rsa.RSAPrivateKey,
    jwks_server: JwksServer,
    jwks_auth: Callable[..., Authenticator],
) -> None:
    jwks_server.publish(jwk(rsa_key, "k1"))
    auth = jwks_auth(jwks_min_refresh_interval_s=10.0)
    await auth.verify(sign(claims(), rsa_key, "RS256", kid="k1"))
    for i in range(20):  # a flood of made-up kids
        with pytest.raises(Unauthorized, match="kid"):
            await auth.verify(sign(claims(), rsa_key, "RS256", kid=f"bogus{i}"))
        clock.now += 0.4
    assert jwks_server.requests == 1  # 8 s passed: still within the interval
    clock.now += 2.1
    with pytest.raises(Unauthorized, match="kid"):
        await auth.verify(sign(claims(), rsa_key, "RS256", kid="bogus"))
    assert jwks_server.requests == 2
    with pytest.raises(Unauthorized, match="kid"):
        await auth.verify(sign(claims(), rsa_key, "RS256", kid="bogus"))
    assert jwks_server.requests == 2


@pytest.fixture
def slow_k1_auth(
    rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer, jwks_auth: Callable[..., Authenticator]
) -> Authenticator:
    """An authenticator on a JWKS server that publishes ``rsa_key`` as k1 and answers after
    0.2 s (a slow fetch, for the tests of verifies that wait on one)."""
    jwks_server.publish(jwk(rsa_key, "k1"))
    jwks_server.delay_s = 0.2
    return jwks_auth()


async def test_jwks_concurrent_verifies_share_one_fetch(
    rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer, slow_k1_auth: Authenticator
) -> None:
    auth = slow_k1_auth
    tokens = [sign(claims(sub=f"u{i}"), rsa_key, "RS256", kid="k1") for i in range(20)]
    principals = await asyncio.gather(*(auth.verify(t) for t in tokens))
    assert [p.sub for p in principals] == [f"u{i}" for i in range(20)]
    assert jwks_server.requests == 1


async def test_jwks_cancelled_verify_does_not_cancel_the_fetch(
    rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer, slow_k1_auth: Authenticator
) -> None:
    auth = slow_k1_auth
    token = sign(claims(), rsa_key, "RS256", kid="k1")
    first = asyncio.ensure_future(auth.verify(token))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(auth.verify(token))
    first.cancel()
    assert (await second).sub == "user-1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert jwks_server.requests == 1


async def test_jwks_server_down_keeps_the_old_cache(
    clock: Clock,
    rsa_key: rsa.RSAPrivateKey,
    jwks_server: JwksServer,
    jwks_auth: Callable[..., Authenticator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    jwks_server.publish(jwk(rsa_key, "k1"))
    auth = jwks_auth(jwks_ttl_s=300.0, jwks_min_refresh_interval_s=10.0)
    token = sign(claims(exp=int(NOW) + 7200), rsa_key, "RS256", kid="k1")
    await auth.verify(token)
    jwks_server.stop()
    source = auth._sources[jwks_server.url]
    with caplog.at_level(logging.WARNING, logger="wsq.auth"):
        clock.now += 301  # stale: a refresh is attempted and fails
        assert (await auth.verify(token)).sub == "user-1"
        await eventually(lambda: source._inflight is None)
        assert (await auth.verify(token)).sub == "user-1"
        clock.now += 11  # an unknown kid forces a refetch, which fails too
        with pytest.raises(Unauthorized, match="kid"):
            await auth.verify(sign(claims(exp=int(NOW) + 7200), rsa_key, "RS256", kid="k9"))
        assert (await auth.verify(token)).sub == "user-1"
    assert caplog.text.count("fetch failed") == 2
    assert "keeping 1 cached key" in caplog.text


@pytest.mark.parametrize(
    ("status", "document"),
    [
        (500, b'{"keys": []}'),
        (200, b"<html>not json</html>"),
        (200, b'{"no": "keys"}'),
        (200, b'{"keys": []}'),
        (200, b"[1, 2]"),
    ],
)
async def test_jwks_bad_answer_keeps_the_old_cache(
    status: int,
    document: bytes,
    clock: Clock,
    rsa_key: rsa.RSAPrivateKey,
    jwks_server: JwksServer,
    jwks_auth: Callable[..., Authenticator],
) -> None:
    jwks_server.publish(jwk(rsa_key, "k1"))
    auth = jwks_auth()
    token = sign(claims(), rsa_key, "RS256", kid="k1")
    await auth.verify(token)
    jwks_server.status, jwks_server.document = status, document
    clock.now += 11
    with pytest.raises(Unauthorized, match="kid"):
        await auth.verify(sign(claims(), rsa_key, "RS256", kid="k2"))  # refetch, which fails
    assert jwks_server.requests == 2
    assert (await auth.verify(token)).sub == "user-1"


async def test_jwks_unreachable_from_the_start(
    clock: Clock,
    rsa_key: rsa.RSAPrivateKey,
    jwks_server: JwksServer,
    jwks_auth: Callable[..., Authenticator],
) -> None:
    jwks_server.publish(jwk(rsa_key, "k1"))
    jwks_server.status = 503
    auth = jwks_auth(jwks_min_refresh_interval_s=10.0)
    token = sign(claims(exp=int(NOW) + 3600), rsa_key, "RS256", kid="k1")
    with pytest.raises(Unauthorized):
        await auth.verify(token)
    with pytest.raises(Unauthorized):
        await auth.verify(sign(claims(), rsa_key, "RS256"))  # no kid: no key at all
    assert jwks_server.requests == 1  # the failed first fetch is rate-limited too
    jwks_server.status = 200
    clock.now += 10
    assert (await auth.verify(token)).sub == "user-1"
    assert jwks_server.requests == 2


async def test_jwks_log_hides_url_credentials(
    clock: Clock,
    jwks_server: JwksServer,
    jwks_auth: Callable[..., Authenticator],
    rsa_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    jwks_server.status = 500
    url = f"http://user:pw-SECRET@127.0.0.1:{jwks_server.port}/jwks?token=q-SECRET"
    auth = jwks_auth(url=url)
    with caplog.at_level(logging.INFO, logger="wsq.auth"), pytest.raises(Unauthorized):
        await auth.verify(sign(claims(), rsa_key, "RS256", kid="k1"))
    assert "fetch failed" in caplog.text
    assert f"127.0.0.1:{jwks_server.port}/jwks" in caplog.text
    assert "SECRET" not in caplog.text


async def test_jwks_and_static_keys_together(
    rsa_key: rsa.RSAPrivateKey,
    rsa_key2: rsa.RSAPrivateKey,
    jwks_server: JwksServer,
    clock: Clock,
) -> None:
    jwks_server.publish(jwk(rsa_key2, "remote"))
    t = tenant(
        KeyConfig(alg="HS256", kid="local", secret=SECRET),
        KeyConfig(alg="RS256", jwks_url=jwks_server.url),
    )
    auth = Authenticator({"acme": t}, clock=clock)
    try:
        assert (await auth.verify(mint_token(t, "a", kid="local", now=NOW))).sub == "a"
        assert jwks_server.requests == 0  # a configured kid needs no JWKS
        assert (await auth.verify(sign(claims(), rsa_key2, "RS256", kid="remote"))).sub == "user-1"
        assert jwks_server.requests == 1
        with pytest.raises(Unauthorized):
            await auth.verify(sign(claims(), rsa_key, "RS256", kid="remote"))
    finally:
        await auth.aclose()


async def test_given_http_client_is_used_and_not_closed(
    rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer, clock: Clock
) -> None:
    jwks_server.publish(jwk(rsa_key, "k1"))
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(str(request.url))

    async with httpx.AsyncClient(event_hooks={"request": [hook]}) as client:
        auth = Authenticator(
            {"acme": tenant(KeyConfig(alg="RS256", jwks_url=jwks_server.url))},
            http=client,
            clock=clock,
        )
        await auth.verify(sign(claims(), rsa_key, "RS256", kid="k1"))
        await auth.aclose()
        assert not client.is_closed
        assert seen == [jwks_server.url]


async def test_aclose_closes_its_own_client(
    rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer, clock: Clock
) -> None:
    jwks_server.publish(jwk(rsa_key, "k1"))
    auth = Authenticator(
        {"acme": tenant(KeyConfig(alg="RS256", jwks_url=jwks_server.url))}, clock=clock
    )
    await auth.verify(sign(claims(), rsa_key, "RS256", kid="k1"))
    client = auth._http
    assert client is not None
    await auth.aclose()
    assert client.is_closed
    # Cached keys keep working after close; nothing is fetched any more.
    assert (await auth.verify(sign(claims(), rsa_key, "RS256", kid="k1"))).sub == "user-1"
