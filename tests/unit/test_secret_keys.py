"""Envelope encryption for the postgres secret store (pure functions, no database)."""

from __future__ import annotations

import base64
import os

import pytest

from kliv.stacks.secrets import keys
from kliv.stacks.secrets.keys import Keyring, SecretKeyError


class TestKeyring:
    """KLIV_SECRET_KEY and KLIV_SECRET_PREVIOUS_KEYS as a keyring."""

    def test_passphrase_and_raw_key(self) -> None:
        """A 32-byte base64url key is used as is; a passphrase is stretched; both wrap and unwrap."""
        raw = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        for material in (raw, "a long enough passphrase"):
            ring = Keyring(material)
            key_id, wrapped = ring.wrap(b"d" * 32, b"ctx")
            assert ring.unwrap(key_id, wrapped, b"ctx") == b"d" * 32

    def test_short_key_refused(self) -> None:
        """A key of under 16 characters is an error with a hint to generate one."""
        with pytest.raises(SecretKeyError) as raised:
            Keyring("hunter2!")
        assert "token_urlsafe" in raised.value.hint
        assert "hunter2" not in raised.value.message

    def test_malformed_key_is_reported_not_raised(self, tmp_path: object) -> None:
        """A bad KLIV_SECRET_KEY reaches the secrets that need it, not every command."""
        from pathlib import Path

        from kliv.stacks.providers import ProviderOptions

        options = ProviderOptions(Path("/nonexistent"), lambda _: None, secret_key="short")
        assert isinstance(options.keyring_or_error(), SecretKeyError)

    def test_previous_keys_read(self) -> None:
        """A data key wrapped under the old key opens while the old key is listed, not after."""
        old, new = "old-key-material-0001", "new-key-material-0002"
        key_id, wrapped = Keyring(old).wrap(b"k" * 32, b"ctx")
        assert Keyring(new, [old]).unwrap(key_id, wrapped, b"ctx") == b"k" * 32
        with pytest.raises(SecretKeyError, match="neither KLIV_SECRET_KEY"):
            Keyring(new).unwrap(key_id, wrapped, b"ctx")

    def test_key_id_does_not_reveal_the_key(self) -> None:
        """The id is stable per key, differs between keys and contains no key material."""
        material = "id-test-key-material-0003"
        ring = Keyring(material)
        assert ring.current_id == Keyring(material).current_id != Keyring(material + "x").current_id
        assert ring.current.hex()[:16] != ring.current_id


class TestSealing:
    """AES-256-GCM with the resource as associated data."""

    def test_tampering_detected(self) -> None:
        """A flipped byte or another context does not open."""
        key = keys.new_data_key()
        sealed = keys.seal(key, b"value", b"ns/p/NAME@1")
        assert keys.unseal(key, sealed, b"ns/p/NAME@1") == b"value"
        with pytest.raises(SecretKeyError, match="does not open"):
            keys.unseal(key, sealed, b"ns/p/OTHER@1")
        broken = sealed[:-1] + bytes([sealed[-1] ^ 1])
        with pytest.raises(SecretKeyError):
            keys.unseal(key, broken, b"ns/p/NAME@1")

    def test_nonce_is_fresh(self) -> None:
        """Sealing the same value twice gives different ciphertexts."""
        key = keys.new_data_key()
        assert keys.seal(key, b"v", b"c") != keys.seal(key, b"v", b"c")


class TestFingerprint:
    """Keyed fingerprints: comparable, not a plain hash."""

    def test_keyed(self) -> None:
        """Same key and value: same print; another key or secret: another print; never the plain SHA-256."""
        import hashlib

        key = b"f" * 32
        first = keys.fingerprint(key, "ns/p/A", "sk_live_123")
        assert first == keys.fingerprint(key, "ns/p/A", "sk_live_123")
        assert first != keys.fingerprint(b"g" * 32, "ns/p/A", "sk_live_123")
        assert first != keys.fingerprint(key, "ns/p/B", "sk_live_123")
        assert hashlib.sha256(b"sk_live_123").hexdigest()[:32] not in first
