"""Each project's JWT secret and the keys signed with it (DESIGN.md, "Local platform": JWTs).

Called by ``kliv up`` and ``kliv keys`` (which print the anon and service-role keys), by
``kliv serve`` (which verifies callers' tokens and signs the scheduler's) and by tests that
act as a user. The secret is 256 random bits, made at a project's first need and kept,
sealed, in the postgres secret store under a name no ProjectSecret can have; it is never
in a spec, plan, status or log. Tokens are HS256 (PyJWT); the anon and service-role keys
carry no expiry, as Supabase's do.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import jwt
import psycopg

from kliv.stacks.secrets import keys, store
from kliv.stacks.secrets.keys import Keyring

NAME = "kliv.jwt-secret"  # not an env-variable name: no ProjectSecret can claim it
ISSUER = "kliv"
ALGORITHM = "HS256"
ROLES = ("anon", "authenticated", "service_role")


def ensure(control: psycopg.Connection[Any], keyring: Keyring, namespace: str, project: str) -> bytes:
    """The project's secret, made once (a racing process's, if it won)."""
    if store.latest(control, namespace, project, NAME) is None:
        value = secrets.token_urlsafe(32)  # 256 bits
        fingerprint = keys.fingerprint(store.fingerprint_key(control, keyring), f"{namespace}/{project}", value)
        version = store.Version(namespace, project, NAME, 1, "postgres", "generated", fingerprint, None)
        with control.transaction():
            store.add(control, keyring, version, value)
    return store.reveal(control, keyring, namespace, project, NAME).encode()


def reference(namespace: str, project: str) -> str:
    return f"{namespace}/{project}"


def sign(secret: bytes, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def key(secret: bytes, namespace: str, project: str, role: str) -> str:
    """The anon or service-role key: no expiry."""
    return sign(secret, {"role": role, "iss": ISSUER, "ref": reference(namespace, project)})


def user_token(secret: bytes, namespace: str, project: str, user: uuid.UUID | str, hours: float = 1) -> str:
    """A signed-in user's token (``sub``, role ``authenticated``), as an auth server would issue."""
    now = int(time.time())
    claims = {"sub": str(uuid.UUID(str(user))), "role": "authenticated", "iss": ISSUER,
              "ref": reference(namespace, project), "iat": now, "exp": now + int(hours * 3600)}  # fmt: skip
    return sign(secret, claims)


class InvalidTokenError(Exception):
    """Why a token is refused (shown to the caller: never the token or the secret)."""


def verify(secret: bytes, token: str, namespace: str, project: str) -> dict[str, Any]:
    """The claims of a token signed with the project's secret, for this project, with a known role."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["role"]}, leeway=30
        )
    except jwt.ExpiredSignatureError:
        raise InvalidTokenError("the token has expired") from None
    except jwt.InvalidSignatureError:
        try:  # a key of another project is a common mistake: say so (the claims are not secret)
            other = jwt.decode(token, options={"verify_signature": False}).get("ref")
        except jwt.InvalidTokenError:
            other = None
        if isinstance(other, str) and other != reference(namespace, project):
            raise InvalidTokenError(f"this key is for project {other[:100]}, not {reference(namespace, project)} "
                                    f"(`kliv keys --project {reference(namespace, project)}`)") from None  # fmt: skip
        raise InvalidTokenError("the token's signature is not this project's") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidTokenError(f"the token is not valid: {type(exc).__name__}") from None
    if claims.get("ref", reference(namespace, project)) != reference(namespace, project):
        raise InvalidTokenError("the token was issued for another project")
    if claims.get("role") not in ROLES:
        raise InvalidTokenError("the token's role is not anon, authenticated or service_role")
    if claims.get("role") == "authenticated":
        try:
            uuid.UUID(str(claims.get("sub")))
        except ValueError:
            raise InvalidTokenError("an authenticated token needs `sub`, a uuid") from None
    return claims
