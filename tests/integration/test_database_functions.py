"""DatabaseFunctions and Triggers in Supabase's own forms, applied and acted on as users.

One scenario: the new-user hook of Supabase's user-management quickstart (a definer trigger
function on ``auth.users`` that creates the profile row) and the Slack clone's ``authorize()``
(a definer helper used in a policy, so that its lookup tables stay unreadable). It validates,
applies, re-plans empty and behaves like the originals, acting through ``request.jwt.claims`` and
the project roles from a login that is not a superuser; then the functions evolve.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg.errors
import pytest
from postgres_projects import Project, as_user

from kliv.stacks.errors import EngineError

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: chat}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: profiles}
spec:
  projectRef: {name: chat}
  columns:
    - {name: id, type: uuid, primaryKey: true, references: {table: auth.users, onDelete: cascade}}
    - {name: full_name, type: text}
    - {name: avatar_url, type: text}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: profiles-read}
spec: {projectRef: {name: chat}, table: profiles, command: select, roles: [authenticated], using: "true"}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: DatabaseFunction
metadata: {name: handle-new-user}
spec:
  projectRef: {name: chat}
  language: plpgsql
  returns: trigger
  security: definer
  body: |
    begin
      insert into public.profiles (id, full_name, avatar_url)
      values (new.id, new.raw_user_meta_data->>'full_name', new.raw_user_meta_data->>'avatar_url');
      return new;
    end;
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Trigger
metadata: {name: on-auth-user-created}
spec:
  projectRef: {name: chat}
  table: auth.users
  timing: after
  events: [insert]
  function: handle_new_user
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: role-permissions}
spec:
  projectRef: {name: chat}
  columns:
    - {name: role, type: text, primaryKey: true}
    - {name: permission, type: text, primaryKey: true}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: user-roles}
spec:
  projectRef: {name: chat}
  columns:
    - {name: user_id, type: uuid, primaryKey: true, references: {table: auth.users, onDelete: cascade}}
    - {name: role, type: text, nullable: false}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: channels}
spec:
  projectRef: {name: chat}
  columns:
    - {name: id, type: bigint, primaryKey: true, identity: always}
    - {name: slug, type: text, nullable: false}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: DatabaseFunction
metadata: {name: authorize}
spec:
  projectRef: {name: chat}
  language: plpgsql
  returns: boolean
  volatility: stable
  security: definer
  expose: [authenticated]
  arguments:
    - {name: requested_permission, type: text}
    - {name: user_id, type: uuid}
  body: |
    declare
      bind_permissions int;
    begin
      select count(*)
      from public.role_permissions
      inner join public.user_roles on role_permissions.role = user_roles.role
      where role_permissions.permission = authorize.requested_permission
        and user_roles.user_id = authorize.user_id
      into bind_permissions;
      return bind_permissions > 0;
    end;
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: DatabaseFunction
metadata: {name: whoami}
spec:
  projectRef: {name: chat}
  language: sql
  returns: text
  security: definer
  expose: [authenticated]
  body: select current_user::text
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: channels-read}
spec: {projectRef: {name: chat}, table: channels, command: select, roles: [authenticated], using: "true"}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: channels-delete}
spec:
  projectRef: {name: chat}
  table: channels
  command: delete
  roles: [authenticated]
  using: "authorize('channels.delete', (select auth.uid()))"
"""

ALICE = str(uuid.UUID(int=0xA11CE))
MOD = str(uuid.UUID(int=0x30D))


@pytest.fixture
def chat(project: Callable[[str], Project]) -> Project:
    created = project(SPECS)
    created.apply()
    return created


@pytest.fixture
def app(chat: Project) -> Iterator[psycopg.Connection[Any]]:
    with chat.application() as connection:
        yield connection


def _sign_up(chat: Project, user_id: str, full_name: str) -> None:
    chat.sign_up(user_id, f"{full_name.lower()}@example.com", {"full_name": full_name})


def _seed(chat: Project) -> None:
    _sign_up(chat, ALICE, "Alice")
    _sign_up(chat, MOD, "Mod")
    with chat.connect() as admin:
        admin.execute("INSERT INTO role_permissions VALUES ('moderator', 'channels.delete')")
        admin.execute("INSERT INTO user_roles VALUES (%s, 'moderator')", [MOD])
        admin.execute("INSERT INTO channels (slug) VALUES ('general'), ('random')")


def _summaries(chat: Project) -> list[str]:
    return [s for c in chat.plan().changes for s in c.summary]


class TestApplied:
    def test_replans_empty(self, chat: Project) -> None:
        plan = chat.plan()
        assert plan.empty, [c.summary for c in plan.changes if c.summary]

    def test_sign_up_creates_the_profile(self, chat: Project, app: psycopg.Connection[Any]) -> None:
        _sign_up(chat, ALICE, "Alice")
        as_user(app, chat.role("authenticated"), ALICE, {"role": "authenticated"})
        assert app.execute("SELECT id::text, full_name FROM profiles").fetchall() == [(ALICE, "Alice")]

    def test_authorize_gates_deletes_by_role(self, chat: Project, app: psycopg.Connection[Any]) -> None:
        _seed(chat)
        as_user(app, chat.role("authenticated"), ALICE, {"role": "authenticated"})
        assert app.execute("DELETE FROM channels WHERE slug = 'general' RETURNING id").fetchall() == []
        as_user(app, chat.role("authenticated"), MOD, {"role": "authenticated"})
        assert len(app.execute("DELETE FROM channels WHERE slug = 'general' RETURNING id").fetchall()) == 1

    def test_lookup_tables_stay_unreadable(self, chat: Project, app: psycopg.Connection[Any]) -> None:
        _seed(chat)
        as_user(app, chat.role("authenticated"), MOD, {"role": "authenticated"})
        assert app.execute("SELECT count(*) FROM role_permissions").fetchone() == (0,)
        assert app.execute("SELECT count(*) FROM user_roles").fetchone() == (0,)
        assert app.execute("SELECT authorize('channels.delete', %s)", [MOD]).fetchone() == (True,)

    def test_an_unexposed_function_is_denied(self, chat: Project, app: psycopg.Connection[Any]) -> None:
        as_user(app, chat.role("anon"), None)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT authorize('channels.delete', %s)", [MOD])

    def test_a_definer_runs_as_the_owner_not_a_superuser(self, chat: Project, app: psycopg.Connection[Any]) -> None:
        as_user(app, chat.role("authenticated"), ALICE, {"role": "authenticated"})
        assert app.execute("SELECT whoami()").fetchone() == (chat.role("owner"),)
        with chat.connect() as admin:
            row = admin.execute(
                "SELECT rolsuper, rolcanlogin, rolbypassrls FROM pg_roles WHERE rolname = %s", [chat.role("owner")]
            ).fetchone()
            config = admin.execute("SELECT proconfig FROM pg_proc WHERE proname = 'authorize'").fetchone()
        assert row == (False, False, True)
        assert config == (["search_path=pg_catalog, public, pg_temp"],)

    def test_the_path_cannot_be_shadowed_from_pg_temp(self, chat: Project, app: psycopg.Connection[Any]) -> None:
        """Project roles may not create temporary tables, so `pg_temp` (last in the path) is empty."""
        as_user(app, chat.role("authenticated"), ALICE, {"role": "authenticated"})
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("CREATE TEMP TABLE role_permissions (role text, permission text)")


class TestEvolution:
    def test_a_changed_body_is_create_or_replace(self, chat: Project) -> None:
        def change(document: dict[str, Any]) -> None:
            document["spec"]["body"] = document["spec"]["body"].replace("> 0", ">= 1")

        chat.edit("DatabaseFunction", "authorize", change)
        plan = chat.plan()
        [function] = [c for c in plan.changes if c.resource.startswith("DatabaseFunction/") and c.steps]
        assert (function.action, function.risk) == ("update", "safe")
        assert function.summary == ["replace function authorize (same signature: CREATE OR REPLACE)"]
        assert [c.resource for c in plan.changes if c.steps] == [function.resource]
        chat.apply()
        assert chat.plan().empty

    def test_a_changed_signature_rebuilds_what_uses_it(self, chat: Project, app: psycopg.Connection[Any]) -> None:
        def change(document: dict[str, Any]) -> None:
            document["spec"]["arguments"][1]["name"] = "member"
            document["spec"]["body"] = document["spec"]["body"].replace("authorize.user_id", "authorize.member")

        chat.edit("DatabaseFunction", "authorize", change)
        summaries = _summaries(chat)
        assert any(s.startswith("drop function authorize(requested_permission text, user_id uuid)") for s in summaries)
        assert "replace policy channels_delete on channels" in summaries
        chat.apply()
        assert chat.plan().empty
        _seed(chat)
        as_user(app, chat.role("authenticated"), MOD, {"role": "authenticated"})
        assert len(app.execute("DELETE FROM channels RETURNING id").fetchall()) == 2

    def test_a_changed_trigger_is_replaced(self, chat: Project) -> None:
        chat.edit("Trigger", "on-auth-user-created", lambda d: d["spec"].update(events=["insert", "update"]))
        assert "replace trigger on_auth_user_created on auth.users" in _summaries(chat)
        chat.apply()
        assert chat.plan().empty
        with chat.connect() as admin:
            row = admin.execute("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'on_auth_user_created'")
            assert "AFTER INSERT OR UPDATE ON auth.users" in row.fetchone()[0]  # type: ignore[index]

    def test_removed_specs_are_dropped(self, chat: Project) -> None:
        documents = [d for d in chat.documents() if d["metadata"]["name"] not in ("whoami", "on-auth-user-created")]
        chat.write(documents)
        plan = chat.plan()
        deleted = {c.resource.split("/")[0]: c.summary for c in plan.changes if c.action == "delete"}
        assert deleted == {
            "DatabaseFunction": ["drop function whoami()"],
            "Trigger": ["drop trigger on_auth_user_created on auth.users"],
        }
        chat.apply()
        assert chat.plan().empty
        with chat.connect() as admin:
            assert admin.execute("SELECT count(*) FROM pg_proc WHERE proname = 'whoami'").fetchone() == (0,)
        _sign_up(chat, ALICE, "Alice")  # no trigger: no profile
        with chat.connect() as admin:
            assert admin.execute("SELECT count(*) FROM profiles").fetchone() == (0,)


class TestLifecycle:
    def test_a_renamed_function_leaves_no_old_one(self, chat: Project, app: psycopg.Connection[Any]) -> None:
        chat.edit("DatabaseFunction", "whoami", lambda d: d["spec"].update(name="who_is_it", expose=[]))
        summaries = _summaries(chat)
        assert "drop function whoami()" in summaries
        chat.apply()
        assert chat.plan().empty
        as_user(app, chat.role("authenticated"), ALICE, {"role": "authenticated"})
        with pytest.raises(psycopg.errors.UndefinedFunction):
            app.execute("SELECT whoami()")

    def test_sql_functions_are_made_callees_first(self, chat: Project, app: psycopg.Connection[Any]) -> None:
        """Postgres checks a sql body's calls when it creates it: the callee is made first."""
        documents = chat.documents()
        for name, body in (("a-outer", "select a_inner() + 1"), ("a-inner", "select 41")):
            documents.append({"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "DatabaseFunction",
                              "metadata": {"name": name},
                              "spec": {"projectRef": {"name": "chat"}, "language": "sql", "returns": "integer",
                                       "body": body, "expose": ["authenticated"]}})  # fmt: skip
        chat.write(documents)
        chat.apply()
        as_user(app, chat.role("authenticated"), ALICE, {"role": "authenticated"})
        assert app.execute("SELECT a_outer()").fetchone() == (42,)
        with chat.connect() as admin:  # an invoker keeps its caller's path: no SET clause, still inlinable
            assert admin.execute("SELECT proconfig FROM pg_proc WHERE proname = 'a_outer'").fetchone() == (None,)

    def test_a_function_changed_by_hand_is_put_back(self, chat: Project, app: psycopg.Connection[Any]) -> None:
        with chat.connect() as admin:
            admin.execute("GRANT EXECUTE ON FUNCTION public.whoami() TO PUBLIC")
        assert "replace function whoami (same signature: CREATE OR REPLACE)" in _summaries(chat)
        chat.apply()
        as_user(app, chat.role("anon"), None)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT whoami()")

    def test_functions_that_are_not_klivs_are_left_alone(self, chat: Project) -> None:
        with chat.connect() as admin:
            admin.execute("CREATE FUNCTION public.by_hand() RETURNS int LANGUAGE sql AS 'select 1'")
        assert chat.plan().empty

    def test_a_builtin_name_is_refused_at_plan(self, chat: Project) -> None:
        """Names no spec may take are refused at validate; any other built-in of the server at plan."""
        chat.edit("DatabaseFunction", "whoami", lambda d: d["spec"].update(name="repeat"))
        with pytest.raises(EngineError) as caught:
            chat.plan()
        assert "function name `repeat` is a built-in function's on this server" in caught.value.message

    def test_an_upgraded_database_grants_the_owner_its_tables(
        self, chat: Project, app: psycopg.Connection[Any]
    ) -> None:
        """A database bootstrapped before the owner role existed: the bootstrap runs again and grants it the
        tables made earlier (those made later come from the admin's default privileges)."""
        with chat.connect() as admin:
            admin.execute(f'REVOKE ALL ON role_permissions, user_roles FROM "{chat.role("owner")}"')
            admin.execute("COMMENT ON SCHEMA audit IS 'kliv bootstrap v4'")
        assert "bootstrap schemas auth, audit and email" in _summaries(chat)
        chat.apply()
        _seed(chat)
        as_user(app, chat.role("authenticated"), MOD, {"role": "authenticated"})
        assert app.execute("SELECT authorize('channels.delete', %s)", [MOD]).fetchone() == (True,)
