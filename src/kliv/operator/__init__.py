"""The control plane's long-running side: the outbox relay now, the kopf operator next.

Public API: :class:`Relay` (outbox -> RabbitMQ, at least once, in order).
"""

from kliv.operator.relay import Relay

__all__ = ["Relay"]
