"""The Kubernetes Secrets a ProjectSecret may read (`valueFrom.secretKeyRef`), as the operator sees them.

Made by the composition root (``kliv operator``, the tests) before the engine, so that the secret
provider is constructed with :meth:`ClusterSecrets.value` as its source of values; the handlers keep
it current from their watch on core v1 Secrets (:mod:`kliv.operator.handlers`).
"""

from __future__ import annotations

import base64
import dataclasses

from kliv.specs import ProjectSecret
from kliv.stacks.errors import SourceRefusedError

SecretKey = tuple[str, str]  # (namespace, name)


@dataclasses.dataclass
class ClusterSecrets:
    """Kubernetes Secrets by (namespace, name): their `data`, base64 as the API gives it."""

    data: dict[SecretKey, dict[str, str]] = dataclasses.field(default_factory=dict)

    def update(self, key: SecretKey, data: dict[str, str] | None) -> bool:
        """Record a Secret's data (None: deleted); True when it changed."""
        if data is None:
            return self.data.pop(key, None) is not None
        if self.data.get(key) == data:
            return False
        self.data[key] = data
        return True

    def value(self, secret: ProjectSecret) -> str | None:
        """A ProjectSecret's source value: a key of a Kubernetes Secret of its namespace.

        Never the operator's own environment: `valueFrom.env` would let anyone who can
        create a ProjectSecret copy the operator's credentials (KLIV_SECRET_KEY,
        KLIV_DATABASE_URL) into a project.
        """
        value_from = secret.spec.value_from
        if value_from is None:
            return None
        if value_from.env is not None:
            raise SourceRefusedError(
                f"{secret.ref}: valueFrom.env is read by the `kliv` CLI only; the operator never hands out "
                "its own environment",
                "in a cluster use `valueFrom: {secretKeyRef: {name, key}}`",
            )
        assert value_from.secret_key_ref is not None
        data = self.data.get((secret.namespace, value_from.secret_key_ref.name)) or {}
        encoded = data.get(value_from.secret_key_ref.key)
        if encoded is None:
            return None
        try:
            return base64.b64decode(encoded, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
