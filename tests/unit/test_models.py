"""Per-kind models: defaults, field validation and the messages agents get back."""

from __future__ import annotations

from spec_validation import Validate

from kliv.specs import Project, ProjectSecret, Table, TablePolicy


def _errors(validation: object) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in validation.errors]  # type: ignore[attr-defined]


def _only(validation: object) -> tuple[str, str, str]:
    errors = validation.errors  # type: ignore[attr-defined]
    assert len(errors) == 1, [(e.path, e.message) for e in errors]
    return errors[0].path, errors[0].message, errors[0].hint


TABLE = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: posts}
spec:
  projectRef: {name: demo}
  rowLevelSecurity: true
  columns:
    - {name: id, type: uuid, primaryKey: true, default: gen_random_uuid()}
%s
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: posts-read}
spec: {projectRef: {name: demo}, table: posts, command: select, using: "true"}
"""


class TestProject:
    """Project defaults and names."""

    def test_defaults(self, validate: Validate) -> None:
        """Database name derives from metadata.name; deletionPolicy defaults to Retain."""
        validation = (
            validate("", project=False)
            if False
            else validate(
                "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: my-shop}\nspec: {}\n",
                project=False,
            )
        )
        assert validation.valid
        project = next(iter(validation.specs)).resource
        assert isinstance(project, Project)
        assert (project.database_name, project.spec.deletion_policy) == ("my_shop", "Retain")

    def test_enum_labels_unique(self, validate: Validate) -> None:
        """Enum labels are listed once."""
        validation = validate(
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: p}\n"
            "spec: {enums: [{name: mood, values: [ok, ok]}]}\n",
            project=False,
        )
        assert _only(validation)[:2] == ("/spec/enums/0/values", "`ok` is listed twice")

    def test_statement_timeout(self, validate: Validate) -> None:
        """30 s by default; bounded both ways, since the database is shared."""
        project = "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: p}\nspec: %s\n"
        validation = validate(project % "{}", project=False)
        assert next(iter(validation.specs)).resource.spec.database.statement_timeout == "30s"  # type: ignore[attr-defined]
        assert validate(project % "{database: {statementTimeout: 2min}}", project=False).valid
        for bad, message in (("0", "is not a duration"), ("1h", "is not a duration"), ("50ms", "between 100ms"),
                             ("11min", "between 100ms and 10min"), ("30 s", "is not a duration")):  # fmt: skip
            path, found, _ = _only(validate(project % f"{{database: {{statementTimeout: '{bad}'}}}}", project=False))
            assert path == "/spec/database/statementTimeout"
            assert message in found


class TestTable:
    """Columns and their consistency rules."""

    def test_valid_table(self, validate: Validate) -> None:
        """Defaults: RLS and audit on, nullable unless primary key."""
        validation = validate(TABLE % "    - {name: title, type: text}")
        assert validation.valid, _errors(validation)
        table = next(s.resource for s in validation.specs if isinstance(s.resource, Table))
        assert table.spec.row_level_security
        assert table.spec.audit
        assert [c.is_nullable for c in table.spec.columns] == [False, True]

    def test_unknown_field_suggests(self, validate: Validate) -> None:
        """Typos get a did-you-mean hint and a pointer."""
        path, message, hint = _only(validate(TABLE % "    - {name: title, type: text, nulable: false}"))
        assert (path, message, hint) == (
            "/spec/columns/1/nulable",
            "unknown field `nulable`",
            "did you mean `nullable`?",
        )

    def test_yaml_boolean_name(self, validate: Validate) -> None:
        """`on` reads as a boolean in YAML; the hint says to quote it."""
        path, message, hint = _only(validate(TABLE % "    - {name: on, type: text}"))
        assert path == "/spec/columns/1/name"
        assert "must be a string, not a boolean" in message
        assert "quote" in hint

    def test_identity_with_default(self, validate: Validate) -> None:
        """An identity column cannot also have a default; the pointer names the default."""
        path, message, _ = _only(validate(TABLE % "    - {name: n, type: bigint, identity: always, default: '1'}"))
        assert (path, message) == ("/spec/columns/1/default", "identity column `n` cannot have a default")

    def test_identity_needs_integer(self, validate: Validate) -> None:
        """Identity columns are integer columns."""
        path, _, hint = _only(validate(TABLE % "    - {name: n, type: text, identity: byDefault}"))
        assert (path, hint) == ("/spec/columns/1/identity", "use `type: bigint`")

    def test_duplicate_column(self, validate: Validate) -> None:
        """Two columns with one name are refused at the second one."""
        path, message, _ = _only(validate(TABLE % "    - {name: id, type: text}"))
        assert path == "/spec/columns/1/name"
        assert "used twice" in message

    def test_numbers_as_sql(self, validate: Validate) -> None:
        """`default: 0` (a YAML number) is the SQL constant 0."""
        validation = validate(TABLE % "    - {name: n, type: integer, default: 0}")
        assert validation.valid, _errors(validation)

    def test_expression_position(self, validate: Validate) -> None:
        """Rejected SQL names the character position."""
        path, message, _ = _only(validate(TABLE % "    - {name: n, type: integer, check: 'n > 0 or pg_sleep(1)'}"))
        assert path == "/spec/columns/1/check"
        assert message == "function `pg_sleep()` is not allowed (at character 10)"


class TestTablePolicy:
    """Commands constrain which expressions a policy may have."""

    POLICY = (
        "apiVersion: cloud.kliv.dev/v1alpha1\nkind: TablePolicy\nmetadata: {name: p}\n"
        "spec: {projectRef: {name: demo}, table: posts, %s}\n"
    )

    def test_defaults(self, validate: Validate) -> None:
        """Command `all` and all three roles by default."""
        validation = validate(TABLE % "" + "---\n" + self.POLICY % "using: 'id is not null'")
        policy = next(s.resource for s in validation.specs if s.resource.name == "p")
        assert isinstance(policy, TablePolicy)
        assert (policy.spec.command, policy.spec.roles) == ("all", ["anon", "authenticated", "service_role"])

    def test_insert_with_using(self, validate: Validate) -> None:
        """Insert policies only have withCheck."""
        validation = validate(TABLE % "" + "---\n" + self.POLICY % "command: insert, using: 'true', withCheck: 'true'")
        assert _only(validation)[:2] == ("/spec/using", "an insert policy cannot have `using`")

    def test_unknown_role(self, validate: Validate) -> None:
        """Roles come from a fixed set, with suggestions."""
        validation = validate(TABLE % "" + "---\n" + self.POLICY % "using: 'true', roles: [anonymous]")
        path, _, hint = _only(validation)
        assert path == "/spec/roles/0"
        assert hint == "did you mean `anon`?"


class TestProjectSecret:
    """A secret names its source; never a value."""

    SECRET = (
        "apiVersion: cloud.kliv.dev/v1alpha1\nkind: ProjectSecret\nmetadata: {name: stripe-key}\n"
        "spec: {projectRef: {name: demo}%s}\n"
    )

    def test_default_name(self, validate: Validate) -> None:
        """The name defaults to metadata.name in upper case."""
        validation = validate(self.SECRET % ", generate: {length: 32}")
        secret = next(s.resource for s in validation.specs if isinstance(s.resource, ProjectSecret))
        assert secret.secret_name == "STRIPE_KEY"

    def test_value_is_not_a_field(self, validate: Validate) -> None:
        """A plaintext `value` is an unknown field, and the source is required."""
        errors = _errors(validate(self.SECRET % ", value: sk_live_abc"))
        assert ("/spec/value", "unknown field `value`") in errors

    def test_exactly_one_source(self, validate: Validate) -> None:
        """valueFrom and generate exclude each other."""
        path, message, _ = _only(validate(self.SECRET % ", generate: {}, valueFrom: {env: X}"))
        assert (path, message) == ("/spec/valueFrom", "a ProjectSecret needs exactly one of `valueFrom` or `generate`")


class TestBucket:
    """Bucket names, sizes and origins."""

    BUCKET = (
        "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Bucket\nmetadata: {name: media}\n"
        "spec: {projectRef: {name: demo}, %s}\n"
    )

    def test_sizes(self, validate: Validate) -> None:
        """Quantities take suffixes; nonsense is refused with the field."""
        assert validate(self.BUCKET % "maxObjectSize: 5Mi").valid
        assert validate(self.BUCKET % "maxObjectSize: 1048576").valid
        assert _only(validate(self.BUCKET % "maxObjectSize: 5 MB"))[0] == "/spec/maxObjectSize"

    def test_bucket_name_rules(self, validate: Validate) -> None:
        """S3 naming rules apply to spec.name."""
        assert (
            _only(validate(self.BUCKET % "name: 192.168.0.1"))[1]
            == "bucket name `192.168.0.1` looks like an IP address"
        )

    def test_origin(self, validate: Validate) -> None:
        """CORS origins have no path."""
        path, _, _ = _only(
            validate(self.BUCKET % "cors: [{allowedOrigins: ['https://a.example/x'], allowedMethods: [GET]}]")
        )
        assert path == "/spec/cors/0/allowedOrigins/0"


class TestFunction:
    """Schedules and env names."""

    FUNCTION = (
        "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Function\nmetadata: {name: hello}\n"
        "spec: {projectRef: {name: demo}, source: {inline: 'export default {}'}, %s}\n"
    )

    def test_cron(self, validate: Validate) -> None:
        """Five-field cron and @aliases are accepted; other strings are not."""
        assert validate(self.FUNCTION % "schedule: '*/5 * * * *'").valid
        assert validate(self.FUNCTION % "schedule: '@daily'").valid
        assert _only(validate(self.FUNCTION % "schedule: 'every minute'"))[0] == "/spec/schedule"
        for never in ("'0 0 30 2 *'", "' @daily'", '"@daily\\n"'):  # found by review: they stopped the scheduler
            assert _only(validate(self.FUNCTION % f"schedule: {never}"))[0] == "/spec/schedule", never

    def test_env_key(self, validate: Validate) -> None:
        """Env keys must be valid variable names; the pointer names the key."""
        assert _only(validate(self.FUNCTION % "env: {'1BAD': x}"))[0] == "/spec/env/1BAD"

    def test_runtime_variables_are_refused(self, validate: Validate) -> None:
        """Names the runtime reads itself (a proxy would route around the loopback ban) are refused."""
        for name in ("HTTPS_PROXY", "https_proxy", "DENO_DIR", "LD_PRELOAD", "KLIV_PROJECT", "NODE_OPTIONS",
                     "OTEL_DENO", "SSLKEYLOGFILE", "TMPDIR"):  # fmt: skip
            path, message, hint = _only(validate(self.FUNCTION % f"env: {{{name}: x}}"))
            assert path == f"/spec/env/{name}"
            assert "read by the function runtime itself" in message
            assert hint.startswith("give the variable another name")
        path, _, _ = _only(validate(self.FUNCTION % "secrets: [HTTP_PROXY]"))
        assert path == "/spec/secrets/0"

    def test_memory_and_versions(self, validate: Validate) -> None:
        assert validate(self.FUNCTION % "memoryMiB: 256, versionsKept: 3").valid
        assert _only(validate(self.FUNCTION % "memoryMiB: 8"))[0] == "/spec/memoryMiB"
        assert _only(validate(self.FUNCTION % "versionsKept: 0"))[0] == "/spec/versionsKept"


class TestEmailTemplate:
    """Templates declare what they use."""

    TEMPLATE = (
        "apiVersion: cloud.kliv.dev/v1alpha1\nkind: EmailTemplate\nmetadata: {name: welcome}\n"
        "spec:\n  projectRef: {name: demo}\n  subject: 'Hi {{ name }}'\n  markdown: %s\n"
        "  variables: %s\n  from: {address: %s}\n"
    )

    def test_valid(self, validate: Validate) -> None:
        """Declared variables and a valid sender pass."""
        validation = validate(self.TEMPLATE % ("'Hello **{{ name }}**'", "{name: {required: true}}", "a@b.example"))
        assert validation.valid, _errors(validation)

    def test_undeclared_variable(self, validate: Validate) -> None:
        """Every used variable must be declared."""
        path, message, hint = _only(validate(self.TEMPLATE % ("'{{ link }}'", "{name: {}}", "a@b.example")))
        assert (path, message) == ("/spec/markdown", "`{{ link }}` is used in `markdown` but not declared")
        assert hint == "add `link: {required: true}` under `variables`"

    def test_required_with_default(self, validate: Validate) -> None:
        """Required variables have no default."""
        validation = validate(self.TEMPLATE % ("'x'", "{name: {required: true, default: x}}", "a@b.example"))
        assert _only(validation)[0] == "/spec/variables/name"

    def test_template_syntax(self, validate: Validate) -> None:
        """Jinja syntax errors name the line."""
        path, message, _ = _only(validate(self.TEMPLATE % ("'{% if %}'", "{name: {}}", "a@b.example")))
        assert path == "/spec/markdown"
        assert message.startswith("template syntax error on line 1")

    def test_include_is_refused(self, validate: Validate) -> None:
        """Templates cannot reach other files."""
        validation = validate(self.TEMPLATE % ("\"{% include '/etc/passwd' %}\"", "{name: {}}", "a@b.example"))
        assert "not allowed in templates" in _only(validation)[1]

    def test_bad_address(self, validate: Validate) -> None:
        """Sender addresses are validated."""
        assert _only(validate(self.TEMPLATE % ("'x'", "{name: {}}", "not-an-address")))[0] == "/spec/from/address"
