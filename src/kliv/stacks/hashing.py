"""The hash of a spec that says whether it changed since the last apply (atlas-operator's idea:
unchanged desired state, no work). Used by every provider and recorded in the inventory."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel


def spec_hash(model: BaseModel) -> str:
    """A short hash of a spec model (pydantic's Rust serializer: fast, field order fixed by the model)."""
    return hashlib.sha256(model.model_dump_json().encode()).hexdigest()[:16]
