"""`kliv up examples/storefront` end to end: buckets, secrets and templates with the tables.

On the test servers with filesystem buckets and with KLIV_S3_ENDPOINT at moto,
and once on nothing but embedded defaults (its own Postgres, key and bucket
folder), as the README promises.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aws_services import client
from postgres_projects import ROOT, ROTATED_KEY, TEST_KEY, Project
from typer.testing import CliRunner

from kliv.cli import app
from kliv.stacks.secrets import store
from kliv.stacks.secrets.keys import Keyring


def _up(env: dict[str, str], folder: Path) -> str:
    result = CliRunner().invoke(app, ["up", str(folder)], env=env)
    assert result.exit_code == 0, result.output
    return result.output


class TestStorefrontUp:
    """The storefront, all of it that has a provider, from one command."""

    @pytest.mark.parametrize("buckets", ["filesystem", "s3"])
    def test_up(
        self, project: Callable[[str | Path], Project], tmp_path: Path, buckets: str, request: pytest.FixtureRequest
    ) -> None:
        """Bucket, both secrets and the template exist; a second `kliv up` changes nothing."""
        created = project(ROOT / "examples" / "storefront")
        env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY,
               "KLIV_SECRET_PREVIOUS_KEYS": ROTATED_KEY,
               "KLIV_BUCKETS_DIR": str(tmp_path / "buckets"), "STRIPE_KEY": "sk_test_storefront"}  # fmt: skip
        if buckets == "s3":
            env["KLIV_S3_ENDPOINT"] = str(request.getfixturevalue("aws_url"))
        output = _up(env, created.folder)
        assert "bucket:       storefront-images" in output
        assert "secret:       STRIPE_KEY v1 (postgres)" in output
        assert "secret:       WEBHOOK_SIGNING_SECRET v1 (postgres)" in output
        assert "template:     order-receipt v1" in output
        if buckets == "s3":
            tags = client(env["KLIV_S3_ENDPOINT"], "s3").get_bucket_tagging(Bucket="storefront-images")["TagSet"]
            assert {"Key": "kliv:namespace", "Value": created.namespace} in tags
        else:
            assert (tmp_path / "buckets" / "storefront-images" / ".kliv-bucket.json").is_file()
        control = created.engine.control_session()
        stored = store.reveal(control, Keyring(TEST_KEY), created.namespace, "storefront", "STRIPE_KEY")
        assert stored == "sk_test_storefront"
        events = _event_types(created)
        assert events.count("dev.kliv.cloud.bucket.created") == 1
        assert events.count("dev.kliv.cloud.projectsecret.created") == 2
        assert events.count("dev.kliv.cloud.emailtemplate.created") == 1
        again = _up(env, created.folder)
        assert "applied: 0 changes" in again
        assert _event_types(created) == events  # nothing changed, nothing audited


def _event_types(created: Project) -> list[str]:
    control = created.engine.control_session()
    rows = control.execute(
        "SELECT body::jsonb ->> 'type' FROM inventory.outbox WHERE namespace = %s ORDER BY position",
        [created.namespace],
    ).fetchall()
    return [row[0] for row in rows]


class TestEmbeddedDefaults:
    """Nothing configured: embedded Postgres, a generated key, filesystem buckets."""

    def test_up_on_embedded_defaults(self, embedded_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """`kliv up` starts its Postgres, keeps a 0600 key beside the data, and `kliv down` stops it."""
        monkeypatch.setenv("STRIPE_KEY", "sk_test_embedded")
        output = _up({}, ROOT / "examples" / "storefront")
        assert "Postgres started" in output
        assert "secret:       STRIPE_KEY v1 (postgres)" in output
        key = embedded_home / "kliv" / "secret.key"
        assert key.stat().st_mode & 0o777 == 0o600
        assert (embedded_home / "kliv" / "buckets" / "storefront-images").is_dir()
        assert "applied: 0 changes" in _up({}, ROOT / "examples" / "storefront")

    def test_up_serves_checkout(self, embedded_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """`kliv up --output json` gives api_url, anon_key and checkout's URL, where `kliv serve` answers
        (checkout wants POST: a GET with the anon key is its own 405); `kliv down` stops both."""
        import json

        import httpx

        monkeypatch.setenv("STRIPE_KEY", "sk_test_embedded")
        result = CliRunner().invoke(app, ["up", str(ROOT / "examples" / "storefront"), "--output", "json"])
        assert result.exit_code == 0, result.output
        [found] = json.loads(result.stdout)["projects"]
        assert found["api_url"].endswith("/p/default/storefront")
        assert found["functions"] == {"checkout": found["api_url"] + "/functions/v1/checkout"}
        url, key = found["functions"]["checkout"], found["anon_key"]
        answer = httpx.get(url, headers={"authorization": f"Bearer {key}"}, timeout=30)
        assert (answer.status_code, answer.json()) == (405, {"error": "use POST"})
        assert httpx.get(url, timeout=30).status_code == 401
        text = CliRunner().invoke(app, ["up", str(ROOT / "examples" / "storefront")])
        assert "kliv serve already running" in text.output
        assert f"function:     {url}  (version 1)" in text.output
        assert f"anon_key:     {key}" in text.output
        down = CliRunner().invoke(app, ["down"])
        assert "stopped kliv serve" in down.output
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=5)
