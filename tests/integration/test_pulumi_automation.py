"""The Pulumi engine through the Automation API and the real `pulumi` CLI, against the real Postgres.

Skipped where the CLI is not on PATH (no registry these machines reach ships it or its
plugins; docs/pulumi.md says how to install them). What runs without it is in
tests/unit/test_pulumi_program.py (the program under mocks, the preview translation,
conformance with the native plans) and test_pulumi_dynamic_providers.py (the dynamic
providers over Pulumi's provider protocol).
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from postgres_projects import ROOT, TEST_KEY, Project

from kliv.specs import ProjectSpecs, load
from kliv.stacks.errors import ConflictError, RefusedError
from kliv.stacks.providers import ProviderOptions
from kliv.stacks.pulumi.engine import PulumiEngine
from kliv.stacks.secrets.provider import environment_values

pytestmark = pytest.mark.skipif(
    shutil.which("pulumi") is None,
    reason="the Pulumi engine needs the `pulumi` CLI and its postgresql plugin on PATH (docs/pulumi.md)",
)


def _engine(created: Project, backend: Path) -> PulumiEngine:
    options = ProviderOptions(
        buckets_dir=created.buckets_dir, secret_values=environment_values({}), secret_key=TEST_KEY
    )
    return PulumiEngine(created.url, options, backend=f"file://{backend}")


def _group(created: Project) -> ProjectSpecs:
    (group,) = load([created.folder]).specs.projects.values()
    return group


def test_plan_apply_and_plan_again_is_empty(project: Callable[..., Project], tmp_path: Path) -> None:
    created = project(ROOT / "examples" / "blog")
    engine = _engine(created, tmp_path / "state")
    try:
        prepared = engine.plan(_group(created))
        assert {c.action for c in prepared.plan.changes} == {"create"}
        engine.apply(prepared)
        with created.connect() as connection:
            assert connection.execute("SELECT to_regclass('posts') IS NOT NULL").fetchone() == (True,)
        assert engine.plan(_group(created)).plan.empty
        stacks = list((tmp_path / "state" / ".pulumi" / "stacks" / "kliv").glob("*.json"))
        assert [p.stem for p in stacks] == [f"{created.namespace}.blog"]
        state = stacks[0].read_text()
        assert TEST_KEY not in state  # secrets are kept encrypted with the passphrase
        events = engine.control_session().execute(
            "SELECT count(*) FROM inventory.outbox WHERE namespace = %s", [created.namespace]).fetchone()  # fmt: skip
        assert events is not None
        assert events[0] > 0
    finally:
        engine.close()


def test_data_loss_is_refused_then_allowed(project: Callable[..., Project], tmp_path: Path) -> None:
    created = project(ROOT / "examples" / "blog")
    engine = _engine(created, tmp_path / "state")
    try:
        engine.apply(engine.plan(_group(created)))
        created.edit("Table", "posts", lambda d: d["spec"].update(
            columns=[c for c in d["spec"]["columns"] if c["name"] != "created_at"]))  # fmt: skip
        prepared = engine.plan(_group(created))
        with pytest.raises(RefusedError):
            engine.apply(prepared)
        with created.connect() as connection:
            found = connection.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'posts' "
                                       "AND column_name = 'created_at'").fetchone()  # fmt: skip
            assert found == (1,)
        engine.apply(prepared, allow_data_loss=True)
        with created.connect() as connection:
            found = connection.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'posts' "
                                       "AND column_name = 'created_at'").fetchone()  # fmt: skip
            assert found == (0,)
    finally:
        engine.close()


def test_two_stacks_at_once_in_one_process(project: Callable[..., Project], tmp_path: Path) -> None:
    first, second = project(ROOT / "examples" / "blog"), project(ROOT / "examples" / "saas")
    engine = _engine(first, tmp_path / "state")
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda c: engine.apply(engine.plan(_group(c))), (first, second)))
        assert all(not plan.empty for plan in done)
    finally:
        engine.close()


def test_a_locked_stack_is_a_temporary_conflict(project: Callable[..., Project], tmp_path: Path) -> None:
    created = project(ROOT / "examples" / "blog")
    engine = _engine(created, tmp_path / "state")
    try:
        engine.plan(_group(created))  # makes the stack
        locks = tmp_path / "state" / ".pulumi" / "locks" / "organization" / "kliv" / f"{created.namespace}.blog"
        locks.mkdir(parents=True, exist_ok=True)
        (locks / "held.json").write_text(json.dumps({"pid": 1, "username": "someone", "hostname": "elsewhere",
                                                     "timestamp": "2026-01-01T00:00:00Z"}))  # fmt: skip
        with pytest.raises(ConflictError):
            engine.apply(engine.plan(_group(created)))
    finally:
        engine.close()
