"""End to end: a policy created before its table waits for it, then becomes Ready."""

from __future__ import annotations

import asyncio

import pytest
from clusters import cluster, condition, needs_postgres

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]


class TestWaitingForDependency:
    """Order of creation does not matter."""

    def test_policy_before_table(self) -> None:
        """The policy says WaitingForDependency naming the table; once the table exists it is Ready."""

        async def scenario() -> tuple[str, str]:
            async with cluster() as kube:
                documents = {(d["kind"], d["metadata"]["name"]): d for d in kube.example("blog")}
                await kube.create(documents[("Project", "blog")])
                await kube.create(documents[("Table", "profiles")])
                await kube.create(documents[("TablePolicy", "posts-public-read")])
                waiting = await kube.wait("TablePolicy", "posts-public-read", "WaitingForDependency")
                await kube.create(documents[("Table", "posts")])
                ready = await kube.wait("TablePolicy", "posts-public-read", "Available")
                return condition(waiting, "Ready")["message"], condition(ready, "Ready")["status"]

        message, status = asyncio.run(scenario())
        assert "table `posts` does not exist" in message
        assert status == "True"
