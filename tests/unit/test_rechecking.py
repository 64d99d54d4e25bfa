"""Checks skipped for unchanged specs (kliv.specs.rechecking): never when what they read changed.

Each scenario loads one folder twice through the real loader (which keeps the models of
unchanged files), changing one file in between, and compares with a fresh process's view:
the same folder validated from new models.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kliv.specs import Validation, load, validate_documents
from kliv.specs import resolving as resolving_module
from kliv.specs.documents import read_file

PROJECT = """apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: demo}
spec:
  enums: [{name: mood, values: [happy, sad]}]
"""
ORGS = """apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: orgs}
spec:
  projectRef: {name: demo}
  columns:
    - {name: id, type: uuid, primaryKey: true}
    - {name: owner_id, type: uuid}
    - {name: mood, type: mood}
"""
MEMBERS = """apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: members}
spec:
  projectRef: {name: demo}
  columns:
    - {name: id, type: bigint, primaryKey: true, identity: always}
    - {name: org_id, type: uuid, nullable: false, references: {table: orgs}}
    - {name: user_id, type: uuid, nullable: false, check: "user_id <> '00000000-0000-0000-0000-000000000000'"}
"""
POLICY = """apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: members-of-own-orgs}
spec:
  projectRef: {name: demo}
  table: members
  command: select
  roles: [authenticated]
  using: "exists (select 1 from orgs o where o.id = org_id and o.owner_id = auth.uid())"
"""


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "specs"
    folder.mkdir()
    for name, text in {"project": PROJECT, "orgs": ORGS, "members": MEMBERS, "policy": POLICY}.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def _fresh(folder: Path) -> Validation:
    """What a new process would say: every document parsed anew, nothing remembered."""
    documents = [d for f in sorted(folder.glob("*.yaml")) for d in read_file(f)[0]]
    return validate_documents(documents)


def _errors(validation: Validation) -> list[tuple[str, str, str]]:
    return sorted((p.name, p.path, p.message) for p in validation.errors)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the Tables and TablePolicies whose checks ran."""
    ran: list[str] = []
    original_table, original_policy = resolving_module._Project._table, resolving_module._Project._policy

    def table(self: resolving_module._Project, spec: object) -> None:
        ran.append(spec.resource.name)  # type: ignore[attr-defined]
        original_table(self, spec)  # type: ignore[arg-type]

    def policy(self: resolving_module._Project, spec: object) -> None:
        ran.append(spec.resource.name)  # type: ignore[attr-defined]
        original_policy(self, spec)  # type: ignore[arg-type]

    monkeypatch.setattr(resolving_module._Project, "_table", table)
    monkeypatch.setattr(resolving_module._Project, "_policy", policy)
    return ran


class TestRechecking:
    def test_unchanged_specs_are_not_checked_again(self, tmp_path: Path, checks: list[str]) -> None:
        folder = _folder(tmp_path)
        assert load([folder]).valid
        assert sorted(checks) == ["members", "members-of-own-orgs", "orgs"]
        checks.clear()
        assert load([folder]).valid
        assert checks == []

    def test_a_changed_file_is_checked_again(self, tmp_path: Path, checks: list[str]) -> None:
        folder = _folder(tmp_path)
        load([folder])
        checks.clear()
        (folder / "members.yaml").write_text(MEMBERS.replace("nullable: false, check", "check"))
        assert load([folder]).valid
        # The policy read table members: it runs again too; orgs read nothing that changed.
        assert checks == ["members", "members-of-own-orgs"]

    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            # The policy reads orgs.owner_id in a sub-query: orgs loses it.
            (("orgs", ORGS.replace("    - {name: owner_id, type: uuid}\n", "")), "column `o.owner_id`"),
            # members references orgs: orgs goes away.
            (("orgs", None), "table `orgs` does not exist"),
            # orgs uses enum mood: the Project drops it.
            (("project", PROJECT.replace("enums: [{name: mood, values: [happy, sad]}]", "displayName: Demo")), "mood"),
        ],
        ids=["sub-query-column", "foreign-key-target", "enum"],
    )
    def test_what_an_unchanged_spec_read_changed(
        self, tmp_path: Path, change: tuple[str, str | None], expected: str
    ) -> None:
        folder = _folder(tmp_path)
        assert load([folder]).valid
        name, text = change
        if text is None:
            (folder / f"{name}.yaml").unlink()
        else:
            (folder / f"{name}.yaml").write_text(text)
        again = load([folder])
        assert not again.valid
        assert _errors(again) == _errors(_fresh(folder))
        assert any(expected in message for _, _, message in _errors(again))

    def test_a_table_appearing_under_a_looked_up_name(self, tmp_path: Path) -> None:
        """A check that looked a name up and found nothing depends on it staying absent."""
        folder = _folder(tmp_path)
        (folder / "orgs.yaml").unlink()
        assert not load([folder]).valid
        (folder / "orgs.yaml").write_text(ORGS)
        assert load([folder]).valid

    def test_a_failed_check_runs_again_with_the_same_errors(self, tmp_path: Path, checks: list[str]) -> None:
        folder = _folder(tmp_path)
        (folder / "policy.yaml").write_text(POLICY.replace("o.owner_id", "o.nobody"))
        first = _errors(load([folder]))
        checks.clear()
        assert _errors(load([folder])) == first
        assert "members-of-own-orgs" in checks
