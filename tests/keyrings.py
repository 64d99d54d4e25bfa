"""The key-encryption keys of the test suite, shared by unit, integration and e2e tests.

One control database (`kliv`) holds one keyring, and CI reuses the machine's
Postgres between runs: every test uses these keys, and the session starts by
making sure the server's keyring opens with them (see tests/conftest.py).
"""

TEST_KEY = "kliv-test-key-encryption-key-0001"
# The rotation test's second key, accepted everywhere: an interrupted rotation on the shared
# control database never locks the other tests (or the next run) out.
ROTATED_KEY = "kliv-test-key-encryption-key-0002"
