"""Envelope encryption for the Postgres secret store (pure: no I/O).

Called by :mod:`.store` and ``kliv secrets rotate-key``. Every secret version has
its own random 256-bit data key; the value is sealed with AES-256-GCM under that
key, and the data key is sealed (wrapped) under the key-encryption key from
``KLIV_SECRET_KEY``. A wrapped key carries the id of the key that wrapped it, so
a new ``KLIV_SECRET_KEY`` can be introduced while the old one is still listed in
``KLIV_SECRET_PREVIOUS_KEYS``: reads keep working, and rotating re-wraps the data
keys (the ciphertexts never change) until the old key is no longer needed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os

from kliv.stacks.errors import EngineError

NONCE_BYTES = 12
MIN_PASSPHRASE = 16


class SecretKeyError(EngineError):
    """A key is missing, malformed or does not open what it should."""


@functools.lru_cache(maxsize=16)  # scrypt costs ~70 ms: once per key and process
def _derive(material: str) -> bytes:
    """A 256-bit key from ``KLIV_SECRET_KEY``: 32 random bytes in base64url are used as they
    are; anything else of at least 16 characters is a passphrase, stretched with scrypt
    (the key id is public, so a weak passphrase must be expensive to guess offline)."""
    text = material.strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 32 and len(text) in (43, 44):
        return raw
    if len(text) < MIN_PASSPHRASE:
        raise SecretKeyError(
            f"KLIV_SECRET_KEY is too short ({len(text)} characters; at least {MIN_PASSPHRASE})",
            'generate one with `python -c "import secrets; print(secrets.token_urlsafe(32))"`',
        )
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # on use: most commands never seal

    return Scrypt(salt=b"kliv secret key v1", length=32, n=2**15, r=8, p=1).derive(text.encode())


def key_id(key: bytes) -> str:
    """A public name for a key: it identifies the key without revealing it."""
    return hmac.new(key, b"kliv key id", hashlib.sha256).hexdigest()[:16]


def new_data_key() -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """nonce || AES-256-GCM(plaintext), bound to ``context`` (associated data)."""
    nonce = os.urandom(NONCE_BYTES)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def unseal(key: bytes, sealed: bytes, context: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
    except InvalidTag:
        raise SecretKeyError(
            "a sealed secret does not open: it was tampered with or moved to another secret",
            "restore the control database from a backup",
        ) from None


class Keyring:
    """The current key-encryption key and the previous ones still accepted for reading."""

    def __init__(self, current: str, previous: list[str] | None = None) -> None:
        self.current = _derive(current)
        self.current_id = key_id(self.current)
        self.keys = {self.current_id: self.current}
        for material in previous or []:
            key = _derive(material)
            self.keys.setdefault(key_id(key), key)

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """(key id, wrapped data key) under the current key."""
        return self.current_id, seal(self.current, data_key, context)

    def unwrap(self, wrapping_key_id: str, wrapped: bytes, context: bytes) -> bytes:
        key = self.keys.get(wrapping_key_id)
        if key is None:
            raise SecretKeyError(
                f"a secret is encrypted under key {wrapping_key_id}, which is neither KLIV_SECRET_KEY "
                f"({self.current_id}) nor in KLIV_SECRET_PREVIOUS_KEYS",
                "set the old key in KLIV_SECRET_PREVIOUS_KEYS, then run `kliv secrets rotate-key`",
            )
        return unseal(key, wrapped, context)


def fingerprint(fingerprint_key: bytes, ref: str, value: str) -> str:
    """HMAC-SHA256 of a value under a key kept in the store: comparable, never reversible
    (a plain hash of a short secret could be brute-forced from a status)."""
    digest = hmac.new(fingerprint_key, ref.encode() + b"\0" + value.encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest[:32]}"
