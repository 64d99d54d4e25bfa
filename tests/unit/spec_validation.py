"""The type of the ``validate`` fixture (defined in tests/conftest.py), for annotations."""

from __future__ import annotations

from collections.abc import Callable

from kliv.specs import Validation

Validate = Callable[..., Validation]
