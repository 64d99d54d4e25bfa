"""What can go wrong in an engine, as exceptions the CLI maps to exit codes.

Raised by engines; the CLI turns them into exit 2 (refused), 3 (failed, nothing
changed) or 4 (failed after a partial change), and the operator decides temporary
versus permanent on these types in one place (:mod:`kliv.operator.outcomes`).
"""

from __future__ import annotations

from kliv.stacks.plans import Change


class EngineError(Exception):
    """An engine could not do its work; ``hint`` says how to fix it.

    ``code`` is the stable, machine-readable cause (the CLI's JSON, the operator, the admin
    UI and agents branch on it, never on the message's wording).
    """

    code = "engine-error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UnavailableError(EngineError):
    """The database server cannot be reached (temporary)."""

    code = "unavailable"


class ConflictError(UnavailableError):
    """Another apply of the same project is running, or ran since this plan (temporary: plan again)."""

    code = "conflict"


class AlreadyExistsError(EngineError):
    """A physical name (database) belongs to another object or to nobody we know."""

    code = "already-exists"


class RefusedError(EngineError):
    """The plan holds changes the safety gate refuses."""

    code = "data-loss"

    def __init__(self, changes: list[Change]) -> None:
        lines = [f"{c.resource}: {c.risk}: {'; '.join(s for s in c.summary if s)}" for c in changes]
        super().__init__(
            "the plan would lose data or weaken security:\n  " + "\n  ".join(lines),
            "review the plan, then re-run with --allow-data-loss",
        )
        self.changes = changes


# SQLSTATE class (or code) -> what to do: "fix the spec" only where the spec is the cause.
_HINTS = (
    ("23", "rows of the table do not satisfy the change: fix the data (or the spec), then apply again"),
    ("53", "the server ran out of resources; for `out of shared memory` raise max_locks_per_transaction, "
           "or apply with --split"),
    ("55P03", "an application transaction holds the table: apply again when it has finished"),
    ("57014", "the statement was cancelled (a statement_timeout or an operator): apply again"),
    ("57P", "the server is shutting down or restarting: apply again when it is back"),
    ("08", "the connection to the server was lost: apply again"),
    ("40", "the apply collided with another transaction: apply again"),
)  # fmt: skip


class ApplyFailedError(EngineError):
    """A statement failed. ``rolled_back``: nothing of the project's transaction stayed; ``changed``
    lists what had committed before the failure (steps outside that transaction, or the whole
    transaction when an online index build failed after it)."""

    code = "apply-failed"

    def __init__(
        self, statement: str, reason: str, rolled_back: bool = True, sqlstate: str = "", changed: tuple[str, ...] = ()
    ) -> None:
        if changed:
            state = "after changes that stay applied"
        else:
            state = "the transaction was rolled back" if rolled_back else "nothing was changed"
        message = f"Postgres rejected a statement ({state}): {reason}\n  in: {statement}"
        if changed:
            message += "\n  already applied:\n    " + "\n    ".join(item[:300] for item in changed)
        hint = next((h for prefix, h in _HINTS if sqlstate.startswith(prefix)), "fix the spec")
        super().__init__(message, hint)
        self.statement = statement
        self.reason = reason
        self.sqlstate = sqlstate
        self.rolled_back = rolled_back
        self.changed = changed

    @property
    def partial(self) -> bool:
        """Whether something changed before the failure (the CLI's exit 4)."""
        return bool(self.changed)

    def after(self, changed: tuple[str, ...]) -> ApplyFailedError:
        """The same failure, knowing what had committed before it."""
        return ApplyFailedError(self.statement, self.reason, self.rolled_back and not changed, self.sqlstate, changed)

    @property
    def public(self) -> str:
        """What may go into events and logs: the SQLSTATE and the statement, not Postgres' text,
        which can quote row data (``invalid input syntax for type integer: "<a value>"``)."""
        state = "partly applied" if self.changed else "rolled back"
        return f"SQLSTATE {self.sqlstate or 'unknown'} ({state}) in: {self.statement[:500]}"


class PlanRefusedError(EngineError):
    """A change no plan makes, or one that would fail half-way: refused at plan, nothing changed (exit 2)."""

    code = "plan-refused"


class ExternalFailedError(EngineError):
    """A bucket or secret could not be changed; the database part of the apply stays applied."""

    code = "external-failed"

    def __init__(
        self, resource: str, reason: str, hint: str = "", temporary: bool = False, changed: tuple[str, ...] = ()
    ) -> None:
        message = f"{resource}: {reason}"
        if changed:
            message += "\n  already applied:\n    " + "\n    ".join(item[:300] for item in changed)
        super().__init__(message, hint or "fix the cause, then apply again")
        self.resource = resource
        self.changed = changed  # what this apply changed before (the database part, other resources)
        self.reason = reason
        self.temporary = temporary

    @classmethod
    def wrap(cls, resource: str, error: BaseException) -> ExternalFailedError:
        """An error raised by a provider, kept to what may be shown: never a value it was handling."""
        if isinstance(error, EngineError):
            return cls(resource, error.message, error.hint, isinstance(error, UnavailableError))
        if isinstance(error, OSError):
            return cls(resource, f"{type(error).__name__} (errno {error.errno})", temporary=True)
        return cls(resource, f"unexpected {type(error).__name__}", temporary=True)

    @property
    def public(self) -> str:
        return self.message[:500]


class MissingValueError(EngineError):
    """A secret's source (environment variable, Kubernetes Secret) has no value yet: temporary."""

    code = "missing-value"


class SourceRefusedError(EngineError):
    """A source this caller never reads (the operator and `valueFrom.env`): refused."""

    code = "source-refused"


class StoredPlanError(EngineError):
    """A stored plan cannot be applied: unknown, expired, applied already, or reality or the specs
    moved since it was made (``code`` says which). Nothing was applied; plan again."""

    def __init__(self, code: str, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.code = code


class InvalidSourceError(EngineError):
    """A function's module is refused at plan (Deno's message; ``line``/``column`` inside the
    source, 0 when the problem has no place): nothing is deployed. The spec is the cause."""

    code = "invalid-source"

    def __init__(self, message: str, hint: str, line: int, column: int, path: str = "/spec/source/inline") -> None:
        where = f" (line {line}, column {column})" if line > 0 else ""
        super().__init__(f"{path}{where}: {message}", hint)
        self.path = path
        self.line = line
        self.column = column
        self.deno_message = message
