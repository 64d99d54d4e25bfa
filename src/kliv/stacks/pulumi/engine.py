"""The Pulumi engine: the native engine's desired state run through the Pulumi Automation API.

Built by the CLI's composition root (``KLIV_ENGINE=pulumi`` or ``--engine pulumi``) and the
operator, for the same :class:`~kliv.stacks.engines.Engine` protocol as the native engine:
every method blocks (the operator calls them through ``asyncio.to_thread``), and the
Automation API's own calls (``preview``, ``up``, ``destroy``: subprocesses of the ``pulumi``
CLI) run inside them. One stack per project, ``<namespace>.<project>``, whose program is
declared by :mod:`.declaring`; its preview becomes the plan (:mod:`.previewing`), gated and
audited as the native engine's. The native engine is kept beside it: it observes reality
for the plan's steps and risks (read-only), keeps the control database (inventory, events,
statuses) and is what kliv's dynamic providers run.

Without the ``pulumi`` CLI on PATH the engine cannot be built: :class:`PulumiMissingError`
(exit 3), raised before anything connects, so nothing changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import os
import shutil
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg

from kliv.specs import ProjectSpecs
from kliv.stacks import events, runs
from kliv.stacks.engines import Prepared
from kliv.stacks.errors import (
    AlreadyExistsError,
    ConflictError,
    EngineError,
    ExternalFailedError,
    PlanRefusedError,
)
from kliv.stacks.plans import Plan
from kliv.stacks.postgres import inventory, planning
from kliv.stacks.postgres.engine import PostgresEngine
from kliv.stacks.postgres.planning import PostgresPrepared
from kliv.stacks.pulumi.declaring import Backends, Program, declare
from kliv.stacks.pulumi.previewing import UNATTRIBUTED, acting_steps, forgotten, held_deletes, protected, translate
from kliv.stacks.pulumi.program import Connection, inline

if TYPE_CHECKING:
    from kliv.stacks.postgres.deleting import Deletion
    from kliv.stacks.providers import ProviderOptions
    from kliv.stacks.statuses import ObjectState

PROJECT = "kliv"  # the Pulumi project every stack belongs to


class PulumiMissingError(EngineError):
    """The ``pulumi`` CLI is not installed: the Pulumi engine cannot run (nothing was changed)."""

    code = "pulumi-missing"


def versions() -> dict[str, str]:
    """The versions the CLI and plugins must match: the installed SDKs'."""
    return {name: metadata.version(name) for name in ("pulumi", "pulumi-postgresql", "pulumi-aws")}


def pulumi_command() -> Any:
    """The one ``PulumiCommand`` of a process (it runs ``pulumi version`` once)."""
    if shutil.which("pulumi") is None:
        found = versions()
        raise PulumiMissingError(
            "the Pulumi engine needs the `pulumi` CLI on PATH, and it is not there; nothing was changed",
            f"install the Pulumi CLI {found['pulumi']} (https://get.pulumi.com/releases/sdk/pulumi-v{found['pulumi']}"
            f"-linux-x64.tar.gz), then `pulumi plugin install resource postgresql {found['pulumi-postgresql']}` "
            f"(and `aws {found['pulumi-aws']}` for S3, Secrets Manager or Lambda; docs/pulumi.md); or use the "
            "native engine (unset KLIV_ENGINE, or --engine native)",
        )
    from pulumi import automation
    from semver import VersionInfo

    try:  # a CLI older than the SDK may not understand what the SDK asks of it
        return automation.PulumiCommand(version=VersionInfo.parse(versions()["pulumi"]))
    except automation.errors.InvalidVersionError as exc:
        raise PulumiMissingError(
            f"the `pulumi` CLI on PATH is too old for kliv's Pulumi SDK: {exc}; nothing was changed",
            f"install the Pulumi CLI {versions()['pulumi']} (docs/pulumi.md)",
        ) from None


def default_backend() -> str:
    from kliv.stacks import embedded

    return f"file://{embedded.data_home() / 'pulumi'}"


def passphrase(secret_key: str) -> str:
    """The stacks' passphrase, derived from KLIV_SECRET_KEY (the key itself never reaches the CLI)."""
    return hmac.new(secret_key.encode(), b"kliv pulumi passphrase v1", hashlib.sha256).hexdigest()


@dataclasses.dataclass
class PulumiPrepared(Prepared):
    """A project's plan as the Pulumi preview gave it, with the native plan and the program."""

    native: PostgresPrepared | None = None
    program: Program | None = None
    group: ProjectSpecs | None = None
    steps: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (URN, op) the preview showed
    engine: ClassVar[str] = "pulumi"


class PulumiEngine:
    """Plans and applies projects as Pulumi stacks; the control database is the native engine's."""

    def __init__(
        self,
        admin_url: str,
        options: ProviderOptions,
        backend: str | None = None,
        application_name: str = "kliv",
        command: Any = None,
    ) -> None:
        self.command = command if command is not None else pulumi_command()  # first: before anything connects
        if not options.secret_key:
            raise EngineError("the Pulumi engine keeps its stacks' secrets with KLIV_SECRET_KEY, which is not set",
                              "set KLIV_SECRET_KEY (kliv up keeps one for the embedded setup)")  # fmt: skip
        self.native = PostgresEngine(admin_url, application_name, options)
        self.admin_url = admin_url
        self.options = options
        self.backend = backend or default_backend()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # -- what the CLI uses of an engine beside the protocol -------------------------------------

    def control_session(self) -> psycopg.Connection[Any]:
        return self.native.control_session()

    def admin_session(self) -> psycopg.Connection[Any]:
        return self.native.admin_session()

    def close(self) -> None:
        self.native.close()

    def record_statuses(self, namespace: str, project: str, states: list[ObjectState], by: str) -> int:
        return self.native.record_statuses(namespace, project, states, by)

    def report_drift(self, prepared: PulumiPrepared, actor: str) -> list[str]:
        return self.native.report_drift(prepared.native, actor) if prepared.native else []

    # -- stacks -----------------------------------------------------------------------------------

    def _lock(self, stack: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(stack, threading.Lock())

    def connection(self, group: ProjectSpecs | None = None) -> Connection:
        """What the program's providers connect with; ``group``: whose AWS secret values to read."""
        from psycopg.conninfo import conninfo_to_dict

        from kliv.stacks.secrets.provider import generate

        parts = conninfo_to_dict(self.admin_url)
        aws = _aws_credentials() if any(b == "aws" for b in dataclasses.astuple(self.backends())) else ("", "", "")
        _WITHHELD.update(v for v in aws if v)
        values = {}
        for spec in group.secrets if group is not None else []:
            secret = spec.resource
            if secret.spec.generate is None:
                value = self.options.secret_values(secret)
            else:  # the postgres store's provider generates its own, once
                value = generate(secret) if self.options.secret_store == "aws" else None
            if value is not None:
                values[secret.ref] = value
        return Connection(
            host=str(parts.get("host") or "127.0.0.1"), port=int(parts.get("port") or 5432),
            username=str(parts.get("user") or "postgres"), password=str(parts.get("password") or ""),
            sslmode=str(parts.get("sslmode") or "prefer"), sslrootcert=str(parts.get("sslrootcert") or ""),
            admin_url=self.admin_url, options=self._plain_options(),
            aws_access_key=aws[0], aws_secret_key=aws[1], aws_token=aws[2],
            aws_endpoints={k: v for k, v in (("s3", self.options.s3_endpoint),
                                              ("secretsmanager", self.options.secrets_endpoint),
                                              ("lambda", self.options.lambda_endpoint)) if v},
            secret_values=values, function_secrets=self._function_secrets(group, values),
        )  # fmt: skip

    def _function_secrets(self, group: ProjectSpecs | None, values: dict[str, str]) -> dict[str, dict[str, str]]:
        """The values of the secrets each Lambda function reads, by function ref: from the AWS store's
        sources (``values``), or revealed from the postgres store (a secret not stored yet is left
        out until the next apply)."""
        if group is None or self.options.functions_target != "lambda":
            return {}
        by_name = {spec.resource.secret_name: spec.resource.ref for spec in group.secrets}
        keyring = self.options.keyring()
        found: dict[str, dict[str, str]] = {}
        for spec in group.functions:
            wanted = found.setdefault(spec.resource.ref, {})
            for name in spec.resource.spec.secrets:
                if by_name.get(name) in values:
                    wanted[name] = values[by_name[name]]
                elif keyring is not None:
                    from kliv.stacks.secrets import store

                    with contextlib.suppress(EngineError, LookupError):
                        wanted[name] = store.reveal(self.native.control_session(), keyring, group.namespace,
                                                    group.name, name)  # fmt: skip
        return found

    def _plain_options(self) -> dict[str, Any]:

        # The keys go to the dynamic-provider process through its environment (stack()), never into
        # inputs, which the state keeps.
        withheld = ("secret_values", "secret_key", "previous_secret_keys")
        options = {k: v for k, v in dataclasses.asdict(self.options).items() if k not in withheld}
        options["buckets_dir"] = str(options["buckets_dir"])
        return options

    def backends(self) -> Backends:
        options = self.options
        return Backends(
            buckets="aws" if options.s3_endpoint else "embedded",
            secrets="aws" if options.secret_store == "aws" else "embedded",
            functions="aws" if options.functions_target == "lambda" else "embedded",
            region=options.region or "us-east-1",
            lambda_role=options.lambda_role or "",
        )

    def cli_environment(self) -> dict[str, str]:
        """What the engine adds to the CLI's environment (and so its plugins' and the dynamic providers')."""
        assert self.options.secret_key is not None
        return {
            "PULUMI_CONFIG_PASSPHRASE": passphrase(self.options.secret_key),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            # kliv's dynamic providers run in the Python kliv runs in (the CLI's shim reads this).
            "PULUMI_PYTHON_CMD": sys.executable,
            # ... and read the keys from their environment (converging.native_engine).
            "KLIV_SECRET_KEY": self.options.secret_key,
            "KLIV_SECRET_PREVIOUS_KEYS": ",".join(self.options.previous_secret_keys),
        }

    def stack(self, program: Program, group: ProjectSpecs | None = None) -> Any:
        """The project's stack (made at first use), its program ``program`` (of ``group``)."""
        from pulumi import automation

        from kliv.stacks import embedded

        assert self.options.secret_key is not None
        env = self.cli_environment()
        from psycopg.conninfo import conninfo_to_dict

        password = str(conninfo_to_dict(self.admin_url).get("password") or "")  # a URL's or a DSN's, as libpq reads it
        _WITHHELD.update(v for v in (*env.values(), *self.options.previous_secret_keys, self.admin_url, password,
                                     self.backend) if v and v != sys.executable)  # fmt: skip
        if self.backend.startswith("file://"):
            Path(self.backend[len("file://") :]).mkdir(parents=True, exist_ok=True)
        settings = automation.ProjectSettings(name=PROJECT, runtime="python",
                                              backend=automation.ProjectBackend(url=self.backend))  # fmt: skip
        # A work folder of kliv's own per stack (the SDK's default is a new temporary folder per call,
        # never removed): its Pulumi.yaml names the backend.
        work = embedded.data_home() / "pulumi-work" / program.stack
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        workspace = automation.LocalWorkspaceOptions(work_dir=str(work), pulumi_command=self.command,
                                                     project_settings=settings, secrets_provider="passphrase",
                                                     env_vars=env)  # fmt: skip
        stack = automation.create_or_select_stack(
            stack_name=program.stack,
            project_name=PROJECT,
            program=inline(program, self.connection(group)),
            opts=workspace,
        )
        stack.set_config("pulumi:disable-default-providers[0]", automation.ConfigValue("*"), path=True)
        return stack

    def _preview(self, program: Program, group: ProjectSpecs) -> tuple[Any, list[dict[str, Any]]]:
        """The stack and the engine events of its preview (refreshed: kliv's dynamic providers read
        reality). Protected resources the program no longer declares are excluded from the preview,
        which Pulumi would refuse, and their delete steps added from the state's flags."""
        found: list[dict[str, Any]] = []
        stack = self.stack(program, group)
        with _translating_errors():
            state = (stack.export_stack().deployment or {}).get("resources", [])
            held, deletes = held_deletes(state, program)
            stack.preview(on_event=lambda event: found.append(_as_json(event)), color="never", refresh=True,
                          exclude=held or None)  # fmt: skip
        return stack, [*found, *deletes]

    # -- plan and apply -----------------------------------------------------------------------------

    def plan(self, group: ProjectSpecs, split: bool = False) -> PulumiPrepared:
        """The native plan of ``group`` (read-only), its program, and the preview of that program."""
        if group.functions and self.options.functions_target == "lambda" and not self.options.lambda_role:
            raise EngineError("the lambda target needs the functions' execution role; nothing was planned",
                              "set KLIV_LAMBDA_ROLE to an IAM role ARN Lambda may assume")  # fmt: skip
        native = self.native.plan(group, split)
        program = declare(group, native.outputs, self.backends())
        with self._lock(program.stack):
            _, previewed = self._preview(program, group)
            plan = translate(previewed, program, native.plan, group.namespace)
        return PulumiPrepared(group.namespace, group.name, plan, native.changed_specs, native.engine_outputs,
                              native.in_database, native.externals, native=native, program=program,
                              group=group, steps=acting_steps(previewed))  # fmt: skip

    def apply(self, prepared: PulumiPrepared, allow_data_loss: bool = False, actor: str = "kliv") -> Plan:
        """Gate, then ``up`` (after ``pulumi state unprotect`` of exactly what an allowed data-loss
        change deletes or replaces); audited and recorded as the native engine records."""
        plan, namespace, project = prepared.plan, prepared.namespace, prepared.project
        native, program, group = prepared.native, prepared.program, prepared.group
        if native is None or program is None or group is None:
            raise TypeError("a PulumiPrepared is made by PulumiEngine.plan")
        refused = plan.refused(allow_data_loss)
        if refused:
            runs.refuse(self.native.control_session, namespace, project, refused, actor)
        unattributed = [c for c in plan.changes if c.detail.get(UNATTRIBUTED)]
        if unattributed:
            why = "; ".join(unattributed[0].summary)
            raise PlanRefusedError(f"{unattributed[0].resource}: {why}; nothing was applied",
                                   "install the Pulumi CLI version the SDK pins (docs/pulumi.md)")  # fmt: skip
        if plan.empty and not prepared.spec_hashes_changed:
            return plan
        control = self.native.control_session()
        try:
            inventory.claim(control, namespace, project, native.desired.name)
        except inventory.AlreadyClaimedError as exc:
            raise AlreadyExistsError(str(exc), "give this Project another `spec.database.name`") from None
        if not inventory.project_lock(control, namespace, project):
            raise ConflictError(f"another apply of Project {namespace}/{project} is running; nothing was applied",
                                "run again once it has finished")  # fmt: skip
        try:
            with self._lock(program.stack):
                stack, previewed = self._preview(program, group)
                again = translate(previewed, program, native.plan, namespace)
                if _triples(again) != _triples(plan) or acting_steps(previewed) != prepared.steps:
                    raise ConflictError(f"Project {namespace}/{project} moved since this plan; nothing was applied",
                                        "plan again: the plan must start from what exists now")  # fmt: skip
                for urn in protected(previewed):  # the gate allowed them: Pulumi would refuse while protected
                    self._state(stack, program, "unprotect", urn)
                for urn in forgotten(previewed, native.plan, namespace):  # kept in reality, gone from the stack
                    # With what the state says depends on it (policies on a renamed table's old
                    # resource): the up makes them again under the program's resources.
                    self._state(stack, program, "delete", urn, "--target-dependents")
                try:
                    with _translating_errors():
                        stack.up(color="never", refresh=True)
                except ConflictError:
                    raise  # a lock taken by another update: nothing was applied (temporary)
                except EngineError as exc:
                    # Events say what failed, never the CLI's output: it can quote Postgres' errors, and row data.
                    failed = events.for_plan(plan, namespace, project, "failed", actor, error="pulumi up failed")
                    with control.transaction():
                        inventory.enqueue(control, namespace, project, failed)
                    raise ExternalFailedError(
                        f"Project/{namespace}/{project}",
                        exc.message,
                        "the stack's state says what was made: `kliv plan` again shows what remains",
                        changed=("pulumi up is not transactional: some of the plan may be applied",),
                    ) from None
            self._record(native, plan, actor)
        finally:
            with contextlib.suppress(psycopg.Error):
                inventory.project_unlock(self.native.control_session(), namespace, project)
        return plan

    def _state(self, stack: Any, program: Program, verb: str, *target: str) -> None:
        """``pulumi state unprotect|delete`` on the stack's state only (never on reality)."""
        with _translating_errors():
            self.command.run(["state", verb, *target, "--stack", program.stack, "--yes"], stack.workspace.work_dir,
                             stack.workspace.env_vars)  # fmt: skip

    def _record(self, native: PostgresPrepared, plan: Plan, actor: str) -> None:
        namespace, project = native.namespace, native.project
        applied = events.for_plan(plan, namespace, project, "applied", actor)
        applied += runs.spec_only_events(native, {c.resource for c in plan.changes if c.action != "noop"}, actor)
        control = self.native.control_session()
        database = self.native.database_session(native.desired.name)
        fingerprints: dict[str, list[str | None]] = {}
        if database is not None:
            fingerprints, _ = planning.applied_fingerprints(database, dataclasses.replace(native, touched=None))
        inventory.record(control, namespace, project, fingerprints, native.resources, plan.to_json(), events=applied)

    # -- deleting a project ---------------------------------------------------------------------

    def plan_deletion(self, namespace: str, project: str, database: str, drop: bool) -> Deletion:
        return self.native.plan_deletion(namespace, project, database, drop)

    def apply_deletion(self, deletion: Deletion, allow_data_loss: bool, actor: str) -> Plan:
        """Gated as any plan; then ``pulumi destroy`` (drop) or ``pulumi stack rm`` (forget: the
        resources stay), and the native engine's record of the project goes the same way."""
        refused = deletion.plan.refused(allow_data_loss)
        if refused:
            runs.refuse(self.native.control_session, deletion.namespace, deletion.project, refused, actor)
        program = Program(f"{deletion.namespace}.{deletion.project}", ())
        with self._lock(program.stack):
            stack = self.stack(program)
            if deletion.drop:
                from kliv.stacks import registry
                from kliv.stacks.pulumi.declaring import ref_of

                self._state(stack, program, "unprotect", "--all")
                # What outlives its Project (a bucket: its objects are the application's) is forgotten,
                # never destroyed, as the native deletion plan says.
                with _translating_errors():
                    state = (stack.export_stack().deployment or {}).get("resources", [])
                for resource in state:
                    urn = str(resource.get("urn", ""))
                    kind = registry.kind_of(ref_of(urn.rsplit("::", 1)[-1], deletion.namespace))
                    if kind is not None and kind.on_project_drop == "outlives":
                        self._state(stack, program, "delete", urn)
                with _translating_errors():
                    stack.destroy(color="never")
            with _translating_errors():
                stack.workspace.remove_stack(program.stack, force=not deletion.drop)
        return self.native.apply_deletion(deletion, allow_data_loss=True, actor=actor)


def _aws_credentials() -> tuple[str, str, str]:
    """The AWS credentials boto3 finds (environment, profile, instance role), for the explicit aws
    provider: access key, secret key, session token; empty where there are none."""
    import boto3

    found = boto3.Session().get_credentials()
    if found is None:
        return "", "", ""
    frozen = found.get_frozen_credentials()
    return frozen.access_key or "", frozen.secret_key or "", frozen.token or ""


def _triples(plan: Plan) -> list[tuple[str, str, str]]:
    return sorted((c.resource, c.action, c.risk) for c in plan.changes if c.action != "noop")


def _as_json(event: Any) -> dict[str, Any]:
    """An SDK EngineEvent back in the engine's JSON format (what :func:`.previewing.translate` reads)."""
    if event.summary_event is not None:
        changes = event.summary_event.resource_changes or {}
        return {"summaryEvent": {"resourceChanges": {getattr(k, "value", k): v for k, v in changes.items()}}}
    pre = event.resource_pre_event
    if pre is None:
        return {}
    metadata = pre.metadata
    old = metadata.old or metadata.new
    state = {"protect": bool(getattr(old, "protect", False)),
             "retainOnDelete": bool(getattr(old, "retain_on_delete", False))} if old is not None else {}  # fmt: skip
    return {"resourcePreEvent": {"metadata": {"op": getattr(metadata.op, "value", metadata.op), "urn": metadata.urn,
                                              "type": metadata.type, "old": state,
                                              "keys": list(metadata.keys or [])}}}  # fmt: skip


@contextlib.contextmanager
def _translating_errors() -> Any:
    """The Automation API's errors as the engine's: a locked stack is temporary (ConflictError)."""
    from pulumi import automation

    try:
        yield
    except automation.errors.ConcurrentUpdateError:
        raise ConflictError("the project's Pulumi stack is locked by another update; nothing was applied",
                            "run again once it has finished; a stale lock: "
                            "`pulumi cancel --stack <namespace>.<project>` "
                            "with PULUMI_BACKEND_URL set to KLIV_PULUMI_BACKEND") from None  # fmt: skip
    except automation.errors.CommandError as exc:
        text = _redacted(str(exc))
        if "protect" in text and ("replace" in text or "delete" in text):
            raise PlanRefusedError(f"Pulumi refuses to replace a protected resource: {text[-1500:]}",
                                   "kliv never plans a replace of a stateful resource; undo the change "
                                   "(a database name, say) or move the data by hand") from None  # fmt: skip
        raise EngineError(f"pulumi failed: {text[-2000:]}", "the message above is the Pulumi CLI's") from None
    except RuntimeError as exc:
        if "summary event never found" in str(exc):
            raise EngineError(
                "the preview emitted an event this Pulumi SDK could not read; nothing was applied",
                "install the Pulumi CLI version that matches the SDK (docs/pulumi.md)",
            ) from None
        raise


_WITHHELD: set[str] = set()  # every passphrase, key and password this process handed the CLI


def _redacted(text: str) -> str:
    from kliv.stacks.events import mask

    for value in sorted(_WITHHELD | {os.environ.get("KLIV_SECRET_KEY", "")}, key=len, reverse=True):
        if len(value) >= 8:
            text = text.replace(value, "***")
    return mask(text)
