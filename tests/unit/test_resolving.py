"""Project-level validation: references resolve, names are claimed once, loops are caught."""

from __future__ import annotations

from spec_validation import Validate

from kliv.specs import Validation


def _errors(validation: Validation) -> list[tuple[str, str, str]]:
    return [(p.name, p.path, p.message) for p in validation.errors]


def _table(name: str, columns: str, extra: str = "") -> str:
    return (
        f"apiVersion: cloud.kliv.dev/v1alpha1\nkind: Table\nmetadata: {{name: {name}}}\n"
        f"spec:\n  projectRef: {{name: demo}}\n  columns:\n{columns}{extra}---\n"
    )


def _policy(name: str, table: str, body: str) -> str:
    return (
        f"apiVersion: cloud.kliv.dev/v1alpha1\nkind: TablePolicy\nmetadata: {{name: {name}}}\n"
        f"spec: {{projectRef: {{name: demo}}, table: {table}, {body}}}\n---\n"
    )


ORGS = _table("orgs", "    - {name: id, type: uuid, primaryKey: true}\n    - {name: name, type: text}\n")
MEMBERS = _table(
    "members",
    "    - {name: id, type: bigint, primaryKey: true, identity: always}\n"
    "    - {name: org_id, type: uuid, nullable: false, references: {table: orgs}}\n"
    "    - {name: user_id, type: uuid, nullable: false}\n",
    "  indexes: [{columns: [org_id]}]\n",
)


class TestProjectRefs:
    """Every resource belongs to a declared Project."""

    def test_dangling_project(self, validate: Validate) -> None:
        """A projectRef to a missing Project names the field and suggests the near miss."""
        validation = validate(ORGS.replace("name: demo", "name: dmeo"))
        [problem] = validation.errors
        assert (problem.path, problem.hint) == ("/spec/projectRef/name", "did you mean `demo`?")
        assert problem.message == "Project `dmeo` does not exist in namespace `default`"

    def test_namespaces_isolate(self, validate: Validate) -> None:
        """A Project in another namespace does not satisfy the reference."""
        validation = validate(ORGS.replace("metadata: {name: orgs}", "metadata: {name: orgs, namespace: other}"))
        assert [p.path for p in validation.errors] == ["/spec/projectRef/name"]

    def test_broken_project_is_not_reported_twice(self, validate: Validate) -> None:
        """When the Project itself is invalid, its resources do not add dangling-reference errors."""
        broken = "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: demo}\nspec: {bogus: 1}\n---\n"
        validation = validate(broken + ORGS, project=False)
        assert [p.path for p in validation.errors] == ["/spec/bogus"]


class TestColumns:
    """Column references in checks, index predicates and policies exist."""

    def test_index_column_suggestion(self, validate: Validate) -> None:
        """An index on a misspelt column suggests the right one."""
        validation = validate(
            ORGS.replace(
                "    - {name: name, type: text}\n", "    - {name: name, type: text}\n  indexes: [{columns: [nmae]}]\n"
            )
        )
        [problem] = validation.errors
        assert (problem.path, problem.hint) == ("/spec/indexes/0/columns/0", "did you mean `name`?")

    def test_check_column(self, validate: Validate) -> None:
        """A check over an unknown column is refused."""
        validation = validate(_table("t", "    - {name: id, type: uuid, primaryKey: true, check: 'idd is not null'}\n"))
        assert _errors(validation) == [("t", "/spec/columns/0/check", "column `idd` does not exist on table `t`")]

    def test_policy_column(self, validate: Validate) -> None:
        """A policy over an unknown column suggests the near miss."""
        validation = validate(ORGS + _policy("p", "orgs", "command: select, using: 'nam = auth.uid()::text'"))
        [problem] = validation.errors
        assert (problem.path, problem.hint) == ("/spec/using", "did you mean `name`?")

    def test_exists_subquery_columns(self, validate: Validate) -> None:
        """Sub-query columns resolve against the sub-query's table, outer references against the policy's."""
        good = "exists (select 1 from members m where m.org_id = orgs.id and m.user_id = auth.uid())"
        assert validate(ORGS + MEMBERS + _policy("p", "orgs", f"command: select, using: '{good}'")).valid
        bad = "exists (select 1 from members m where m.org = orgs.id)"
        validation = validate(ORGS + MEMBERS + _policy("p", "orgs", f"command: select, using: '{bad}'"))
        assert [(p.path, p.message) for p in validation.errors] == [
            ("/spec/using", "column `m.org` does not exist on table `members`")
        ]

    def test_subquery_table_must_exist(self, validate: Validate) -> None:
        """A sub-query over a table the project does not declare is refused."""
        validation = validate(ORGS + _policy("p", "orgs", "command: select, using: 'exists (select 1 from memberz)'"))
        assert [p.message for p in validation.errors] == ["table `memberz` does not exist in the project"]

    def test_enum_types(self, validate: Validate) -> None:
        """Column types that are not built in must be project enums."""
        validation = validate(_table("t", "    - {name: s, type: post_statu, primaryKey: true}\n"))
        [problem] = validation.errors
        assert (problem.path, problem.hint) == ("/spec/columns/0/type", "did you mean `post_status`?")


class TestForeignKeys:
    """Foreign keys point at existing, unique, type-compatible columns."""

    def test_valid(self, validate: Validate) -> None:
        """The default target is the referenced table's primary key."""
        assert validate(ORGS + MEMBERS).valid

    def test_type_mismatch(self, validate: Validate) -> None:
        """A bigint column cannot reference a uuid key; the hint names the right type."""
        validation = validate(ORGS + MEMBERS.replace("name: org_id, type: uuid", "name: org_id, type: bigint"))
        [problem] = validation.errors
        assert (problem.path, problem.hint) == ("/spec/columns/1/type", "use `type: uuid`")

    def test_missing_table(self, validate: Validate) -> None:
        """An unknown target table is refused with a suggestion."""
        validation = validate(MEMBERS + ORGS.replace("name: orgs}", "name: organisations}"))
        assert [(p.path, p.hint) for p in validation.errors] == [
            ("/spec/columns/1/references/table", "known tables: `members`, `organisations`")
        ]

    def test_target_not_unique(self, validate: Validate) -> None:
        """Referencing a non-unique column is refused."""
        validation = validate(
            ORGS
            + MEMBERS.replace("references: {table: orgs}", "references: {table: orgs, column: name}").replace(
                "type: uuid, nullable: false, ref", "type: text, nullable: false, ref"
            )
        )
        assert [p.path for p in validation.errors] == ["/spec/columns/1/references/column"]

    def test_set_null_needs_nullable(self, validate: Validate) -> None:
        """onDelete setNull on a NOT NULL column is refused."""
        validation = validate(
            ORGS + MEMBERS.replace("references: {table: orgs}", "references: {table: orgs, onDelete: setNull}")
        )
        assert [p.path for p in validation.errors] == ["/spec/columns/1/references/onDelete"]


class TestClaims:
    """No two specs claim one physical name."""

    def test_duplicate_table_name(self, validate: Validate) -> None:
        """Two Tables with the same physical name: the second is refused naming the first."""
        validation = validate(
            ORGS
            + ORGS.replace("metadata: {name: orgs}", "metadata: {name: orgs2}\n").replace(
                "  projectRef", "  name: orgs\n  projectRef"
            )
        )
        [problem] = validation.errors
        assert problem.path == "/spec/name"
        assert problem.message == "table name `orgs` is already claimed by Table/default/orgs"

    def test_duplicate_object(self, validate: Validate) -> None:
        """The same kind/namespace/name twice is refused."""
        validation = validate(ORGS + ORGS)
        assert [p.path for p in validation.errors] == ["/metadata/name"]

    def test_duplicate_project_documents_are_refused_not_merged(self, validate: Validate) -> None:
        """A second Project document of the same name would silently replace the first."""
        second = (
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: demo}\n"
            "spec: {deletionPolicy: Delete}\n"
        )
        validation = validate(second)
        assert [(p.kind, p.path) for p in validation.errors] == [("Project", "/metadata/name")]
        assert "Project `demo` is defined twice" in validation.errors[0].message

    def test_same_name_in_two_projects_is_two_resources(self, validate: Validate) -> None:
        """Identity is per project: two projects of one namespace may both have a Table `orgs`."""
        other = "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: other}\n---\n"
        validation = validate(ORGS + other + ORGS.replace("{name: demo}", "{name: other}"))
        assert validation.errors == []
        assert [len(g.tables) for g in validation.specs.projects.values()] == [1, 1]

    def test_database_names_across_projects(self, validate: Validate) -> None:
        """Two Projects cannot share a database on one server."""
        other = (
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: other}\n"
            "spec: {database: {name: demo}}\n"
        )
        validation = validate(other)
        assert [p.message for p in validation.errors] == [
            "database name `demo` is already claimed by Project/default/demo"
        ]

    def test_function_secret_must_exist(self, validate: Validate) -> None:
        """Function.secrets name declared ProjectSecrets."""
        function = (
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Function\nmetadata: {name: f}\n"
            "spec: {projectRef: {name: demo}, source: {inline: x}, secrets: [STRIPE_KY]}\n---\n"
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: ProjectSecret\nmetadata: {name: stripe-key}\n"
            "spec: {projectRef: {name: demo}, generate: {}}\n"
        )
        [problem] = validate(function).errors
        assert (problem.path, problem.hint) == ("/spec/secrets/0", "did you mean `STRIPE_KEY`?")


class TestPolicyRecursion:
    """Policies that Postgres would expand forever are refused up front."""

    def test_self_reading_select_policy(self, validate: Validate) -> None:
        """A read policy querying its own table recurses."""
        using = "exists (select 1 from members m where m.org_id = members.org_id and m.user_id = auth.uid())"
        validation = validate(ORGS + MEMBERS + _policy("p", "members", f"command: select, using: '{using}'"))
        [problem] = validation.errors
        assert problem.path == "/spec/using"
        assert "`members` → `members`" in problem.message

    def test_write_policy_may_read_own_table(self, validate: Validate) -> None:
        """An insert check may query its own table when the read policies do not loop (as on PG 15)."""
        check = "exists (select 1 from members m where m.org_id = members.org_id and m.user_id = auth.uid())"
        validation = validate(
            ORGS + MEMBERS
            + _policy("read", "members", "command: select, using: 'user_id = auth.uid()'")
            + _policy("add", "members", f"command: insert, withCheck: '{check}'")
        )  # fmt: skip
        assert validation.valid, _errors(validation)

    def test_two_table_loop(self, validate: Validate) -> None:
        """orgs -> members -> orgs is reported on both policies forming the loop."""
        to_members = "exists (select 1 from members m where m.org_id = orgs.id)"
        to_orgs = "exists (select 1 from orgs o where o.id = members.org_id)"
        validation = validate(
            ORGS + MEMBERS
            + _policy("a", "orgs", f"command: select, roles: [authenticated], using: '{to_members}'")
            + _policy("b", "members", f"command: select, roles: [authenticated], using: '{to_orgs}'")
        )  # fmt: skip
        assert sorted(p.name for p in validation.errors) == ["a", "b"]

    def test_roles_that_do_not_meet_do_not_loop(self, validate: Validate) -> None:
        """Policies for different roles never expand into each other."""
        to_members = "exists (select 1 from members m where m.org_id = orgs.id)"
        to_orgs = "exists (select 1 from orgs o where o.id = members.org_id)"
        validation = validate(
            ORGS + MEMBERS
            + _policy("a", "orgs", f"command: select, roles: [anon], using: '{to_members}'")
            + _policy("b", "members", f"command: select, roles: [authenticated], using: '{to_orgs}'")
        )  # fmt: skip
        assert validation.valid, _errors(validation)

    def test_long_chain_is_not_a_loop(self, validate: Validate) -> None:
        """A 1,500-table chain of policies reading their parent is checked without deep recursion."""
        documents = []
        for index in range(1500):
            parent = f"t{index - 1}" if index else f"t{index}"
            documents.append(_table(f"t{index}", "    - {name: id, type: uuid, primaryKey: true}\n"))
            using = f"exists (select 1 from {parent} p where p.id = t{index}.id)" if index else "true"
            documents.append(_policy(f"p{index}", f"t{index}", f"command: select, using: '{using}'"))
        validation = validate("".join(documents))
        assert validation.valid, _errors(validation)[:3]


MEMBERSHIPS = _table(
    "memberships",
    "    - {name: team, type: text, primaryKey: true}\n    - {name: member, type: uuid, primaryKey: true}\n"
    "    - {name: note, type: text}\n",
)


def _bookings(extra: str, columns: str = "") -> str:
    return _table(
        "bookings",
        "    - {name: id, type: bigint, primaryKey: true}\n    - {name: team, type: text}\n"
        "    - {name: member, type: uuid}\n    - {name: starts_at, type: timestamptz}\n" + columns,
        extra,
    )


class TestTableConstraints:
    """Named checks, composite foreign keys, generated columns and column privileges resolve."""

    def test_auth_users_reference_resolves(self, validate: Validate) -> None:
        """`auth.users` is a valid target by its `id` (uuid); another column or type is named."""
        ok = _table("profiles", "    - {name: id, type: uuid, primaryKey: true, references: {table: auth.users}}\n")
        assert validate(ok).errors == []
        wrong = ok.replace("type: uuid", "type: bigint")
        assert [(p.path, p.hint) for p in validate(wrong).errors] == [("/spec/columns/0/type", "use `type: uuid`")]
        assert validate(ok.replace("{table: auth.users}", """{table: '"auth"."users"'}""")).errors == []
        by_email = ok.replace("{table: auth.users}", "{table: auth.users, column: emial}")
        [problem] = validate(by_email).errors
        assert (problem.path, problem.hint) == ("/spec/columns/0/references/column", "did you mean `email`?")

    def test_check_uses_known_columns(self, validate: Validate) -> None:
        """A table-level check's columns must exist: dropping a column a check uses is caught."""
        validation = validate(_bookings("  checks: [{name: in_order, expression: starts_at < ends_at}]\n"))
        assert _errors(validation) == [
            ("bookings", "/spec/checks/0/expression", "column `ends_at` does not exist on table `bookings`")
        ]

    def test_constraint_names_are_claimed_once(self, validate: Validate) -> None:
        """A check may not take a name Postgres derives for another constraint of the table."""
        extra = "  checks: [{name: bookings_pkey, expression: id > 0}]\n"
        [problem] = validate(_bookings(extra)).errors
        assert problem.path == "/spec/checks/0/name"
        assert "already used by the primary key" in problem.message

    def test_composite_key_resolves(self, validate: Validate) -> None:
        """A composite key names its columns, a unique target of the same arity and pairwise types."""
        good = "  foreignKeys: [{columns: [team, member], references: {table: memberships, columns: [team, member]}}]\n"
        assert validate(MEMBERSHIPS + _bookings(good)).errors == []
        not_unique = good.replace("columns: [team, member]}", "columns: [team, note]}")
        problems = validate(MEMBERSHIPS + _bookings(not_unique)).errors
        assert [(p.path, p.message) for p in problems] == [
            (
                "/spec/foreignKeys/0/references/columns",
                "(team, note) of `memberships` is neither its primary key nor unique",
            ),
            (
                "/spec/foreignKeys/0/columns/1",
                "column `member` of type `uuid` cannot reference `memberships.note` of type `text`",
            ),
        ]
        swapped = good.replace("columns: [team, member], references", "columns: [member, team], references")
        paths = [p.path for p in validate(MEMBERSHIPS + _bookings(swapped)).errors]
        assert paths == ["/spec/foreignKeys/0/columns/0", "/spec/foreignKeys/0/columns/1"]
        missing = good.replace("columns: [team, member], references", "columns: [team, membr], references")
        [problem] = validate(MEMBERSHIPS + _bookings(missing)).errors
        assert (problem.path, problem.hint) == ("/spec/foreignKeys/0/columns/1", "did you mean `member`?")

    def test_generated_columns(self, validate: Validate) -> None:
        """A generated column is immutable over the other, plain columns."""
        slug = "    - {name: slug, type: text, generated: lower(team)}\n"
        assert validate(_bookings("", slug)).errors == []
        twice = slug + "    - {name: slug2, type: text, generated: upper(slug)}\n"
        [problem] = validate(_bookings("", twice)).errors
        assert (problem.path, problem.message) == (
            "/spec/columns/5/generated",
            "generated column `slug2` uses generated column `slug`",
        )
        [problem] = validate(_bookings("", "    - {name: at, type: timestamptz, generated: now()}\n")).errors
        assert problem.path == "/spec/columns/4/generated"
        assert "not immutable" in problem.message

    def test_column_privileges_name_columns(self, validate: Validate) -> None:
        """columnPrivileges list existing columns; a role is listed once."""
        extra = "  columnPrivileges: [{role: authenticated, update: [team, membr]}]\n"
        [problem] = validate(_bookings(extra)).errors
        assert (problem.path, problem.hint) == ("/spec/columnPrivileges/0/update/1", "did you mean `member`?")
        twice = "  columnPrivileges: [{role: anon, insert: []}, {role: anon, update: []}]\n"
        [problem] = validate(_bookings(twice)).errors
        assert problem.path == "/spec/columnPrivileges/1/role"
