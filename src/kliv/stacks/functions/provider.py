"""The Function provider: validate, stage, switch (DESIGN.md, "Functions").

Called by the native engine while it plans and applies a project, on the one provider
contract (:mod:`kliv.stacks.contract`). Observing checks the module with Deno without
running it (:mod:`.checking`: a broken module is refused at plan, nothing deployed) and
compares the version it would make with the function's active one; applying stores the
artifact, adds the version (or reuses a kept one with the same code and settings) and
switches the active pointer, all inside the engine's control-database transaction that
records the resource and its audit event, so ``kliv serve`` (told on commit) never sees a
half-made version. A rollback (``kliv functions rollback``) pins a version until the spec
changes: the plan shows the pin and never undoes it. A removed Function is retired: no
longer served, its versions kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kliv.specs import Function, ProjectSpecs
from kliv.stacks.contract import ControlSession, Observation, Record, call
from kliv.stacks.errors import EngineError, InvalidSourceError, MissingValueError
from kliv.stacks.functions import artifacts, checking
from kliv.stacks.hashing import spec_hash
from kliv.stacks.plans import Change
from kliv.stacks.secrets import store

if TYPE_CHECKING:
    from kliv.stacks.functions.lambdas import LambdaTarget
    from kliv.stacks.secrets.keys import Keyring
    from kliv.stacks.secrets.provider import SecretValues

KIND = "Function"


def settings_of(function: Function) -> dict[str, Any]:
    """What a version runs with, besides its code (plain data: env values are not secrets)."""
    spec = function.spec
    return {
        "runtime": spec.runtime,
        "env": dict(spec.env),
        "secrets": sorted(spec.secrets),
        "auth": spec.http.auth,
        "timeoutSeconds": spec.timeout_seconds,
        "memoryMiB": spec.memory_mib,
        "schedule": spec.schedule,
    }


def url(api_url: str, namespace: str, project: str, route: str) -> str:
    """``<api_url>/functions/v1/<name>``, the api_url being the project's under ``kliv serve``."""
    return f"{api_url}/p/{namespace}/{project}/functions/v1/{route}"


class FunctionProvider:
    """Observes and deploys the Functions of a project."""

    kind = KIND
    in_database = False

    def __init__(
        self,
        control: ControlSession,
        api_url: str,
        secret_values: SecretValues | None = None,
        lambdas: LambdaTarget | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        """``secret_values``: where the ProjectSecrets' values come from (the secret provider's source),
        asked only whether a secret not stored yet will have one. ``lambdas``: deploy to AWS Lambda
        instead of kliv serve (its secrets' values are read from the store with ``keyring``)."""
        self.control = control
        self.secret_values = secret_values
        self.api_url = api_url.rstrip("/")
        self.lambdas = lambdas
        self.keyring = keyring
        self.target = "lambda" if lambdas is not None else "embedded"

    def observe(self, group: ProjectSpecs, applied: dict[str, Record]) -> list[Observation]:
        if not group.functions and not applied:
            return []
        control = self.control()
        present = {spec.resource.ref for spec in group.functions}
        found = [self._retired(ref, record) for ref, record in applied.items() if ref not in present]
        for spec in group.functions:
            try:
                found.append(self._one(control, group, spec.resource))
            except EngineError as exc:
                found.append(Observation.unplannable(spec.resource.ref, exc))
        return found

    def _outputs(self, namespace: str, project: str, route: str, version: int, sha: str) -> dict[str, str]:
        shown_url = url(self.api_url, namespace, project, route)
        if self.lambdas is not None:
            shown_url = self.lambdas.url(namespace, project, route)
        return {"url": shown_url, "version": str(version), "artifact": f"sha256:{sha}", "target": self.target}

    def _one(self, control: Any, group: ProjectSpecs, function: Function) -> Observation:
        namespace, project, name, route = group.namespace, group.name, function.name, function.function_name
        if function.spec.runtime == "nodejs20" and self.target == "embedded":
            raise InvalidSourceError(
                "runtime nodejs20 runs only on the lambda target (KLIV_FUNCTIONS_TARGET=lambda)",
                "write `runtime: deno` (it runs on both targets)",
                0,
                0,
                path="/spec/runtime",
            )
        self._secrets_ready(control, group, function)
        code = function.spec.source.inline
        checked = checking.check_cached(code)
        settings = settings_of(function)
        wanted = artifacts.digest(checked.sha256, settings)
        record = Record(KIND, name, f"{namespace}/{project}/{route}", spec_hash(function.spec), False)
        current = artifacts.active(control, namespace, project, name)
        kept = artifacts.versions(control, namespace, project, name)
        by_number = {v.version: v for v in kept}
        serving = by_number.get(current.version) if current is not None and not current.retired else None
        drift = None
        if self.lambdas is not None and serving is not None and serving.target == "lambda":
            drift = self.lambdas.drift(namespace, project, route, serving.external_version)
        if current is not None and serving is not None and current.route == route and drift is None:
            outputs = self._outputs(namespace, project, route, serving.version, serving.artifact)
            if serving.digest == wanted and serving.target == self.target:
                return Observation.unchanged(function.ref, outputs, record)
            if current.pinned_for == wanted:
                return Observation.unchanged(function.ref, {**outputs, "pinned": "rollback"}, record)
        same = [v for v in kept if v.digest == wanted and v.target == self.target]
        short = checked.sha256[:12]
        if same and drift is None:
            version = same[-1].version
            why = f"switch to kept version {version} (sha256 {short})"
        elif same:
            version = same[-1].version
            why = f"publish version {version} (sha256 {short}) again: {drift}"
        else:
            version = max(by_number, default=0) + 1
            why = f"deploy version {version} (sha256 {short})"
        if current is not None and current.route != route and not current.retired:
            why += f", now at /functions/v1/{route} (was {current.route})"
        steps = [call(f"functions: store artifact sha256:{short}, switch {route} to version {version} "
                      f"({self.target})")]  # fmt: skip
        if self.lambdas is not None:
            from kliv.stacks.functions.lambdas import ALIAS, physical

            lambda_name = physical(namespace, project, route)
            published = [] if same and drift is None else [
                call(f"lambda:UpdateFunctionCode/CreateFunction + PublishVersion {lambda_name}")]  # fmt: skip
            steps = [*published, call(f"lambda:UpdateAlias {lambda_name}:{ALIAS} -> version {version}"), *steps]
        detail = {
            "operation": "deploy", "namespace": namespace, "project": project, "name": name, "route": route,
            "source": code, "settings": settings, "kept": function.spec.versions_kept, "target": self.target,
            "publish": drift is not None,
        }  # fmt: skip
        action: Any = "update" if kept else "create"
        outputs = self._outputs(namespace, project, route, version, checked.sha256)
        return Observation(Change(function.ref, action, "safe", [why], steps, detail), outputs, record, bool(kept))

    def _secrets_ready(self, control: Any, group: ProjectSpecs, function: Function) -> None:
        """Wait (MissingValueError: WaitingForDependency) for a listed secret that has no stored version
        and whose source has no value yet: the function would start without it."""
        by_name = {s.resource.secret_name: s.resource for s in group.secrets}
        for name in function.spec.secrets:
            if store.latest(control, group.namespace, group.name, name) is not None:
                continue
            secret = by_name.get(name)
            if secret is None or secret.spec.generate is not None:
                continue  # made in this apply (generated), or caught by validation
            try:
                value = self.secret_values(secret) if self.secret_values is not None else None
            except EngineError:
                value = None
            if value is None:
                raise MissingValueError(
                    f"{function.ref}: waits for ProjectSecret {secret.name} ({name}): it has no value yet",
                    f"give {secret.ref} its value (its Kubernetes Secret, or the environment variable)",
                )

    def _retired(self, ref: str, record: Record) -> Observation:
        namespace, project, route = record.physical.split("/", 2)
        steps = [call(f"functions: retire {route} (no longer served; its versions are kept)")]
        if self.lambdas is not None:
            from kliv.stacks.functions.lambdas import ALIAS, physical

            steps.append(call(f"lambda:DeleteAlias {physical(namespace, project, route)}:{ALIAS}"))
        detail = {"operation": "retire", "namespace": namespace, "project": project, "name": record.name,
                  "route": route}  # fmt: skip
        why = f"retire function {route}: no longer served (its versions are kept)"
        return Observation(Change(ref, "delete", "safe", [why], steps, detail), {}, None)

    def apply(self, ref: str, change: Change) -> dict[str, str]:
        """Deploy or retire, inside the engine's control-database transaction."""
        detail = change.detail
        control = self.control()
        namespace, project, name = str(detail["namespace"]), str(detail["project"]), str(detail["name"])
        route = str(detail["route"])
        if detail.get("operation") == "retire":
            if self.lambdas is not None:
                self.lambdas.retire(namespace, project, route)
            artifacts.retire(control, namespace, project, name)
            return {}
        code, settings = str(detail["source"]), dict(detail["settings"])
        target = str(detail.get("target", self.target))
        if target != self.target:
            raise EngineError(f"{ref}: planned for the {target} target, but this kliv deploys to {self.target}",
                              "plan again")  # fmt: skip
        external = None
        if self.lambdas is not None:
            external = self._on_lambda(control, namespace, project, name, route, code, settings,
                                       bool(detail.get("publish")))  # fmt: skip
        version, _ = artifacts.deploy(control, namespace, project, name, route, code, settings, target,
                                      int(detail.get("kept", 5)), external)  # fmt: skip
        return self._outputs(namespace, project, route, version.version, version.artifact)

    def _on_lambda(
        self,
        control: Any,
        namespace: str,
        project: str,
        name: str,
        route: str,
        code: str,
        settings: dict[str, Any],
        publish: bool,
    ) -> str:
        """Publish (or, for a kept version Lambda still has, only re-point ``live``); returns the
        version's ``<Lambda version>:<CodeSha256>``."""
        assert self.lambdas is not None
        wanted = artifacts.digest(artifacts.sha256(code), settings)
        kept = [v for v in artifacts.versions(control, namespace, project, name)
                if v.digest == wanted and v.target == "lambda" and v.external_version]  # fmt: skip
        if kept and not publish:
            external = str(kept[-1].external_version)
        else:
            secrets = {}
            for secret in settings.get("secrets", []):
                if self.keyring is None:
                    raise EngineError("KLIV_SECRET_KEY is not set: the function's secrets cannot be read",
                                      "set KLIV_SECRET_KEY")  # fmt: skip
                secrets[str(secret)] = store.reveal(control, self.keyring, namespace, project, str(secret))
            external = self.lambdas.deploy(namespace, project, route, code, settings, secrets)
        self.lambdas.switch(namespace, project, route, external)
        return external
