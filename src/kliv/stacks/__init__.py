"""Engines that make reality match specs: desired state, plans, apply.

Public API: :class:`Plan`, :class:`Change`, :class:`Step` (the data a plan is),
the engine errors, the :class:`Engine` protocol with the :class:`Prepared` plan it
returns, and :class:`PostgresEngine` (the native engine). Kinds beside the
database are providers on the one contract (:mod:`kliv.stacks.contract`),
registered once in :mod:`kliv.stacks.registry`.
"""

from kliv.stacks.engines import Engine, Prepared
from kliv.stacks.errors import AlreadyExistsError, ApplyFailedError, EngineError, RefusedError, UnavailableError
from kliv.stacks.plans import Change, Plan, Step
from kliv.stacks.postgres.engine import PostgresEngine
from kliv.stacks.postgres.planning import PostgresPrepared

__all__ = [
    "AlreadyExistsError",
    "ApplyFailedError",
    "Change",
    "Engine",
    "EngineError",
    "Plan",
    "PostgresEngine",
    "PostgresPrepared",
    "Prepared",
    "RefusedError",
    "Step",
    "UnavailableError",
]
