"""`kliv up` prints a database_url an application can use: a real client nobody here wrote
(node-postgres) and psycopg connect with it, SET ROLE with JWT claims, and RLS decides.

On embedded defaults (TCP on 127.0.0.1, the password checked with SCRAM) and on the test servers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres_projects import ROOT, TEST_KEY, Project
from typer.testing import CliRunner

from kliv.cli import app

NODE = ROOT / "tests" / "node"
ALICE = "00000000-0000-4000-8000-00000000a11c"


def _up(folder: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["up", str(folder), "--output", "json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _node(url: str, prefix: str) -> dict[str, Any]:
    if shutil.which("node") is None or not (NODE / "node_modules" / "pg").is_dir():
        pytest.fail("node and tests/node/node_modules are needed: run `make install` (it runs npm ci there)")
    done = subprocess.run(["node", "rls_as_an_app.mjs", url, prefix], cwd=NODE, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _rls_as_an_app(outcome: dict[str, Any], prefix: str) -> None:
    assert outcome["login"] == {"u": f"{prefix}_authenticator", "s": f"{prefix}_authenticator"}
    assert outcome["withoutRole"] == "42501"  # NOINHERIT: the login alone reads nothing
    assert outcome["forged"]["error"] == "42501"  # bob cannot post as alice
    assert outcome["anonSees"] == ["hello"]
    assert outcome["bobSees"] == ["hello"]
    assert outcome["aliceSees"] == ["draft of alice", "hello"]
    assert outcome["bobDeletes"] == 0
    assert outcome["statementTimeout"] == "30s"  # the authenticator login's own setting


def _psycopg_as_alice(url: str, prefix: str) -> list[str]:
    with psycopg.connect(url) as connection, connection.transaction():
        connection.execute(f"SET LOCAL ROLE {prefix}_authenticated")
        claims = json.dumps({"sub": ALICE, "role": "authenticated"})
        connection.execute("SELECT set_config('request.jwt.claims', %s, true)", [claims])
        return [row[0] for row in connection.execute("SELECT title FROM posts ORDER BY title")]


class TestDatabaseUrl:
    def test_on_embedded_defaults(self, embedded_home: Path) -> None:
        """TCP on 127.0.0.1, a SCRAM-checked password kept across runs, the port kept across restarts."""
        first = _up(ROOT / "examples" / "blog")
        [blog] = first["projects"]
        assert blog["login_password_set"] is True  # a new login
        url = blog["database_url"]
        assert url.startswith("postgresql://blog_authenticator:")
        assert "@127.0.0.1:" in url
        port = url.split("@127.0.0.1:")[1].split("/")[0]
        # The superuser: only through the data folder's socket (admin_url), never over TCP.
        assert blog["admin_url"].startswith("postgresql://postgres@/blog?host=")
        with psycopg.connect(blog["admin_url"]) as admin:
            assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError, match="rejects connection"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        _rls_as_an_app(_node(url, "blog"), "blog")
        assert _psycopg_as_alice(url, "blog") == ["draft of alice", "hello"]
        password = url.split(":")[2].split("@")[0]
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(url.replace(password, "not-the-password"))
        # The password is in the secret store, never in a plan or an event.
        with psycopg.connect(blog["admin_url"].replace("/blog?", "/kliv?")) as control:
            stored = control.execute(
                "SELECT count(*) FROM secrets.versions WHERE name = 'kliv.authenticator.blog_authenticator'"
            )
            assert stored.fetchone() == (1,)
            bodies = control.execute("SELECT string_agg(body, '') FROM inventory.outbox").fetchone()
            assert password not in (bodies[0] if bodies else "")
        assert password not in json.dumps(first["plans"])
        CliRunner().invoke(app, ["down"])
        again = _up(ROOT / "examples" / "blog")
        assert again["projects"][0]["database_url"] == url  # same port, same password
        assert again["projects"][0]["login_password_set"] is False
        # Changed outside kliv: the next `kliv up` sets the stored password again, and says so.
        with psycopg.connect(blog["admin_url"]) as admin:
            admin.execute("ALTER ROLE blog_authenticator PASSWORD 'changed-by-hand'")
        repaired = _up(ROOT / "examples" / "blog")["projects"][0]
        assert repaired["login_password_set"] is True
        assert repaired["database_url"] == url
        with psycopg.connect(url) as app_login:
            assert app_login.execute("SELECT current_user").fetchone() == ("blog_authenticator",)
        # Listed by `kliv secrets list` like any secret: name and fingerprint, never the value.
        listing = CliRunner().invoke(app, ["secrets", "list"])
        assert listing.exit_code == 0, listing.output
        assert "kliv.authenticator.blog_authenticator" in listing.output
        assert password not in listing.output

    def test_on_the_test_servers(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "blog")
        env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY}
        [info] = _up(created.folder, env)["projects"]
        assert info["name"] == "blog"
        assert info["namespace"] == created.namespace
        prefix = created.database
        _rls_as_an_app(_node(info["database_url"], prefix), prefix)
        assert _psycopg_as_alice(info["database_url"], prefix) == ["draft of alice", "hello"]

    def test_a_role_kliv_did_not_make_is_never_handed_out(self, project: Callable[[str | Path], Project]) -> None:
        """A SUPERUSER (or otherwise foreign) role under the authenticator's name: refused, no password printed."""
        created = project(ROOT / "examples" / "blog")
        created.apply()
        role = f"{created.database}_authenticator"
        verifier_sql = "SELECT rolpassword FROM pg_authid WHERE rolname = %s"
        with created.connect() as admin:
            admin.execute(f'REVOKE ALL ON DATABASE "{created.database}" FROM "{role}"')
            admin.execute(f'DROP ROLE "{role}"')
            admin.execute(f"CREATE ROLE \"{role}\" LOGIN SUPERUSER PASSWORD 'dba-secret'")
            [before] = admin.execute(verifier_sql, [role]).fetchone()  # type: ignore[misc]
        try:
            env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY}
            result = CliRunner().invoke(app, ["up", str(created.folder), "--output", "json"], env=env)
            assert result.exit_code == 2, result.output
            error = json.loads(result.stdout)
            assert "is not the application login kliv makes (SUPER" in error["message"]
            assert "database_url" not in result.stdout
            with created.connect() as admin:
                assert admin.execute(verifier_sql, [role]).fetchone() == (before,)  # untouched: still the DBA's
        finally:
            with created.connect() as admin:
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')

    def test_a_project_on_another_database_gets_its_own_password(
        self, project: Callable[[str | Path], Project]
    ) -> None:
        """Forgotten (Retain) and created again on another database: never the retained login's password."""
        created = project(ROOT / "examples" / "blog")
        env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY}
        first = _up(created.folder, env)["projects"][0]["database_url"]
        deletion = created.engine.plan_deletion(created.namespace, "blog", created.database, drop=False)
        created.engine.apply_deletion(deletion, allow_data_loss=False, actor="test")
        retained = created.database
        created.database = f"{retained}_again"
        created.write(created.documents())
        try:
            second = _up(created.folder, env)["projects"][0]["database_url"]
            assert second.split(":")[2].split("@")[0] != first.split(":")[2].split("@")[0]
        finally:
            created.engine.drop_project(retained)

    def test_no_path_applies_the_current_folder(
        self, project: Callable[[str | Path], Project], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`kliv up` with no PATH: the current folder, its hidden folders and other APIs' manifests skipped."""
        created = project(ROOT / "examples" / "blog")
        (created.folder / ".cache").mkdir()
        (created.folder / ".cache" / "junk.yaml").write_text("kind: Table\n")
        (created.folder / "rbac.yaml").write_text(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\n"
        )
        monkeypatch.chdir(created.folder)
        env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY}
        result = CliRunner().invoke(app, ["up", "--output", "json"], env=env)
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert [p["name"] for p in document["projects"]] == ["blog"]
        assert any("rbac.authorization.k8s.io/v1" in w["message"] for w in document["warnings"])
