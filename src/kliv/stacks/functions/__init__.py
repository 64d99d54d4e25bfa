"""Functions: checked, stored content-addressed and switched in the control database.

The provider (:mod:`.provider`) is built from the kind registry; ``kliv serve``
(:mod:`kliv.serving`) runs what :mod:`.artifacts` holds.
"""
