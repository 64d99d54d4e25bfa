"""Buckets through the native engine: S3 (moto over HTTP) and the filesystem default.

Every scenario runs on both backends and both Postgres servers: create, update
every setting, drift repair, Retain and Delete, a bucket that is not ours, a
non-empty bucket whose deletion is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_services import client
from postgres_projects import Project

from kliv.stacks import RefusedError
from kliv.stacks.buckets.filesystem import OBJECTS, SETTINGS_FILE
from kliv.stacks.errors import ExternalFailedError

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: shop}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Bucket
metadata: {name: images}
spec:
  projectRef: {name: shop}
  public: true
  maxObjectSize: 5Mi
  allowedContentTypes: [image/png, image/jpeg]
  cors: [{allowedOrigins: ["https://shop.example"], allowedMethods: [GET, PUT], maxAgeSeconds: 600}]
  lifecycle: [{prefix: tmp/, expireAfterDays: 7}]
"""


class Backend:
    """Reads and pokes a bucket behind kliv's back, on S3 or the filesystem."""

    def __init__(self, project: Project, s3_url: str | None) -> None:
        self.project = project
        self.s3_url = s3_url
        self.s3 = client(s3_url, "s3") if s3_url else None

    def exists(self, bucket: str) -> bool:
        if self.s3 is None:
            return (self.project.buckets_dir / bucket).is_dir()
        return bucket in {b["Name"] for b in self.s3.list_buckets()["Buckets"]}

    def settings(self, bucket: str) -> dict[str, Any]:
        """public, versioning, cors origins, lifecycle and tags, as the backend holds them."""
        if self.s3 is None:
            raw = json.loads((self.project.buckets_dir / bucket / SETTINGS_FILE).read_text())
            return {"public": raw["public"], "versioning": raw["versioning"],
                    "origins": [o for r in raw["cors"] for o in r["origins"]],
                    "lifecycle": [(r["prefix"], r["days"]) for r in raw["lifecycle"]], "tags": raw["tags"]}  # fmt: skip
        s3 = self.s3
        try:
            policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        except s3.exceptions.ClientError:
            policy = None
        try:
            rules = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
        except s3.exceptions.ClientError:
            rules = []
        try:
            lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        except s3.exceptions.ClientError:
            lifecycle = []
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        return {
            "public": policy is not None and not block["BlockPublicPolicy"],
            "versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled",
            "origins": [o for r in rules for o in r["AllowedOrigins"]],
            "lifecycle": [(r["Filter"]["Prefix"], r["Expiration"]["Days"]) for r in lifecycle],
            "tags": {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]},
        }

    def objects(self, bucket: str) -> list[str]:
        if self.s3 is None:
            root = self.project.buckets_dir / bucket / OBJECTS
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
        return sorted(o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket).get("Contents", []))

    def untouched(self, bucket: str) -> bool:
        """Still as its owner left it: no settings or tags of kliv's, no public policy."""
        if self.s3 is None:
            return not (self.project.buckets_dir / bucket / SETTINGS_FILE).exists()
        try:
            self.s3.get_bucket_policy(Bucket=bucket)
        except self.s3.exceptions.ClientError:
            pass
        else:
            return False
        try:
            tags = self.s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
        except self.s3.exceptions.ClientError:
            tags = []
        return not tags

    def put_object(self, bucket: str, key: str) -> None:
        if self.s3 is None:
            path = self.project.buckets_dir / bucket / OBJECTS / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x89PNG")
        else:
            self.s3.put_object(Bucket=bucket, Key=key, Body=b"\x89PNG")

    def tamper(self, bucket: str) -> None:
        """Someone switches versioning on and drops the CORS rules by hand."""
        if self.s3 is None:
            path = self.project.buckets_dir / bucket / SETTINGS_FILE
            raw = json.loads(path.read_text())
            raw.update(versioning=True, cors=[])
            path.write_text(json.dumps(raw))
        else:
            self.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            self.s3.delete_bucket_cors(Bucket=bucket)

    def foreign(self, bucket: str) -> None:
        """A bucket made by someone else, without kliv's tags."""
        if self.s3 is None:
            (self.project.buckets_dir / bucket).mkdir(parents=True)
        else:
            self.s3.create_bucket(Bucket=bucket)


@pytest.fixture(params=["filesystem", "s3"])
def shop(request: pytest.FixtureRequest, project: Callable[[str | Path], Project]) -> tuple[Project, Backend]:
    """The shop project with one bucket, on one backend."""
    s3_url = request.getfixturevalue("aws_url") if request.param == "s3" else None
    created = project(SPECS).use(s3_url=s3_url)
    return created, Backend(created, s3_url)


def _bucket(created: Project, change: Callable[[dict[str, Any]], None]) -> None:
    created.edit("Bucket", "images", lambda d: change(d["spec"]))


class TestBuckets:
    """The Bucket lifecycle on S3 and on the filesystem."""

    def test_create_with_every_setting(self, shop: tuple[Project, Backend]) -> None:
        """A new bucket gets its settings and tags; outputs name it; a second plan is empty."""
        created, backend = shop
        plan = created.apply()
        [change] = [c for c in plan.changes if c.resource.startswith("Bucket/")]
        assert change.action == "create"
        assert "create bucket shop-images" in change.summary
        settings = backend.settings("shop-images")
        assert settings["public"] is True
        assert settings["versioning"] is False
        assert settings["origins"] == ["https://shop.example"]
        assert settings["lifecycle"] == [("tmp/", 7)]
        assert settings["tags"]["kliv:namespace"] == created.namespace
        assert settings["tags"]["kliv:project"] == "shop"
        assert settings["tags"]["kliv:max-object-size"] == str(5 * 1024 * 1024)
        assert settings["tags"]["kliv:allowed-content-types"] == "image/jpeg image/png"
        prepared = created.prepare()
        assert prepared.plan.empty
        outputs = prepared.outputs[f"Bucket/{created.namespace}/images"]
        assert outputs["bucket"] == "shop-images"
        assert outputs["maxObjectSize"] == "5242880"
        assert outputs["allowedContentTypes"] == "image/png,image/jpeg"
        assert outputs["endpoint"].endswith("shop-images")

    def test_update_every_setting(self, shop: tuple[Project, Backend]) -> None:
        """public, versioning, CORS, lifecycle and the upload limits each change in place."""
        created, backend = shop
        created.apply()

        def change(spec: dict[str, Any]) -> None:
            spec.update(public=False, versioning=True, maxObjectSize="1Mi", allowedContentTypes=["image/webp"])
            spec["cors"] = [{"allowedOrigins": ["https://new.example"], "allowedMethods": ["GET"]}]
            spec["lifecycle"] = [{"prefix": "drafts/", "expireAfterDays": 30}]

        _bucket(created, change)
        [update] = [c for c in created.plan().changes if c.resource.startswith("Bucket/")]
        assert update.action == "update"
        assert update.risk == "safe"
        assert {"enable versioning", "make the bucket private", "set 1 CORS rule"} <= set(update.summary)
        created.apply()
        settings = backend.settings("shop-images")
        assert (settings["public"], settings["versioning"]) == (False, True)
        assert settings["origins"] == ["https://new.example"]
        assert settings["lifecycle"] == [("drafts/", 30)]
        assert settings["tags"]["kliv:max-object-size"] == str(1024 * 1024)
        assert settings["tags"]["kliv:allowed-content-types"] == "image/webp"
        assert created.plan().empty

    def test_drift_is_repaired(self, shop: tuple[Project, Backend]) -> None:
        """Settings changed behind kliv's back show up in the plan and are put back."""
        created, backend = shop
        created.apply()
        backend.tamper("shop-images")
        prepared = created.prepare()
        [drift] = [c for c in prepared.plan.changes if c.action != "noop"]
        assert set(drift.summary) == {"suspend versioning", "set 1 CORS rule"}
        assert created.engine.report_drift(prepared, "test") == [drift.resource]
        created.apply()
        settings = backend.settings("shop-images")
        assert (settings["versioning"], settings["origins"]) == (False, ["https://shop.example"])
        assert created.plan().empty

    def test_removed_with_retain_is_forgotten(self, shop: tuple[Project, Backend]) -> None:
        """deletionPolicy Retain (the default): the spec goes, the bucket and its objects stay."""
        created, backend = shop
        created.apply()
        backend.put_object("shop-images", "a.png")
        created.write([d for d in created.documents() if d["kind"] != "Bucket"])
        [forget] = [c for c in created.apply().changes if c.resource.startswith("Bucket/")]
        assert (forget.action, forget.risk, forget.steps) == ("delete", "safe", [])
        assert backend.exists("shop-images")
        assert created.plan().empty

    def test_removed_empty_with_delete_is_dropped(self, shop: tuple[Project, Backend]) -> None:
        """deletionPolicy Delete on an empty bucket: dropped without ceremony."""
        created, backend = shop
        _bucket(created, lambda spec: spec.update(deletionPolicy="Delete"))
        created.apply()
        created.write([d for d in created.documents() if d["kind"] != "Bucket"])
        [drop] = [c for c in created.apply().changes if c.resource.startswith("Bucket/")]
        assert (drop.action, drop.risk) == ("delete", "safe")
        assert not backend.exists("shop-images")

    def test_non_empty_delete_is_refused(self, shop: tuple[Project, Backend]) -> None:
        """Deleting a bucket with objects is data loss: refused, with the count, until allowed."""
        created, backend = shop
        _bucket(created, lambda spec: spec.update(deletionPolicy="Delete"))
        created.apply()
        for key in ("a.png", "b.png", "nested/c.png"):
            backend.put_object("shop-images", key)
        created.write([d for d in created.documents() if d["kind"] != "Bucket"])
        [drop] = [c for c in created.plan().changes if c.resource.startswith("Bucket/")]
        assert drop.risk == "data-loss"
        assert drop.summary == ["delete bucket shop-images and its 3 objects (deletionPolicy Delete)"]
        with pytest.raises(RefusedError):
            created.apply()
        assert backend.exists("shop-images")
        created.apply(allow_data_loss=True)
        assert not backend.exists("shop-images")

    def test_claimed_name_is_refused(
        self, shop: tuple[Project, Backend], project: Callable[[str | Path], Project]
    ) -> None:
        """Two projects asking for one physical bucket: the second gets AlreadyExists, naming the first."""
        created, backend = shop
        created.apply()
        other = project(SPECS.replace("name: shop", "name: other").replace("{name: shop}", "{name: other}"))
        other.use(s3_url=backend.s3_url)
        other.edit("Bucket", "images", lambda d: d["spec"].update(name="shop-images"))
        [problem] = other.prepare().problems.values()
        assert f"already claimed by Bucket/{created.namespace}/images" in problem.message


class TestBucketFailures:
    """A bucket that cannot be made: the database part stays applied, the failure is reported and audited."""

    def test_failed_create_is_reported(self, project: Callable[[str | Path], Project]) -> None:
        """The filesystem root is a file: ExternalFailedError (temporary), a `failed` event, nothing recorded."""
        created = project(SPECS).use()
        created.buckets_dir.write_text("not a directory")
        with pytest.raises(ExternalFailedError) as raised:
            created.apply()
        assert raised.value.temporary
        assert raised.value.resource == f"Bucket/{created.namespace}/images"
        control = created.engine.control_session()
        types = [
            row[0]
            for row in control.execute(
                "SELECT body::jsonb ->> 'type' FROM inventory.outbox WHERE namespace = %s ORDER BY position",
                [created.namespace],
            )
        ]
        assert types == ["dev.kliv.cloud.project.created", "dev.kliv.cloud.bucket.failed"]
        created.buckets_dir.unlink()
        [retry] = [c for c in created.plan().changes if c.action != "noop"]
        assert retry.action == "create"
        created.apply()
        assert created.plan().empty


class TestBucketReview:
    """Regressions from the review of the bucket provider."""

    def test_half_made_bucket_stays_ours(self, project: Callable[[str | Path], Project]) -> None:
        """A create that fails after the bucket exists leaves it tagged: the next apply finishes it."""
        created = project(SPECS).use()
        backend = next(p for p in created.engine.providers if p.kind == "Bucket").backend  # type: ignore[attr-defined]
        original = backend.put_lifecycle

        def broken(*_: Any) -> None:
            raise PermissionError(13, "denied")

        backend.put_lifecycle = broken
        with pytest.raises(ExternalFailedError):
            created.apply()
        backend.put_lifecycle = original
        prepared = created.prepare()
        assert not prepared.problems
        [update] = [c for c in prepared.plan.changes if c.action != "noop"]
        assert update.action == "update"
        assert "set lifecycle rules: tmp/ after 7 d" in update.summary
        created.apply()
        assert created.plan().empty

    def test_one_physical_name_twice_in_a_project(self, project: Callable[[str | Path], Project]) -> None:
        """`images` and `shop-images` of project shop both mean shop-images: validation refuses the second."""
        from kliv.specs import load

        created = project(SPECS + "---\n" + SPECS.split("---\n")[1].replace("name: images", "name: shop-images"))
        errors = load([created.folder]).errors
        assert [(e.name, e.path) for e in errors] == [("shop-images", "/metadata/name")]
        assert f"bucket name `shop-images` is already claimed by Bucket/{created.namespace}/images" in errors[0].message

    def test_renamed_object_keeps_its_bucket(self, project: Callable[[str | Path], Project]) -> None:
        """A new metadata.name with the same spec.name takes the bucket over from the old object."""
        created = project(SPECS).use()
        created.edit("Bucket", "images", lambda d: d["spec"].update(name="shop-assets"))
        created.apply()
        created.edit("Bucket", "images", lambda d: d["metadata"].update(name="assets"))
        prepared = created.prepare()
        assert not prepared.problems
        changes = {c.resource.rsplit("/", 1)[1]: c for c in prepared.plan.changes if c.action != "noop"}
        assert changes["images"].summary == ["forget bucket shop-assets: another Bucket spec declares it now"]
        assert changes["assets"].action == "update"
        created.apply()
        assert created.plan().empty
        assert (created.buckets_dir / "shop-assets").is_dir()

    def test_empty_when_planned_not_when_applied(self, project: Callable[[str | Path], Project]) -> None:
        """An object uploaded between plan and apply is not deleted with the 'empty' bucket."""
        created = project(SPECS).use()
        created.edit("Bucket", "images", lambda d: d["spec"].update(deletionPolicy="Delete"))
        created.apply()
        created.write([d for d in created.documents() if d["kind"] != "Bucket"])
        prepared = created.prepare()
        [drop] = [c for c in prepared.plan.changes if c.action != "noop"]
        assert drop.risk == "safe"
        Backend(created, None).put_object("shop-images", "late.png")
        with pytest.raises(ExternalFailedError, match="no longer empty"):
            created.engine.apply(prepared)
        assert (created.buckets_dir / "shop-images" / "objects" / "late.png").is_file()

    def test_operator_reports_the_failure_on_the_bucket_only(self, project: Callable[[str | Path], Project]) -> None:
        """Through the operator's reconcile: the bucket retries, the Project stays Ready with its outputs."""
        import asyncio

        from kliv.operator.reconciling import Reconciler

        created = project(SPECS).use()
        created.buckets_dir.write_text("not a directory")
        bodies = [{**d, "metadata": {**d["metadata"], "generation": 1}} for d in created.documents()]
        result = asyncio.run(Reconciler(created.engine).reconcile(created.namespace, "shop", bodies))
        bucket = result.status_of("Bucket", "images")
        assert (bucket.ready.status, bucket.ready.reason) == ("False", "CannotApply")
        assert bucket.retry_in is not None
        project_status = result.status_of("Project", "shop")
        assert (project_status.ready.status, project_status.outputs["database"]) == ("True", created.database)


class TestAdoption:
    """Specs are untrusted: a spec alone never takes over, publishes or purges a bucket kliv did not make."""

    @staticmethod
    def _ask(created: Project) -> None:
        created.edit(
            "Bucket",
            "images",
            lambda d: d["metadata"].setdefault("annotations", {}).update({"cloud.kliv.dev/adopt": "true"}),
        )

    def test_foreign_bucket_is_refused(self, shop: tuple[Project, Backend]) -> None:
        created, backend = shop
        backend.foreign("shop-images")
        prepared = created.prepare()
        [problem] = prepared.problems.values()
        assert type(problem).__name__ == "AlreadyExistsError"
        assert "exists but was not created by kliv" in problem.message
        assert "--adopt shop-images" in problem.hint
        assert all(not c.resource.startswith("Bucket/") for c in prepared.plan.changes)

    def test_annotation_alone_publishes_and_purges_nothing(self, shop: tuple[Project, Backend]) -> None:
        """The attack: adopt, make public, then delete with its objects, all from the spec."""
        created, backend = shop
        backend.foreign("shop-images")
        backend.put_object("shop-images", "private/ledger.csv")
        self._ask(created)
        prepared = created.prepare()
        [problem] = prepared.problems.values()
        assert "the platform has not consented" in problem.message
        assert "--adopt shop-images" in problem.hint
        created.engine.apply(prepared)  # the rest of the project applies; the bucket is left out
        created.edit("Bucket", "images", lambda d: d["spec"].update(deletionPolicy="Delete"))
        created.write([d for d in created.documents() if d["kind"] != "Bucket"])
        created.apply(allow_data_loss=True)
        assert backend.exists("shop-images")
        assert backend.objects("shop-images") == ["private/ledger.csv"]
        assert backend.untouched("shop-images")

    def test_consent_makes_it_a_gated_change(self, shop: tuple[Project, Backend]) -> None:
        created, backend = shop
        created.use(s3_url=backend.s3_url, adopt=("shop-*",))
        backend.foreign("shop-images")
        backend.put_object("shop-images", "a.png")
        self._ask(created)
        [change] = [c for c in created.plan().changes if c.resource.startswith("Bucket/")]
        assert change.risk == "destructive"
        assert change.summary[0].startswith("adopt bucket shop-images, which kliv did not create")
        with pytest.raises(RefusedError):
            created.apply()
        assert backend.untouched("shop-images")
        created.apply(allow_data_loss=True)
        assert backend.settings("shop-images")["tags"]["kliv:project"] == "shop"
        assert backend.objects("shop-images") == ["a.png"]
        assert created.plan().empty

    def test_consent_for_another_name_is_no_consent(self, shop: tuple[Project, Backend]) -> None:
        created, backend = shop
        created.use(s3_url=backend.s3_url, adopt=("legacy-images",))
        backend.foreign("shop-images")
        self._ask(created)
        [problem] = created.prepare().problems.values()
        assert "the platform has not consented" in problem.message

    def test_never_across_projects(self, shop: tuple[Project, Backend], project: Callable[..., Project]) -> None:
        """Another project's bucket, forgotten by it (Retain), stays its own even with every consent."""
        created, backend = shop
        created.apply()
        created.write([d for d in created.documents() if d["kind"] != "Bucket"])
        created.apply()  # Retain: forgotten, the bucket and its tags stay
        other = project(SPECS.replace("name: shop", "name: other").replace("{name: shop}", "{name: other}"))
        other.use(s3_url=backend.s3_url, adopt=("*",))
        other.buckets_dir = created.buckets_dir
        other.use(s3_url=backend.s3_url, adopt=("*",))
        other.edit("Bucket", "images", lambda d: d["spec"].update(name="shop-images"))
        self._ask(other)
        [problem] = other.prepare().problems.values()
        assert f"belongs to kliv Project {created.namespace}/shop" in problem.message
        assert "never adopted across projects" in problem.message

    def test_cli_consent_flag(self, project: Callable[..., Project]) -> None:
        """Through the real command: refused (2: not ours), then gated (2: destructive), then adopted (0)."""
        from typer.testing import CliRunner

        from kliv.cli import app

        created = project(SPECS)
        backend = Backend(created, None)
        backend.foreign("shop-images")
        self._ask(created)
        env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent",
               "KLIV_BUCKETS_DIR": str(created.buckets_dir), "KLIV_ADOPT_BUCKETS": ""}  # fmt: skip

        def kliv(*args: str) -> int:
            return CliRunner().invoke(app, ["apply", str(created.folder), *args], env=env).exit_code

        assert kliv() == 2
        assert kliv("--adopt", "shop-images") == 2
        assert backend.untouched("shop-images")
        env["KLIV_ADOPT_BUCKETS"] = "other,shop-*"  # the operator's setting, read the same way
        assert kliv() == 2
        assert backend.untouched("shop-images")
        assert kliv("--allow-data-loss") == 0
        assert backend.settings("shop-images")["tags"]["kliv:project"] == "shop"
