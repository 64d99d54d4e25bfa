"""kliv's dynamic providers through Pulumi's own provider server, against the real Postgres.

The server is the SDK's dynamic-provider process (`python -m pulumi.dynamic`, what the
CLI's `pulumi-resource-pulumi-python` runs); the test speaks its gRPC protocol as the
Pulumi engine does: Configure, Check, Diff, Create, Read, Update, Delete, with the
provider pickled into `__provider` by the SDK's own serializer. Between calls the server
is restarted: nothing is kept in the process (stateless), the pickle names a module path.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2
from postgres_projects import ROOT, Project
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from kliv.stacks.pulumi import dynamic


class _Server:
    """One dynamic-provider process and a client of it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "pulumi.dynamic"], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)  # fmt: skip
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = provider_pb2_grpc.ResourceProviderStub(self.channel)
        self.stub.Configure(provider_pb2.ConfigureRequest(args=struct_pb2.Struct()))

    def close(self) -> None:
        self.channel.close()
        self.process.kill()
        self.process.wait()


@pytest.fixture
def server() -> Iterator[Callable[[], _Server]]:
    started: list[_Server] = []

    def start() -> _Server:
        for old in started:
            old.close()
        started.append(_Server())
        return started[-1]

    yield start
    for old in started:
        old.close()


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    return asyncio.run(rpc.serialize_properties(values, {}))


def _dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return rpc.deserialize_properties(struct)  # type: ignore[no-any-return]


def _inputs(created: Project, kind: str, ref: str, documents: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The resource's inputs as the program declares them (``documents``: edited ones instead)."""
    from kliv.specs import load
    from kliv.stacks.hashing import spec_hash
    from kliv.stacks.pulumi.converging import group_of
    from kliv.stacks.pulumi.declaring import declare, logical

    (group,) = load([created.folder]).specs.projects.values()
    name = logical(ref, "bootstrap") if kind == "Project" else logical(ref)
    inputs = dict(declare(group, {}).by_name()[name].inputs)
    if documents is not None:
        resource = next(s.resource for s in group_of(documents) if s.resource.ref == ref)
        inputs.update(documents=documents, specHash=spec_hash(resource))
    connection = json.dumps({"url": created.url, "options": {}})
    return {"__provider": serialize_provider(dynamic.PROVIDERS[kind]), **inputs, "connection": connection}


def _of(created: Project, kind: str, name: str) -> dict[str, Any]:
    return next(d for d in created.documents() if d["kind"] == kind and d["metadata"]["name"] == name)


def _urn(kind: str, name: str) -> str:
    return f"urn:pulumi:test.blog::kliv::pulumi-python:dynamic/kliv:{kind}::{kind}:{name}"


def test_the_blog_through_the_provider_protocol(server: Callable[[], _Server], project: Callable[..., Project]) -> None:
    created = project(ROOT / "examples" / "blog")
    ns = created.namespace
    posts = _of(created, "Table", "posts")
    made = {}
    for kind, name in (("Project", "blog"), ("Table", "profiles"), ("Table", "posts"),
                       ("TablePolicy", "posts-public-read")):  # fmt: skip
        stub = server().stub  # a new process for every resource: nothing carries over
        inputs = _inputs(created, kind, f"{kind}/{ns}/{name}")
        checked = stub.Check(provider_pb2.CheckRequest(urn=_urn(kind, name), olds=_struct({}), news=_struct(inputs)))
        assert list(checked.failures) == []
        reply = stub.Create(provider_pb2.CreateRequest(urn=_urn(kind, name), properties=checked.inputs))
        assert reply.id == f"{kind}/{ns}/{name}"
        made[name] = (inputs, _dict(reply.properties))
    outs = made["posts"][1]
    assert outs["outputs"] == {"database": created.database, "table": "public.posts"}
    assert outs["record"]["physical"] == "posts"
    assert "connection" in outs  # kept for Delete, which is given the outputs only (Pulumi keeps it secret)
    with created.connect() as connection:
        assert connection.execute("SELECT to_regclass('posts') IS NOT NULL, to_regclass('comments')").fetchone() == (
            True, None)  # fmt: skip
        assert connection.execute("SELECT count(*) FROM pg_policies WHERE policyname = 'posts_public_read'"
                                  ).fetchone() == (1,)  # fmt: skip
    # RLS decides for an application's login holding only the anon role.
    with created.login("anon") as login, login.connect() as connection:
        connection.execute(f'SET ROLE "{created.role("anon")}"')
        assert connection.execute("SELECT count(*) FROM posts").fetchone() == (0,)

    # Diff: the same inputs change nothing; another column is an update, in place.
    stub = server().stub
    inputs, outs = made["posts"]
    same = stub.Diff(provider_pb2.DiffRequest(id=outs["ref"], urn=_urn("Table", "posts"), olds=_struct(outs),
                                              news=_struct(inputs)))  # fmt: skip
    assert same.changes == provider_pb2.DiffResponse.DIFF_NONE
    posts["spec"]["columns"].append({"name": "teaser", "type": "text"})
    posts["spec"]["deletionPolicy"] = "Delete"  # so that Delete drops it (Retain forgets)
    project_part = inputs["documents"][0]  # what the program gives a table of its Project
    changed = _inputs(created, "Table", f"Table/{ns}/posts", [project_part, posts])
    diff = stub.Diff(provider_pb2.DiffRequest(id=outs["ref"], urn=_urn("Table", "posts"), olds=_struct(outs),
                                              news=_struct(changed)))  # fmt: skip
    assert diff.changes == provider_pb2.DiffResponse.DIFF_SOME
    assert list(diff.replaces) == []
    updated = server().stub.Update(provider_pb2.UpdateRequest(id=outs["ref"], urn=_urn("Table", "posts"),
                                                              olds=_struct(outs), news=_struct(changed)))  # fmt: skip
    assert _dict(updated.properties)["specHash"] == changed["specHash"]
    with created.connect() as connection:
        found = connection.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'posts' "
                                   "AND column_name = 'teaser'").fetchall()  # fmt: skip
        assert found == [("teaser",)]
        # The table's policies are resources of their own: its update left them alone.
        assert connection.execute("SELECT count(*) FROM pg_policies WHERE policyname = 'posts_public_read'"
                                  ).fetchone() == (1,)  # fmt: skip
    again = server().stub.Update(provider_pb2.UpdateRequest(
        id=outs["ref"], urn=_urn("Table", "posts"), olds=updated.properties, news=_struct(changed)))  # fmt: skip
    assert _dict(again.properties)["action"] == "noop"  # idempotent: it already matches

    # Read gives back what it was given (the state the engine keeps).
    read = server().stub.Read(provider_pb2.ReadRequest(id=outs["ref"], urn=_urn("Table", "posts"),
                                                       properties=updated.properties))  # fmt: skip
    assert read.id == outs["ref"]
    assert _dict(read.properties)["specHash"] == changed["specHash"]
    # A refresh after drift (a column dropped behind kliv's back) marks the inputs: the next diff updates.
    with created.connect() as connection:
        connection.execute("ALTER TABLE posts DROP COLUMN teaser")
    read = server().stub.Read(provider_pb2.ReadRequest(id=outs["ref"], urn=_urn("Table", "posts"),
                                                       properties=updated.properties))  # fmt: skip
    assert _dict(read.inputs)["specHash"].startswith("drifted:")
    diff = server().stub.Diff(provider_pb2.DiffRequest(id=outs["ref"], urn=_urn("Table", "posts"),
                                                       olds=read.properties, news=_struct(changed)))  # fmt: skip
    assert diff.changes == provider_pb2.DiffResponse.DIFF_SOME
    server().stub.Update(provider_pb2.UpdateRequest(id=outs["ref"], urn=_urn("Table", "posts"),
                                                    olds=read.properties, news=_struct(changed)))  # fmt: skip
    with created.connect() as connection:
        assert connection.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'posts' "
                                  "AND column_name = 'teaser'").fetchone() == (1,)  # fmt: skip

    # Delete: the policy (twice: deleting what is gone succeeds), then the tables, then the Project's
    # bootstrap (a no-op: it goes with the database, which pulumi-postgresql deletes or keeps).
    policy_outs = made["posts-public-read"][1]
    stub = server().stub
    for _ in range(2):
        stub.Delete(provider_pb2.DeleteRequest(id=policy_outs["ref"], urn=_urn("TablePolicy", "posts-public-read"),
                                               properties=_struct(policy_outs)))  # fmt: skip
    deleting = _dict(updated.properties)
    stub.Delete(provider_pb2.DeleteRequest(id=outs["ref"], urn=_urn("Table", "posts"), properties=_struct(deleting)))
    retained = made["profiles"][1]  # deletionPolicy Retain (the default): forgotten, never dropped
    stub.Delete(provider_pb2.DeleteRequest(id=retained["ref"], urn=_urn("Table", "profiles"),
                                           properties=_struct(retained)))  # fmt: skip
    with created.connect() as connection:
        assert connection.execute("SELECT to_regclass('posts'), to_regclass('profiles') IS NOT NULL").fetchone() == (
            None, True)  # fmt: skip
        assert connection.execute("SELECT count(*) FROM pg_policies WHERE policyname = 'posts_public_read'"
                                  ).fetchone() == (0,)  # fmt: skip
    stub.Delete(provider_pb2.DeleteRequest(id=outs["ref"], urn=_urn("Table", "posts"), properties=_struct(deleting)))
    bootstrap = made["blog"][1]
    stub.Delete(provider_pb2.DeleteRequest(id=bootstrap["ref"], urn=_urn("Project", "blog"),
                                           properties=_struct(bootstrap)))  # fmt: skip
    with created.connect() as connection:  # the database and its bootstrap stay
        assert connection.execute("SELECT to_regclass('audit.log') IS NOT NULL").fetchone() == (True,)


def test_check_reports_a_bad_spec_on_its_input(server: Callable[[], _Server], project: Callable[..., Project]) -> None:
    created = project(ROOT / "examples" / "blog")
    inputs = _inputs(created, "Table", f"Table/{created.namespace}/posts")
    posts = inputs["documents"][-1]
    posts["spec"]["columns"][0]["type"] = "integr"
    checked = server().stub.Check(provider_pb2.CheckRequest(urn=_urn("Table", "posts"), olds=_struct({}),
                                                            news=_struct(inputs)))  # fmt: skip
    (failure,) = checked.failures
    assert failure.property == "documents"
    assert "/spec/columns/0/type" in failure.reason
    with psycopg.connect(created.url, autocommit=True) as admin:  # nothing was made
        assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [created.database]).fetchone() == (
            0,)  # fmt: skip


def test_the_bootstrap_after_pulumi_postgresql_made_the_database_and_roles(
    server: Callable[[], _Server], project: Callable[..., Project]
) -> None:
    """The roles and the database come first, as the program declares them (made here with the SQL
    pulumi-postgresql runs for those inputs); the bootstrap then closes the database to everyone
    but the project's roles, and the roles are what the native engine makes."""
    from kliv.specs import load
    from kliv.stacks.pulumi.declaring import declare

    created = project(ROOT / "examples" / "blog")
    (group,) = load([created.folder]).specs.projects.values()
    roles = [d.inputs for d in declare(group, {}).resources if d.type == "postgresql:index/role:Role"]
    with psycopg.connect(created.url, autocommit=True) as admin:
        for role in roles:
            flags = ["LOGIN" if role["login"] else "NOLOGIN", "INHERIT" if role["inherit"] else "NOINHERIT",
                     "BYPASSRLS" if role["bypassRowLevelSecurity"] else "NOBYPASSRLS"]  # fmt: skip
            admin.execute(f'CREATE ROLE "{role["name"]}" {" ".join(flags)}')
            for member in role.get("roles", []):
                admin.execute(f'GRANT "{member}" TO "{role["name"]}"')
        admin.execute(f'CREATE DATABASE "{created.database}"')  # PUBLIC may connect, as to any new database
    inputs = _inputs(created, "Project", f"Project/{created.namespace}/blog")
    urn = _urn("Project", "blog")
    stub = server().stub
    checked = stub.Check(provider_pb2.CheckRequest(urn=urn, olds=_struct({}), news=_struct(inputs)))
    stub.Create(provider_pb2.CreateRequest(urn=urn, properties=checked.inputs))
    with psycopg.connect(created.url, autocommit=True) as admin:
        acl = admin.execute("SELECT datacl::text FROM pg_database WHERE datname = %s", [created.database]).fetchone()
        assert acl is not None
        items = acl[0].strip("{}").split(",")
        assert [i for i in items if i.startswith("=")] == []  # no `=Tc/...` entry: PUBLIC may not connect
        assert f"{created.role('anon')}=c/postgres" in items
        rows = admin.execute("SELECT rolname, rolinherit, rolbypassrls, rolcanlogin FROM pg_roles "
                             "WHERE rolname LIKE %s", [f"{created.database}\\_%"]).fetchall()  # fmt: skip
        found = {row[0]: tuple(row[1:]) for row in rows}
    assert found[created.role("service_role")] == (False, True, False)
    assert found[created.role("anon")] == (False, False, False)
    # A login that holds none of the project's roles cannot connect.
    stranger = f"stranger_{created.database}"
    with psycopg.connect(created.url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{stranger}" LOGIN')
    try:
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(psycopg.conninfo.make_conninfo(created.url, dbname=created.database, user=stranger))
    finally:
        with psycopg.connect(created.url, autocommit=True) as admin:
            admin.execute(f'DROP ROLE "{stranger}"')


def test_the_sign_up_hook_through_the_provider_protocol(
    server: Callable[[], _Server], project: Callable[..., Project]
) -> None:
    """DatabaseFunction and Trigger are dynamic resources too: created, then deleted, over gRPC."""
    created = project(ROOT / "examples" / "blog")
    ns = created.namespace
    made = {}
    for kind, name in (("Project", "blog"), ("Table", "profiles"), ("DatabaseFunction", "handle-new-user"),
                       ("Trigger", "on-auth-user-created")):  # fmt: skip
        stub = server().stub
        inputs = _inputs(created, kind, f"{kind}/{ns}/{name}")
        checked = stub.Check(provider_pb2.CheckRequest(urn=_urn(kind, name), olds=_struct({}), news=_struct(inputs)))
        assert list(checked.failures) == []
        reply = stub.Create(provider_pb2.CreateRequest(urn=_urn(kind, name), properties=checked.inputs))
        made[name] = _dict(reply.properties)
    assert made["handle-new-user"]["outputs"] == {"function": "public.handle_new_user()"}
    assert made["on-auth-user-created"]["record"]["physical"] == "auth.users.on_auth_user_created"
    user = "00000000-0000-4000-8000-00000000ca01"
    created.sign_up(user, "carol@example.com", {"username": "carol"})
    with created.connect() as connection:  # the profile's policies are not made here: read as the admin
        assert connection.execute("SELECT id::text, username FROM profiles").fetchall() == [(user, "carol")]
        owner = connection.execute("SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'handle_new_user'")
        assert owner.fetchone() == (created.role("owner"),)
    stub = server().stub
    for kind, name in (("Trigger", "on-auth-user-created"), ("DatabaseFunction", "handle-new-user")):
        outs = made[name]
        stub.Delete(provider_pb2.DeleteRequest(id=outs["ref"], urn=_urn(kind, name), properties=_struct(outs)))
    with created.connect() as connection:
        assert connection.execute("SELECT count(*) FROM pg_proc WHERE proname = 'handle_new_user'").fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'on_auth_user_created'"
                                  ).fetchone() == (0,)  # fmt: skip
