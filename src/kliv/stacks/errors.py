"""What can go wrong in an engine, as exceptions the CLI maps to exit codes.

Raised by engines; the CLI turns them into exit 2 (refused) or 3 (apply
failed), and the operator (later) decides temporary versus permanent on
these types in one place.
"""

from __future__ import annotations

from kliv.stacks.plans import Change


class EngineError(Exception):
    """An engine could not do its work; ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UnavailableError(EngineError):
    """The database server cannot be reached (temporary)."""


class ConflictError(UnavailableError):
    """Another apply of the same project is running, or ran since this plan (temporary: plan again)."""


class AlreadyExistsError(EngineError):
    """A physical name (database) belongs to another object or to nobody we know."""


class RefusedError(EngineError):
    """The plan holds changes the safety gate refuses."""

    def __init__(self, changes: list[Change]) -> None:
        lines = [f"{c.resource}: {c.risk}: {'; '.join(s for s in c.summary if s)}" for c in changes]
        super().__init__(
            "refused: the plan would lose data or weaken security:\n  " + "\n  ".join(lines),
            "review the plan, then re-run with --allow-data-loss",
        )
        self.changes = changes


class ApplyFailedError(EngineError):
    """A statement failed; the project's transaction was rolled back."""

    def __init__(self, statement: str, reason: str, rolled_back: bool = True, sqlstate: str = "") -> None:
        state = "the transaction was rolled back" if rolled_back else "earlier steps stay applied"
        super().__init__(f"Postgres rejected a statement ({state}): {reason}\n  in: {statement}", "fix the spec")
        self.statement = statement
        self.reason = reason
        self.sqlstate = sqlstate
        self.rolled_back = rolled_back

    @property
    def public(self) -> str:
        """What may go into events and logs: the SQLSTATE and the statement, not Postgres' text,
        which can quote row data (``invalid input syntax for type integer: "<a value>"``)."""
        state = "rolled back" if self.rolled_back else "partly applied"
        return f"SQLSTATE {self.sqlstate or 'unknown'} ({state}) in: {self.statement[:500]}"


class ExternalFailedError(EngineError):
    """A bucket or secret could not be changed; the database part of the apply stays applied."""

    def __init__(self, resource: str, reason: str, hint: str = "", temporary: bool = False) -> None:
        super().__init__(f"{resource}: {reason}", hint or "fix the cause, then apply again")
        self.resource = resource
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
