"""Kliv Cloud control plane: declarative project specs reconciled into real infrastructure.

The public surface is the `kliv` command (:mod:`kliv.cli`) and the packages
:mod:`kliv.specs` (the spec language) and :mod:`kliv.policies` (guardrails).
"""

__version__ = "0.1.0"
