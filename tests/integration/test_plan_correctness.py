"""Plans that say what they do, and failures that say what changed (found by a newcomer and a benchmark).

- Moving a policy to another table was planned and audited as `delete`.
- A unique index over duplicate rows was planned as plain `safe`; its concurrent build failed after
  the transaction, left an invalid index behind, and the CLI said exit 3, "rolled back".
- Reordering enum values exited 3, which the README documents as "server unreachable".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from postgres_projects import Project
from typer.testing import CliRunner

from kliv.cli import app
from kliv.stacks.errors import PlanRefusedError
from kliv.stacks.postgres import outbox

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: shop}
spec:
  enums: [{name: state, values: [new, paid, shipped]}]
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: products}
spec:
  projectRef: {name: shop}
  columns:
    - {name: id, type: uuid, primaryKey: true, default: gen_random_uuid()}
    - {name: sku, type: text}
    - {name: state, type: state}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: orders}
spec:
  projectRef: {name: shop}
  columns:
    - {name: id, type: uuid, primaryKey: true, default: gen_random_uuid()}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: public-read}
spec:
  projectRef: {name: shop}
  table: products
  command: select
  using: "true"
"""


@pytest.fixture
def shop(project: Callable[[str | Path], Project]) -> Project:
    created = project(SPECS)
    created.apply()
    return created


def _kliv(created: Project, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, [*args, str(created.folder)], env={"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent"}
    )
    assert isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


class TestMovedPolicy:
    def test_planned_and_audited_as_an_update(self, shop: Project) -> None:
        shop.edit("TablePolicy", "public-read", lambda d: d["spec"].update(table="orders"))
        [change] = [c for c in shop.plan().changes if c.action != "noop"]
        assert (change.resource, change.action) == (f"TablePolicy/{shop.namespace}/public-read", "update")
        assert "move policy from products.public_read to orders.public_read" in change.summary
        shop.apply()
        assert shop.plan().empty
        bodies = [json.loads(r.body) for r in outbox.read(shop.url, f"{shop.namespace}/shop", limit=None)]
        policy = [b["type"] for b in bodies if b["subject"] == f"TablePolicy/{shop.namespace}/public-read"]
        assert policy == ["dev.kliv.cloud.tablepolicy.created", "dev.kliv.cloud.tablepolicy.updated"]
        with shop.connect() as connection:
            rows = connection.execute("SELECT tablename FROM pg_policies WHERE policyname = 'public_read'").fetchall()
        assert rows == [("orders",)]


def _unique_sku(document: dict[str, Any]) -> None:
    document["spec"]["indexes"] = [{"columns": ["sku"], "unique": True}]


def _duplicates_after_the_plan(shop: Project, monkeypatch: pytest.MonkeyPatch, sku: str) -> None:
    """Every plan is followed by two rows of one sku: as if an application wrote them meanwhile."""
    from kliv.stacks.postgres import engine as engine_module

    original = engine_module.PostgresEngine.plan

    def plan_then_duplicate(self: Any, group: Any, split: bool = False) -> Any:
        prepared = original(self, group, split)
        with shop.connect() as connection:
            connection.execute("INSERT INTO products (sku) VALUES (%s), (%s)", [sku, sku])
        return prepared

    monkeypatch.setattr(engine_module.PostgresEngine, "plan", plan_then_duplicate)


class TestUniqueIndexOverDuplicates:
    def test_refused_at_plan_and_nothing_changes(self, shop: Project) -> None:
        with shop.connect() as connection:
            connection.execute("INSERT INTO products (sku) VALUES ('a'), ('a'), (NULL), (NULL)")
        shop.edit("Table", "products", _unique_sku)
        with pytest.raises(PlanRefusedError, match=r"rows of products already hold duplicate values of \(sku\)"):
            shop.plan()
        code, output = _kliv(shop, "apply")
        assert code == 2
        assert "remove the duplicate rows first" in output
        with shop.connect() as connection:
            assert connection.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'products'").fetchone() == (1,)

    def test_checked_on_a_table_renamed_in_an_earlier_apply(self, shop: Project) -> None:
        """`renamedFrom` stays in the spec after the rename: the rows are still checked (found by a newcomer)."""
        shop.edit("Table", "products", lambda d: d["spec"].update(renamedFrom="items"))
        with shop.connect() as connection:
            connection.execute("INSERT INTO products (sku) VALUES ('a'), ('a')")
        shop.edit("Table", "products", _unique_sku)
        with pytest.raises(PlanRefusedError, match="duplicate values of \\(sku\\)"):
            shop.plan()

    def test_a_unique_column_over_duplicates_is_refused_at_plan(self, shop: Project) -> None:
        """A unique constraint would fail the whole transaction: refused before it starts, exit 2."""
        with shop.connect() as connection:
            connection.execute("INSERT INTO products (sku) VALUES ('a'), ('a')")
        shop.edit("Table", "products", lambda d: d["spec"]["columns"][1].update(unique=True))
        code, output = _kliv(shop, "apply")
        assert code == 2, output
        assert "unique constraint products_sku_key cannot be built" in output

    def test_null_values_are_no_duplicates(self, shop: Project) -> None:
        with shop.connect() as connection:
            connection.execute("INSERT INTO products (sku) VALUES ('a'), (NULL), (NULL)")
        shop.edit("Table", "products", _unique_sku)
        [change] = [c for c in shop.plan().changes if c.action != "noop"]
        assert change.summary == ["create index products_sku_uidx concurrently (checked at plan: no duplicate rows)"]
        shop.apply()
        assert shop.plan().empty

    def test_a_check_that_cannot_finish_in_time_is_not_claimed(
        self, shop: Project, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The row check stops after PRECONDITION_TIMEOUT (60 s); then the plan says it could not check."""
        from kliv.stacks.postgres import planning as engine_module

        with shop.connect() as connection:
            connection.execute("INSERT INTO products (sku) SELECT 's' || g FROM generate_series(1, 300000) g")
        shop.edit("Table", "products", _unique_sku)
        monkeypatch.setattr(engine_module, "PRECONDITION_TIMEOUT", "1ms")
        [change] = [c for c in shop.plan().changes if c.action != "noop"]
        unchecked = "(too many rows to check at plan: fails if they hold duplicates)"
        assert change.summary == [f"create index products_sku_uidx concurrently {unchecked}"]

    def test_duplicates_arriving_after_the_plan_fail_with_exit_4(self, shop: Project) -> None:
        """Rows inserted between plan and build: the build fails after the transaction; the invalid index
        is dropped, the transaction's changes stay recorded, and the CLI says exactly what changed."""
        shop.edit("Table", "products", _unique_sku)
        shop.edit("Table", "orders", lambda d: d["spec"]["columns"].append({"name": "note", "type": "text"}))
        prepared = shop.prepare()
        with shop.connect() as connection:
            connection.execute("INSERT INTO products (sku) VALUES ('b'), ('b')")
        from kliv.stacks import ApplyFailedError

        with pytest.raises(ApplyFailedError) as failed:
            shop.engine.apply(prepared)
        error = failed.value
        assert error.partial
        assert f"Table/{shop.namespace}/orders" in error.changed
        assert "after changes that stay applied" in error.message
        assert "fix the data" in error.hint
        with shop.connect() as connection:
            invalid = connection.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()
            note = connection.execute("SELECT count(*) FROM pg_attribute WHERE attname = 'note'").fetchone()
        assert (invalid, note) == ((0,), (1,))
        with pytest.raises(PlanRefusedError):
            shop.plan()
        with shop.connect() as connection:
            connection.execute("DELETE FROM products WHERE sku = 'b'")
        [left] = [c for c in shop.plan().changes if c.action != "noop"]
        assert left.resource == f"Table/{shop.namespace}/products"  # only the index is left to do

    def test_cli_exit_4(self, shop: Project, monkeypatch: pytest.MonkeyPatch) -> None:
        shop.edit("Table", "products", _unique_sku)
        shop.edit("Table", "orders", lambda d: d["spec"]["columns"].append({"name": "note", "type": "text"}))
        _duplicates_after_the_plan(shop, monkeypatch, "c")
        code, output = _kliv(shop, "apply")
        assert code == 4, output
        assert "already applied" in output
        assert f"Table/{shop.namespace}/orders" in output

    def test_an_index_alone_failing_changed_nothing(self, shop: Project, monkeypatch: pytest.MonkeyPatch) -> None:
        """Only the index was to be built: exit 3, nothing changed, and the change is audited as failed only."""
        shop.edit("Table", "products", _unique_sku)
        _duplicates_after_the_plan(shop, monkeypatch, "d")
        code, output = _kliv(shop, "apply")
        assert code == 3, output
        assert "nothing was changed" in output
        bodies = [json.loads(r.body) for r in outbox.read(shop.url, f"{shop.namespace}/shop", limit=None)]
        products = [b["type"].rsplit(".", 1)[1] for b in bodies if b["subject"] == f"Table/{shop.namespace}/products"]
        assert products == ["created", "failed"]


class TestEnumReorder:
    def test_refused_with_exit_2(self, shop: Project) -> None:
        reordered = [{"name": "state", "values": ["paid", "new", "shipped"]}]
        shop.edit("Project", "shop", lambda d: d["spec"].update(enums=reordered))
        with pytest.raises(PlanRefusedError, match="values can only be added"):
            shop.plan()
        code, output = _kliv(shop, "apply")
        assert code == 2
        assert "keep the existing values in their order" in output
        assert _kliv(shop, "plan")[0] == 2  # `kliv plan` refuses the same way


def prepared_group(created: Project) -> Any:
    from kliv.specs import load

    [group] = [g for g in load([created.folder]).specs.projects.values() if g.project]
    return group
