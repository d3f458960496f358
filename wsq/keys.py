"""Key policy: which algorithms a tenant's key may name, and what makes a key fit for one.

One module that the configuration (which refuses a bad key with a message naming where it is)
and token verification (which prepares the keys it checks signatures with) both use, so that
they can never disagree on what a key is good for.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

#: Signature algorithms a key may name (contract section 7), in the order messages list them.
ALGORITHMS: Final[tuple[str, ...]] = (
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "EdDSA",
)
SUPPORTED_ALGORITHMS: Final = frozenset(ALGORITHMS)
HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS: Final = SUPPORTED_ALGORITHMS - HMAC_ALGORITHMS

#: RFC 7518 section 3.2: an HMAC key should be at least as long as the hash output.
HMAC_MIN_BYTES: Final[Mapping[str, int]] = MappingProxyType({"HS256": 32, "HS384": 48, "HS512": 64})
#: RFC 7518 section 3.3: RSA keys of 2048 bits or more.
RSA_MIN_BITS: Final = 2048
#: The curve an EC algorithm needs (RFC 7518 section 3.4): its JWK ``crv`` name.
EC_JWK_CURVES: Final[Mapping[str, str]] = MappingProxyType({"ES256": "P-256", "ES384": "P-384"})
#: The same curves as ``cryptography`` names them.
EC_CURVES: Final[Mapping[str, str]] = MappingProxyType({"ES256": "secp256r1", "ES384": "secp384r1"})


def public_key_problem(alg: str, pem: str) -> str | None:
    """Why ``pem`` is not a public key usable with ``alg``, or None when it is one.

    A PEM that holds a private key is refused: the gateway only verifies, and a private key in
    its configuration is one more place for it to leak from.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if "PRIVATE KEY-----" in pem:
        return (
            "holds a PRIVATE key; give only its public half "
            "(openssl pkey -in key.pem -pubout), the gateway never needs the private key"
        )
    if "BEGIN CERTIFICATE" in pem:
        return "holds a certificate; give its public key (openssl x509 -in cert.pem -pubkey -noout)"
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return "is not a PEM public key (-----BEGIN PUBLIC KEY----- ...)"
    if alg.startswith("RS"):
        if not isinstance(key, rsa.RSAPublicKey):
            return f"{alg} needs an RSA public key, this is {_key_kind(key)}"
        if key.key_size < RSA_MIN_BITS:
            return f"the RSA key has {key.key_size} bits; {alg} needs at least {RSA_MIN_BITS}"
        return None
    if alg in EC_CURVES:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return f"{alg} needs an EC public key, this is {_key_kind(key)}"
        if key.curve.name != EC_CURVES[alg]:
            return f"{alg} needs a key on curve {EC_CURVES[alg]}, this one is on {key.curve.name}"
        return None
    if alg == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            return f"EdDSA needs an Ed25519 or Ed448 public key, this is {_key_kind(key)}"
        return None
    return f"{alg} does not verify with a public key"


def _key_kind(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    kinds: tuple[tuple[type, str], ...] = (
        (rsa.RSAPublicKey, "an RSA key"),
        (ec.EllipticCurvePublicKey, "an EC key"),
        (ed25519.Ed25519PublicKey, "an Ed25519 key"),
        (ed448.Ed448PublicKey, "an Ed448 key"),
    )
    for cls, kind in kinds:
        if isinstance(key, cls):
            return kind
    return f"a {type(key).__name__.lstrip('_')}"
