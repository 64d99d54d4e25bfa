"""The kinds an engine manages, each registered once: its model, provider and what it means.

Read by the engine (which providers observe a project, what a dropped project leaves),
the operator (which kinds it reconciles, why one is not supported), ``kliv up`` (how an
output is shown) and the docs. Adding a kind is its spec module in :mod:`kliv.specs`
(listed in :data:`kliv.specs.KINDS`, the spec language's own registry), its provider
package in :mod:`kliv.stacks`, and one :class:`Kind` in :data:`KINDS`; docs/design.md
lists the rest (deploy manifests, settings for a new backend). A provider is built by its ``build`` function from a
:class:`Wiring` (its dependencies, passed to its constructor); provider modules
are imported there, lazily, so a command that needs no bucket never loads boto3.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

from kliv.specs import (
    Bucket,
    DatabaseFunction,
    EmailTemplate,
    Function,
    Project,
    ProjectSecret,
    Resource,
    Table,
    TablePolicy,
    Trigger,
)
from kliv.stacks.contract import ControlSession, DatabaseSession, Provider
from kliv.stacks.functions.artifacts import CLEANUP as FUNCTION_CLEANUP

if TYPE_CHECKING:
    from kliv.stacks.providers import ProviderOptions

# What deleting a Project with deletionPolicy Delete does to a resource of the kind.
OnProjectDrop = Literal["dropped", "lost", "outlives"]


@dataclasses.dataclass(frozen=True)
class Wiring:
    """What providers are built from: plain options and the engine's sessions."""

    options: ProviderOptions | None  # None: only kinds that need no options (email templates)
    control: ControlSession
    database: DatabaseSession


@dataclasses.dataclass(frozen=True)
class Kind:
    """One registered kind."""

    name: str
    model: type[Resource]
    # None: planned by the engine itself (the project database: Project, Table, TablePolicy).
    build: Callable[[Wiring], Provider | None] | None = None
    # Why no engine applies it yet (shown in plans, on the object's status); None: supported.
    not_supported: str | None = None
    on_project_drop: OnProjectDrop = "dropped"
    lost: str = ""  # with on_project_drop "lost": what is lost
    # Control-database rows of a dropped project's resources of this kind (SQL over
    # namespace and project, in that order), removed with the project's inventory.
    cleanup: str = ""
    shown: Callable[[Mapping[str, str]], str] | None = None  # its outputs, on one line of `kliv up`
    label: str = ""  # the word before ``shown``


def _templates(wiring: Wiring) -> Provider:
    from kliv.stacks.postgres.templates import TemplateProvider

    return TemplateProvider(wiring.database)


def _buckets(wiring: Wiring) -> Provider | None:
    from kliv.stacks.buckets.provider import BucketProvider

    options = wiring.options
    if options is None:
        return None
    return BucketProvider(options.bucket_backend(), wiring.control, options.adoptable_buckets)


def _secrets(wiring: Wiring) -> Provider | None:
    from kliv.stacks.secrets.provider import SecretProvider

    options = wiring.options
    if options is None:
        return None
    aws = None
    if options.secret_store == "aws":
        from kliv.stacks.secrets.aws import SecretsManagerStore

        aws = SecretsManagerStore(options.secrets_endpoint, options.region)
    return SecretProvider(wiring.control, options.secret_values, options.keyring_or_error, options.secret_store, aws)


def _functions(wiring: Wiring) -> Provider | None:
    from kliv.stacks.functions.provider import FunctionProvider

    options = wiring.options
    if options is None:
        return None
    lambdas = None
    if options.functions_target == "lambda":
        from kliv.stacks.functions.lambdas import LambdaTarget

        lambdas = LambdaTarget(options.lambda_endpoint, options.region, options.lambda_role)
    keyring = options.keyring_or_error()
    return FunctionProvider(wiring.control, options.api_url, options.secret_values, lambdas,
                            keyring if not isinstance(keyring, Exception) else None)  # fmt: skip


KINDS: tuple[Kind, ...] = (
    Kind("Project", Project),
    Kind("Table", Table, on_project_drop="lost", lost="its rows are lost"),
    Kind("TablePolicy", TablePolicy),
    Kind("DatabaseFunction", DatabaseFunction),
    Kind("Trigger", Trigger),
    Kind(
        "EmailTemplate",
        EmailTemplate,
        _templates,
        label="template",
        shown=lambda o: f"{o['template']} v{o['version']}  (kliv templates render)",
    ),
    Kind(
        "Bucket",
        Bucket,
        _buckets,
        on_project_drop="outlives",
        label="bucket",
        shown=lambda o: f"{o['bucket']}  {o['endpoint']}",
    ),
    Kind(
        "ProjectSecret",
        ProjectSecret,
        _secrets,
        on_project_drop="lost",
        lost="its stored versions are lost",
        cleanup="DELETE FROM secrets.versions WHERE namespace = %s AND project = %s",
        label="secret",
        shown=lambda o: f"{o['name']} v{o['version']} ({o['store']})",
    ),
    Kind(
        "Function",
        Function,
        _functions,
        on_project_drop="lost",
        lost="its deployed versions are lost",
        cleanup=FUNCTION_CLEANUP,
        label="function",
        shown=lambda o: f"{o['url']}  (version {o['version']})",
    ),
)

BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}
SUPPORTED = frozenset(kind.name for kind in KINDS if kind.not_supported is None)


def providers(wiring: Wiring) -> list[Provider]:
    """One provider per kind that has one, in registry order (the order their changes apply in)."""
    built = [kind.build(wiring) for kind in KINDS if kind.build is not None and kind.not_supported is None]
    return [provider for provider in built if provider is not None]


def kind_of(ref: str) -> Kind | None:
    """The registered kind of a ``Kind/namespace/name`` ref."""
    return BY_NAME.get(ref.split("/", 1)[0])
