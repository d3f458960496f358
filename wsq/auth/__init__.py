"""Tokens (contract section 7): verification (``Authenticator``), rights (``Rights``,
``Principal``) and minting (``mint_token``).

``authenticator`` verifies a JWT against the keys of the tenant its ``iss`` names; ``keyset``
prepares keys, ``jwks`` fetches and caches a tenant's JWKS; ``rights`` reads the ``wsq`` claim.
Neither the token nor any key material ever appears in an exception message or a log line.
"""

from wsq.auth.authenticator import Authenticator
from wsq.auth.mint import mint_token
from wsq.auth.rights import NO_RIGHTS, Principal, Rights

__all__ = ["NO_RIGHTS", "Authenticator", "Principal", "Rights", "mint_token"]
