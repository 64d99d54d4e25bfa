"""The Bucket provider: plans buckets against a backend (S3 or the filesystem), then applies.

Called by the native engine while it plans and applies a project (:mod:`kliv.stacks.contract`).
Physical names are claims: a bucket another kliv object claims, or one that
exists without kliv's tags, is refused (``AlreadyExists``). Specs are
untrusted, so a spec alone never takes a bucket over: adopting one needs the
Bucket's ``cloud.kliv.dev/adopt: "true"`` *and* the platform's consent for that
name (``kliv apply --adopt NAME``, ``KLIV_ADOPT_BUCKETS`` for the operator),
and is then a gated (``destructive``) change of the plan. A bucket kliv tagged
for another project is never adopted. Removing a Bucket with
``deletionPolicy: Delete`` drops it; if it holds objects that is data loss, and
the plan says how many.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any, Protocol

from kliv.specs import Bucket, ProjectSpecs
from kliv.stacks.buckets import desired
from kliv.stacks.buckets.desired import Settings
from kliv.stacks.contract import ControlSession, Observation, Record, call
from kliv.stacks.errors import AlreadyExistsError, EngineError
from kliv.stacks.hashing import spec_hash
from kliv.stacks.plans import Change, Step
from kliv.stacks.postgres import inventory
from kliv.stacks.refs import Ref

ADOPT = "adopt"
COUNT_LIMIT = 100_000


class Backend(Protocol):
    name: str

    def endpoint(self, bucket: str) -> str: ...
    def read(self, bucket: str) -> Settings | None: ...
    def create(self, bucket: str) -> None: ...
    def put_public(self, bucket: str, public: bool) -> None: ...
    def put_versioning(self, bucket: str, enabled: bool) -> None: ...
    def put_cors(self, bucket: str, settings: Settings) -> None: ...
    def put_lifecycle(self, bucket: str, settings: Settings) -> None: ...
    def put_tags(self, bucket: str, tags: dict[str, str]) -> None: ...
    def count_objects(self, bucket: str, limit: int = COUNT_LIMIT) -> int: ...
    def delete(self, bucket: str, purge: bool) -> None: ...


Operation = tuple[str, str, Step]  # (why, what the provider does: see BucketProvider.apply, the plan's step)


class BucketProvider:
    """Observes and converges the buckets of a project."""

    kind = "Bucket"
    in_database = False

    def __init__(self, backend: Backend, control: ControlSession, adoptable: Sequence[str] = ()) -> None:
        """``adoptable``: names (or shell patterns) of existing buckets the platform lets specs adopt."""
        self.backend = backend
        self.control = control
        self.adoptable = tuple(adoptable)

    def _may_adopt(self, physical: str) -> bool:
        return any(fnmatch.fnmatchcase(physical, pattern) for pattern in self.adoptable)

    def _adoption(self, bucket: Bucket, physical: str, tags: dict[str, str], namespace: str, project: str) -> str:
        """Why this foreign bucket may be adopted (the plan's first line), or AlreadyExists."""
        tagged = desired.kliv_project(tags)
        if tagged is not None and tagged != (namespace, project):
            raise AlreadyExistsError(
                f"bucket {physical} belongs to kliv Project {tagged[0]}/{tagged[1]}; "
                "a bucket is never adopted across projects",
                "give this Bucket another `spec.name` or metadata.name",
            )
        asked = bucket.annotation(ADOPT) == "true"
        if not asked or not self._may_adopt(physical):
            consent = f"--adopt {physical}` (CLI) or KLIV_ADOPT_BUCKETS={physical} (operator)"
            raise AlreadyExistsError(
                f"bucket {physical} exists but was not created by kliv for {bucket.ref}; kliv never takes "
                "a bucket over on a spec's word"
                + ("" if not asked else ": the Bucket asks to adopt it, but the platform has not consented"),
                (
                    'to manage it from now on, annotate the Bucket with cloud.kliv.dev/adopt: "true" and '
                    f"have the platform consent with `kliv apply {consent}; or choose another name"
                )
                if not asked
                else f"the platform consents with `kliv apply {consent}; or choose another name",
            )
        return f"adopt bucket {physical}, which kliv did not create: its settings and objects come under {bucket.ref}"

    def observe(self, group: ProjectSpecs, applied: dict[str, Record]) -> list[Observation]:
        present = {spec.resource.ref for spec in group.buckets}
        # Buckets removed in this plan hand their name over to a spec that takes it (a renamed object).
        handed_over = {r.physical: ref for ref, r in applied.items() if ref not in present}
        taken: dict[str, str] = {}
        found = []
        for spec in group.buckets:
            bucket = spec.resource
            physical = bucket.bucket_name
            try:
                if physical in taken:
                    raise AlreadyExistsError(
                        f"bucket {physical} is also asked for by {taken[physical]}",
                        "give one of the two Buckets another `spec.name` or metadata.name",
                    )
                taken[physical] = bucket.ref
                found.append(self._one(group, bucket, physical, applied.get(bucket.ref), handed_over.get(physical)))
            except EngineError as exc:
                found.append(Observation.unplannable(bucket.ref, exc))
        for ref, record in applied.items():
            if ref not in present:
                found.append(self._removed(ref, record, set(taken)))
        return found

    def _claim(self, physical: str, ref: Ref, previous: Ref | None) -> None:
        owner = inventory.claimant(self.control(), self.kind, physical)
        if owner is not None and owner not in (ref, previous):
            raise AlreadyExistsError(
                f"bucket {physical} is already claimed by {owner.describe()}",
                "give this Bucket another `spec.name` or metadata.name",
            )

    def _one(
        self, group: ProjectSpecs, bucket: Bucket, physical: str, record: Record | None, previous: str | None
    ) -> Observation:
        """``previous``: the ref of a removed Bucket that claimed this name until now."""
        namespace, project = group.namespace, group.name
        self._claim(
            physical,
            Ref.parse(bucket.ref, project),
            Ref.parse(previous, project) if previous is not None else None,
        )
        wanted = desired.settings(namespace, project, bucket)
        backend = self.backend
        row = Record(self.kind, bucket.name, physical, spec_hash(bucket.spec), bucket.spec.deletion_policy == "Retain")
        outputs = desired.outputs(bucket, physical, backend.endpoint(physical), backend.name)
        observed = backend.read(physical)
        actions: list[Operation] = []
        adoption: str | None = None
        if observed is None:
            action: Any = "create"
            # Tagged at once: a bucket whose later settings fail is still recognised as ours.
            actions.append(
                (f"create bucket {physical}", "create", self._step("CreateBucket+PutBucketTagging", physical))
            )
            observed = Settings(None, False, (), (), wanted.tags)
        else:
            action = "update"
            tags = observed.tag_map()
            ours = (
                desired.owned_by(tags, namespace, project, bucket.name)
                or (record is not None and record.physical == physical)
                or (previous is not None and desired.owned_by(tags, namespace, project, previous.rsplit("/", 1)[1]))
            )
            if not ours:
                adoption = self._adoption(bucket, physical, tags, namespace, project)
        actions += self._settings(physical, wanted, observed)
        if not actions:
            return Observation.unchanged(bucket.ref, outputs, row)
        summary = [a[0] for a in actions]
        change = Change(
            bucket.ref,
            action,
            "safe" if adoption is None else "destructive",
            summary if adoption is None else [adoption, *summary],
            [a[2] for a in actions],
            {"bucket": physical, "operations": [a[1] for a in actions], "settings": wanted.to_json(),
             "outputs": outputs},
        )  # fmt: skip
        return Observation(change, outputs, row, exists=action == "update")

    def apply(self, ref: str, change: Change) -> dict[str, str]:
        """Make a planned bucket change: its operations in order, each idempotent."""
        detail = change.detail
        physical = str(detail["bucket"])
        if change.action == "delete":
            if "purge" in detail:
                # Planned empty: only the bucket goes, and objects that arrived since make it fail.
                self.backend.delete(physical, purge=bool(detail["purge"]))
            return {}
        wanted = Settings.from_json(detail["settings"])
        for operation in detail["operations"]:
            self._operate(str(operation), physical, wanted)
        return dict(detail["outputs"])

    def _operate(self, operation: str, physical: str, wanted: Settings) -> None:
        backend = self.backend
        if operation == "create":
            backend.create(physical)
            backend.put_tags(physical, wanted.tag_map())
        elif operation == "versioning":
            backend.put_versioning(physical, wanted.versioning)
        elif operation == "cors":
            backend.put_cors(physical, wanted)
        elif operation == "lifecycle":
            backend.put_lifecycle(physical, wanted)
        elif operation == "public":
            backend.put_public(physical, bool(wanted.public))
        elif operation == "tags":
            backend.put_tags(physical, wanted.tag_map())
        else:
            raise ValueError(f"unknown bucket operation {operation!r}")

    def _step(self, operation: str, physical: str, detail: str = "") -> Step:
        prefix = "s3" if self.backend.name == "s3" else "filesystem"
        return call(f"{prefix}:{operation} {physical}" + (f" ({detail})" if detail else ""))

    def _settings(self, physical: str, wanted: Settings, observed: Settings) -> list[Operation]:
        found: list[Operation] = []
        if wanted.versioning != observed.versioning:
            state = "Enabled" if wanted.versioning else "Suspended"
            found.append((
                f"{'enable' if wanted.versioning else 'suspend'} versioning",
                "versioning",
                self._step("PutBucketVersioning", physical, state),
            ))  # fmt: skip
        if wanted.cors != observed.cors:
            found.append((
                f"set {len(wanted.cors)} CORS rule{'s' * (len(wanted.cors) != 1)}",
                "cors",
                self._step("PutBucketCors" if wanted.cors else "DeleteBucketCors", physical),
            ))  # fmt: skip
        if wanted.lifecycle != observed.lifecycle:
            rules = ", ".join(f"{prefix or '*'} after {days} d" for prefix, days in wanted.lifecycle) or "none"
            found.append((
                f"set lifecycle rules: {rules}",
                "lifecycle",
                self._step("PutBucketLifecycleConfiguration", physical, rules),
            ))  # fmt: skip
        if wanted.public != observed.public:
            found.append((
                "make objects publicly readable" if wanted.public else "make the bucket private",
                "public",
                self._step("PutPublicAccessBlock+PutBucketPolicy" if wanted.public else
                           "DeleteBucketPolicy+PutPublicAccessBlock", physical),
            ))  # fmt: skip
        if wanted.tags != observed.tags:
            found.append((
                "set tags (namespace, project, spec hash, upload limits)",
                "tags",
                self._step("PutBucketTagging", physical),
            ))  # fmt: skip
        return found

    def _removed(self, ref: str, record: Record, claimed: set[str]) -> Observation:
        physical = record.physical
        backend = self.backend

        def forget(why: str) -> Observation:
            return Observation(Change(ref, "delete", "safe", [why], [], {"bucket": physical}), {}, None)

        if physical in claimed:
            return forget(f"forget bucket {physical}: another Bucket spec declares it now")
        if record.retain:
            return forget(f"forget bucket {physical} (deletionPolicy Retain: the bucket and its objects stay)")
        if backend.read(physical) is None:
            return forget(f"forget bucket {physical}: it no longer exists")
        objects = backend.count_objects(physical, COUNT_LIMIT)
        shown = f"{objects:,}" + ("+" if objects >= COUNT_LIMIT else "")
        if objects:
            why = f"delete bucket {physical} and its {shown} object{'s' * (objects != 1)} (deletionPolicy Delete)"
        else:
            why = f"delete empty bucket {physical} (deletionPolicy Delete)"
        step = self._step("DeleteBucket", physical)
        detail = {"bucket": physical, "purge": objects > 0}
        return Observation(Change(ref, "delete", "data-loss" if objects else "safe", [why], [step], detail), {}, None)
