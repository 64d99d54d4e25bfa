"""End to end: two replicas peered through a ClusterKopfPeering; only the higher priority reconciles."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from clusters import cluster, needs_postgres
from emulating import eventually

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]

PEERINGS = "/apis/zalando.org/v1/clusterkopfpeerings"


class TestPeering:
    """Replicas of the operator never reconcile at the same time; the survivor takes over."""

    def test_only_the_leader_reconciles_and_the_other_takes_over(self) -> None:
        """The priority-2 replica reconciles while the priority-1 one pauses; stopped, the other resumes."""

        async def scenario() -> tuple[int, int, int, dict[str, Any]]:
            async with cluster(running=False) as kube:
                async with kube.http.post(PEERINGS, json={"metadata": {"name": "kliv"}}) as response:
                    assert response.status == 200, await response.text()
                documents = kube.example("blog")
                project = next(d for d in documents if d["kind"] == "Project")
                table = next(
                    d
                    for d in documents
                    if d["kind"] == "Table" and not any("references" in c for c in d["spec"]["columns"])
                )
                async with kube.operator(peering=("kliv", 1)) as standby:
                    async with kube.operator(peering=("kliv", 2)) as leader:

                        async def both_registered() -> bool:
                            async with kube.http.get(f"{PEERINGS}/kliv") as response:
                                return len((await response.json()).get("status") or {}) == 2

                        await eventually(both_registered, timeout=15)
                        await asyncio.sleep(1.0)  # the standby reacts to the leader's keep-alive
                        await kube.create(project)
                        await kube.wait("Project", project["metadata"]["name"], "Available")
                        leader_runs = leader.debouncer.runs if leader.debouncer else 0
                        standby_runs_while_led = standby.debouncer.runs if standby.debouncer else 0
                    # The leader left (it removes itself from the peering): the standby resumes.
                    await kube.create(table)
                    ready = await kube.wait("Table", table["metadata"]["name"], "Available", timeout=60)
                    standby_runs = standby.debouncer.runs if standby.debouncer else 0
                return leader_runs, standby_runs_while_led, standby_runs, ready

        leader_runs, standby_runs_while_led, standby_runs, ready = asyncio.run(scenario())
        assert leader_runs >= 1
        assert standby_runs_while_led == 0
        assert standby_runs >= 1
        assert ready["status"]["observedGeneration"] == 1
