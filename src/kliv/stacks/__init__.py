"""Engines that make reality match specs: desired state, plans, apply.

Public API: :class:`Plan`, :class:`Change`, :class:`Step` (the data a plan is),
the engine errors, and :class:`PostgresEngine` (the native engine for
projects, tables and policies). Providers for buckets, secrets and functions,
and the Pulumi engine, will sit beside it behind the same plan shape.
"""

from kliv.stacks.errors import AlreadyExistsError, ApplyFailedError, EngineError, RefusedError, UnavailableError
from kliv.stacks.plans import Change, Plan, Step
from kliv.stacks.postgres.engine import PostgresEngine, Prepared

__all__ = [
    "AlreadyExistsError",
    "ApplyFailedError",
    "Change",
    "EngineError",
    "Plan",
    "PostgresEngine",
    "Prepared",
    "RefusedError",
    "Step",
    "UnavailableError",
]
