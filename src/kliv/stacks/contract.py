"""What engines and providers hand each other: today, the shape of outputs.

The one provider contract (observe returns data, the planned change is data, ``apply(ref,
change)`` is idempotent) is issue 12's work; the protocols written here before it nothing
implemented but an adapter nothing used, and are gone. Imported by the native engine.
"""

from __future__ import annotations

Outputs = dict[str, dict[str, str]]  # resource ref (Kind/namespace/name) -> outputs
