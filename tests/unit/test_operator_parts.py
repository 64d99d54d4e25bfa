"""The operator's pure parts: conditions, debounced reconciles, and the temporary/permanent decision."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from kliv.operator import conditions
from kliv.operator.debouncing import Debouncer
from kliv.operator.handlers import SUMMARY_LIMIT, summarize
from kliv.operator.outcomes import backoff, classify
from kliv.operator.reconciling import ObjectStatus, ProjectResult
from kliv.stacks.errors import AlreadyExistsError, ApplyFailedError, EngineError, RefusedError, UnavailableError
from kliv.stacks.plans import Change

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)


class TestConditions:
    """metav1.Condition shape and transition times."""

    def test_shape(self) -> None:
        """type, status, reason, message, lastTransitionTime and observedGeneration."""
        [data] = conditions.merge([], [conditions.ready(True, conditions.AVAILABLE, "Table is ready.")], 3, T0)
        assert data == {
            "type": "Ready",
            "status": "True",
            "reason": "Available",
            "message": "Table is ready.",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 3,
        }

    def test_transition_time_moves_only_on_status_change(self) -> None:
        """Same status keeps the old time; a new status takes the new one."""
        first = conditions.merge([], [conditions.ready(True, "Available", "ok")], 1, T0)
        same = conditions.merge(first, [conditions.ready(True, "Available", "still ok")], 2, T1)
        changed = conditions.merge(first, [conditions.ready(False, "DataLossRefused", "no")], 2, T1)
        assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
        assert changed[0]["lastTransitionTime"] == "2026-01-02T00:00:00Z"


class TestDebouncer:
    """Bursts coalesce per key."""

    def test_burst_is_one_run(self) -> None:
        """500 triggers in a burst for one key run the reconcile once; other keys run on their own."""
        calls: list[str] = []

        async def reconcile(key: str) -> str:
            calls.append(key)
            return f"result of {key}"

        async def scenario() -> None:
            debouncer: Debouncer[str, str] = Debouncer(reconcile, quiet=0.05, longest=1.0)
            results = await asyncio.gather(*(debouncer.request("a") for _ in range(500)), debouncer.request("b"))
            assert set(results) == {"result of a", "result of b"}
            await debouncer.close()

        asyncio.run(scenario())
        assert sorted(calls) == ["a", "b"]

    def test_trigger_during_run_runs_once_more(self) -> None:
        """A change that arrives while reconciling is not lost: exactly one more run follows."""
        calls: list[str] = []
        started = asyncio.Event()

        async def reconcile(key: str) -> None:
            calls.append(key)
            started.set()
            await asyncio.sleep(0.1)

        async def scenario() -> None:
            debouncer: Debouncer[str, None] = Debouncer(reconcile, quiet=0.01, longest=1.0)
            debouncer.trigger("a")
            await started.wait()
            for _ in range(10):
                debouncer.trigger("a")
            await asyncio.sleep(0.5)
            await debouncer.close()

        asyncio.run(scenario())
        assert calls == ["a", "a"]

    def test_errors_reach_every_requester(self) -> None:
        """A failed reconcile raises in every waiting handler."""

        async def reconcile(key: str) -> None:
            raise RuntimeError("boom")

        async def scenario() -> list[BaseException | None]:
            debouncer: Debouncer[str, None] = Debouncer(reconcile, quiet=0.01, longest=0.1)
            results = await asyncio.gather(debouncer.request("a"), debouncer.request("a"), return_exceptions=True)
            await debouncer.close()
            return results  # type: ignore[return-value]

        assert [str(r) for r in asyncio.run(scenario())] == ["boom", "boom"]

    def test_longest_wait_is_capped(self) -> None:
        """A key that never goes quiet still runs after `longest`."""
        calls: list[float] = []

        async def reconcile(key: str) -> None:
            calls.append(asyncio.get_running_loop().time())

        async def scenario() -> None:
            debouncer: Debouncer[str, None] = Debouncer(reconcile, quiet=0.05, longest=0.2)
            start = asyncio.get_running_loop().time()
            while asyncio.get_running_loop().time() - start < 0.5:
                debouncer.trigger("a")
                await asyncio.sleep(0.01)
            await debouncer.close()
            assert calls, "never ran"
            assert calls[0] - start < 0.35

        asyncio.run(scenario())


class TestOutcomes:
    """Temporary failures retry with backoff; permanent ones wait for a new spec."""

    def test_temporary(self) -> None:
        """A database that cannot be reached is retried, later each time."""
        outcome = classify(UnavailableError("cannot connect"), attempt=3)
        assert (outcome.temporary, outcome.delay, outcome.ready.reason) == (True, 8.0, "Unavailable")
        assert backoff(20) == 300.0

    def test_lock_timeout_is_temporary(self) -> None:
        """A lock held by an application transaction is worth another try."""
        assert classify(ApplyFailedError("ALTER TABLE x", "canceling statement due to lock timeout")).temporary

    def test_lost_connection_is_temporary(self) -> None:
        """A connection lost mid-apply (SQLSTATE class 08) is retried."""
        assert classify(ApplyFailedError("COMMIT", "connection lost", sqlstate="08006")).temporary

    def test_permanent(self) -> None:
        """Refusals, foreign names and rejected statements are not retried."""
        refused = classify(RefusedError([Change("Table/d/t", "update", "data-loss", ["drop column x"], [])]))
        assert (refused.temporary, refused.ready.reason) == (False, "DataLossRefused")
        assert "cloud.kliv.dev/allow-data-loss" in refused.ready.message
        assert classify(AlreadyExistsError("database `x` is already claimed")).ready.reason == "AlreadyExists"
        assert not classify(ApplyFailedError("ALTER TABLE x", "syntax error")).temporary
        assert not classify(EngineError("enum values can only be added")).temporary

    def test_a_concurrent_apply_is_temporary_and_a_plan_refusal_permanent(self) -> None:
        """ConflictError (another apply holds or overtook the project) retries; PlanRefusedError (a lock table
        too small, duplicates under a new unique index) waits for a new spec or a new server setting."""
        from kliv.stacks.errors import ConflictError, PlanRefusedError

        assert classify(ConflictError("another apply of Project d/p is running")).temporary
        refused = classify(PlanRefusedError("the plan takes about 25,000 locks", "set max_locks_per_transaction"))
        assert (refused.temporary, refused.ready.reason) == (False, "CannotApply")
        assert "25,000 locks" in refused.ready.message

    def test_unexpected_errors_retry_slowly(self) -> None:
        """A bug is retried, but not in a storm."""
        outcome = classify(KeyError("x"))
        assert outcome.temporary
        assert outcome.delay >= 8.0


def _status(ready: bool, reason: str) -> ObjectStatus:
    return ObjectStatus(conditions.ready(ready, reason, "m."), conditions.synced(ready, reason, "m."))


class TestSummary:
    """The Project's status.summary built from one reconcile's statuses."""

    def test_counts_and_names_the_objects_not_ready(self) -> None:
        """Objects without their own status take the fallback; not-Ready ones are listed with their reason."""
        result = ProjectResult(
            {("Table", "a"): _status(True, "Available"), ("Table", "b"): _status(False, "InvalidSpec")},
            _status(False, "WaitingForDependency"),
        )
        summary = summarize(result, [("Project", "p"), ("Table", "a"), ("Table", "b")])
        assert summary == {
            "objects": 3,
            "ready": 1,
            "notReady": ["Project/p: WaitingForDependency", "Table/b: InvalidSpec"],
        }

    def test_long_lists_are_capped(self) -> None:
        """At most SUMMARY_LIMIT names, while the counts stay exact."""
        waiting = _status(False, "Paused")
        objects = [("Table", f"t{i:02d}") for i in range(SUMMARY_LIMIT + 5)]
        summary = summarize(ProjectResult({}, waiting), objects)
        assert (summary["objects"], summary["ready"], len(summary["notReady"])) == (25, 0, SUMMARY_LIMIT)


class TestDanglingOrInvalid:
    """A reference to an object not there yet waits; any other "does not exist" is a spec error.

    Decided by the problem's code, not its wording: a policy naming a column that does not exist
    once waited for a dependency that could never come (retried every 2 s, forever).
    """

    def test_code_decides(self) -> None:
        from kliv.operator.reconciling import Reconciler

        def body(kind: str, name: str, spec: dict[str, object]) -> dict[str, object]:
            metadata: dict[str, object] = {"name": name, "namespace": "ns", "generation": 1}
            if kind == "Project":
                metadata["annotations"] = {"cloud.kliv.dev/paused": "true"}  # statuses only: no engine
            return {"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}

        ref = {"projectRef": {"name": "shop"}}
        bodies = [
            body("Project", "shop", {}),
            body("Table", "items", {**ref, "columns": [{"name": "id", "type": "uuid", "primaryKey": True}]}),
            body("TablePolicy", "typo", {**ref, "table": "items", "command": "select", "using": "colour = 'red'"}),
            body("TablePolicy", "early", {**ref, "table": "orders", "command": "select", "using": "true"}),
        ]
        result = asyncio.run(Reconciler(None).reconcile("ns", "shop", bodies))  # type: ignore[arg-type]
        assert result.status_of("TablePolicy", "typo").ready.reason == conditions.INVALID_SPEC
        assert result.status_of("TablePolicy", "early").ready.reason == conditions.WAITING_FOR_DEPENDENCY
