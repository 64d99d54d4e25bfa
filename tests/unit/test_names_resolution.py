"""Names that Postgres would resolve to its own objects are refused (pg_catalog is searched first).

The attack the review found: an enum named `regclass` (or `oid`, `xml`...) was created
in public but every column of that "type" got the system type. Worse, found while
fixing it: a Table named `pg_authid` is created in public, but the GRANT that follows
names `"pg_authid"` unqualified, which Postgres resolves to the system catalog of
password hashes, granting it to the project's roles.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from spec_validation import Validate

PROJECT = "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: p}\nspec: %s\n"
TABLE = """---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata:
  name: %s
  annotations: {cloud.kliv.dev/rls-disabled-reason: "a test"}
spec:
  projectRef: {name: p}
  rowLevelSecurity: false
  audit: false
  columns:
    - {name: id, type: integer}
"""


class TestSystemNames:
    @pytest.mark.parametrize("name", ["regclass", "oid", "xml", "int4", "name", "tsquery", "_int4", "integer", "text"])
    def test_enum_named_like_a_system_type(self, validate: Validate, name: str) -> None:
        validation = validate(PROJECT % f"{{enums: [{{name: {name}, values: [a]}}]}}", project=False)
        [problem] = validation.errors
        assert problem.path == "/spec/enums/0/name"
        assert "type" in problem.message

    @pytest.mark.parametrize("name", ["pg-authid", "pg-class", "pg-shadow"])
    def test_table_named_like_a_system_catalog(self, validate: Validate, name: str) -> None:
        validation = validate(PROJECT % "{}" + TABLE % name, project=False)
        [problem] = validation.errors
        assert "starts with `pg_`, which Postgres keeps for its own objects" in problem.message

    def test_explicit_names_too(self, validate: Validate) -> None:
        table = (TABLE % "users").replace("  projectRef", "  name: pg_authid\n  projectRef")
        [problem] = validate(PROJECT % "{}" + table, project=False).errors
        assert problem.path == "/spec/name"

    def test_ordinary_enum_names_stay_allowed(self, validate: Validate) -> None:
        assert validate(PROJECT % "{enums: [{name: post_status, values: [a]}]}", project=False).valid


class TestManyProblems:
    def test_a_mapping_of_200000_unknown_keys_is_reported_in_bounded_work(self, validate: Validate) -> None:
        """Every problem is located by walking its mapping: past 100 the rest are counted, not located."""
        keys = "".join(f"  k{i}: 1\n" for i in range(200_000))
        validation = validate("apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: p}\nspec:\n" + keys,
                              project=False)  # fmt: skip
        assert len(validation.errors) == 101
        assert validation.errors[-1].message == "... and 199,900 more problems in this document"


class TestReviewFindings:
    """Specs the attacker's review found valid but failing at apply."""

    @pytest.mark.parametrize("column", ["ctid", "xmin", "tableoid", "oid"])
    def test_system_column_names(self, validate: Validate, column: str) -> None:
        table = (TABLE % "things").replace("- {name: id, type: integer}", f"- {{name: {column}, type: integer}}")
        [problem] = validate(PROJECT % "{}" + table, project=False).errors
        assert problem.path == "/spec/columns/0/name"
        assert "system columns" in problem.message

    def test_information_schema_as_a_table_name(self, validate: Validate) -> None:
        table = (TABLE % "things").replace("  projectRef", "  name: information_schema\n  projectRef")
        [problem] = validate(PROJECT % "{}" + table, project=False).errors
        assert problem.path == "/spec/name"


class TestSpecFiles:
    """The CLI reads files an untrusted change may point at: bounded, regular, inside the folder."""

    def test_device_and_fifo_are_not_read(self, tmp_path: Path) -> None:
        from kliv.specs import load

        (tmp_path / "zero.yaml").symlink_to("/dev/zero")
        os.mkfifo(tmp_path / "fifo.yaml")
        validation = load([tmp_path / "zero.yaml", tmp_path / "fifo.yaml"])
        assert [p.message for p in validation.errors] == ["not a regular file", "not a regular file"]

    def test_a_link_out_of_the_folder_is_not_followed(self, tmp_path: Path) -> None:
        from kliv.specs import load

        folder = tmp_path / "specs"
        folder.mkdir()
        (tmp_path / "outside.yaml").write_text("apiVersion: cloud.kliv.dev/v1alpha1\nkind: SECRET-FROM-OUTSIDE\n")
        (folder / "a.yaml").symlink_to(tmp_path / "outside.yaml")
        validation = load([folder])
        assert [p.message for p in validation.errors] == ["folder has no .yaml or .yml files"]

    def test_a_folder_walk_reads_regular_files_and_links_that_stay_inside(self, tmp_path: Path) -> None:
        from kliv.specs.documents import spec_files

        folder = tmp_path / "specs"
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "b.yaml").write_text("{}")
        (folder / "a.yml").write_text("{}")
        (folder / "inside.yaml").symlink_to(folder / "a.yml")  # a link that stays inside: read
        (folder / "linked").symlink_to(folder / "sub")  # a link to a folder: never walked (as rglob)
        os.mkfifo(folder / "fifo.yaml")  # not a regular file: never read
        for skipped in (".git", "node_modules"):
            (folder / skipped).mkdir()
            (folder / skipped / "c.yaml").write_text("{}")
        (folder / "notes.txt").write_text("")
        files, problems = spec_files([folder])
        assert [f.relative_to(folder).as_posix() for f in files] == ["a.yml", "inside.yaml", "sub/b.yaml"]
        assert problems == []
