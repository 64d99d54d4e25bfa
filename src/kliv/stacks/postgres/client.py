"""The Postgres external client: a project's database as one unit, observed and converged.

Called by the operator (later) per project reconcile. A thin adapter over
:class:`~kliv.stacks.postgres.engine.PostgresEngine`, whose calls block: each
runs in ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio

from kliv.specs import ProjectSpecs
from kliv.stacks.contract import Observation, Outputs
from kliv.stacks.postgres.desired import outputs
from kliv.stacks.postgres.engine import PostgresEngine


class PostgresProjectClient:
    """Observe, create, update and delete a project's database, tables and policies."""

    def __init__(self, engine: PostgresEngine, allow_data_loss: bool = False) -> None:
        self.engine = engine
        self.allow_data_loss = allow_data_loss

    async def observe(self, desired: ProjectSpecs) -> Observation:
        prepared = await asyncio.to_thread(self.engine.plan, desired)
        plan = prepared.plan
        created = any(c.action == "create" and c.resource == prepared.desired.resource for c in plan.changes)
        return Observation(
            exists=not created,
            up_to_date=plan.empty,
            changes=[c for c in plan.changes if c.action != "noop"],
            outputs=outputs(prepared.desired),
        )

    async def create(self, desired: ProjectSpecs) -> Outputs:
        return await self._converge(desired)

    async def update(self, desired: ProjectSpecs) -> Outputs:
        return await self._converge(desired)

    async def delete(self, desired: ProjectSpecs) -> None:
        """Drop the database and roles when the Project says Delete; forget it otherwise."""
        project = desired.project
        drop = project is not None and project.resource.spec.deletion_policy == "Delete"
        database = project.resource.database_name if project is not None else desired.name.replace("-", "_")
        deletion = await asyncio.to_thread(self.engine.plan_deletion, desired.namespace, desired.name, database, drop)
        await asyncio.to_thread(self.engine.apply_deletion, deletion, drop, "kliv")

    async def _converge(self, desired: ProjectSpecs) -> Outputs:
        def run() -> Outputs:
            prepared = self.engine.plan(desired)
            self.engine.apply(prepared, self.allow_data_loss)
            return outputs(prepared.desired)

        return await asyncio.to_thread(run)
