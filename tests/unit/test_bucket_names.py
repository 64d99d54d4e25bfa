"""Bucket physical names, tags and the filesystem backend's settings file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kliv.specs import Bucket
from kliv.specs.names import bucket_name
from kliv.stacks.buckets import desired
from kliv.stacks.buckets.filesystem import FilesystemBuckets


def _bucket(metadata_name: str, namespace: str = "default", **spec: Any) -> Bucket:
    return Bucket.model_validate(
        {
            "apiVersion": "cloud.kliv.dev/v1alpha1",
            "kind": "Bucket",
            "metadata": {"name": metadata_name, "namespace": namespace},
            "spec": {"projectRef": {"name": "shop"}, **spec},
        }
    )


class TestPhysicalName:
    """Project-scoped names within S3's rules."""

    def test_prefixed_with_the_project(self) -> None:
        """`images` of project shop is shop-images; `shop-images` is not doubled."""
        assert _bucket("images").bucket_name == "shop-images"
        assert _bucket("shop-images").bucket_name == "shop-images"

    def test_explicit_name_kept(self) -> None:
        """spec.name is used as written."""
        assert _bucket("images", name="my.assets").bucket_name == "my.assets"

    def test_long_names_get_a_hash(self) -> None:
        """Past 63 characters: cut, hashed suffix, still a valid bucket name, distinct per identity."""
        long = "a" * 60
        first = _bucket(long, "ns1").bucket_name
        second = _bucket(long, "ns2").bucket_name
        assert len(first) == 63
        assert first != second
        assert bucket_name(first) == first


class TestTags:
    """Tags name the owner and carry the upload limits."""

    def test_tags(self) -> None:
        """namespace, project, resource, spec hash, size in bytes, content types space-separated."""
        bucket = _bucket("images", maxObjectSize="5Mi", allowedContentTypes=["image/png", "image/jpeg"])
        tags = desired.settings("ns", "shop", bucket).tag_map()
        assert tags["kliv:namespace"] == "ns"
        assert tags["kliv:max-object-size"] == "5242880"
        assert tags["kliv:allowed-content-types"] == "image/jpeg image/png"
        assert desired.owned_by(tags, "ns", "shop", "images")
        assert not desired.owned_by(tags, "other", "shop", "images")

    def test_tag_values_use_only_what_s3_allows(self) -> None:
        """`*` is written `any`; a type with `&` stays out of the tag but not out of the outputs."""
        bucket = _bucket("files", allowedContentTypes=["image/*", "application/vnd.a&b"])
        assert desired.settings("ns", "shop", bucket).tag_map()["kliv:allowed-content-types"] == "image/any"
        assert desired.outputs(bucket, "shop-files", "", "s3")["allowedContentTypes"] == "image/*,application/vnd.a&b"

    def test_long_content_type_list_fits_a_tag(self) -> None:
        """An S3 tag value holds 256 characters: the list is cut, the outputs keep it whole."""
        types = [f"application/x-type-number-{i:03d}" for i in range(20)]
        bucket = _bucket("files", allowedContentTypes=types)
        assert len(desired.settings("ns", "shop", bucket).tag_map()["kliv:allowed-content-types"]) <= 256
        assert desired.outputs(bucket, "shop-files", "file:///x", "filesystem")["allowedContentTypes"].count(",") == 19


class TestFilesystemBuckets:
    """Directories with a settings file."""

    def test_roundtrip(self, tmp_path: Path) -> None:
        """Settings written are read back equal; objects are counted; delete removes everything."""
        backend = FilesystemBuckets(tmp_path)
        wanted = desired.settings("ns", "shop", _bucket("images", public=True, versioning=True,
                                  cors=[{"allowedOrigins": ["*"], "allowedMethods": ["GET"]}],
                                  lifecycle=[{"prefix": "tmp/", "expireAfterDays": 2}]))  # fmt: skip
        assert backend.read("shop-images") is None
        backend.create("shop-images")
        backend.put_public("shop-images", True)
        backend.put_versioning("shop-images", True)
        backend.put_cors("shop-images", wanted)
        backend.put_lifecycle("shop-images", wanted)
        backend.put_tags("shop-images", wanted.tag_map())
        assert backend.read("shop-images") == wanted
        (tmp_path / "shop-images" / "objects" / "a.png").write_bytes(b"x")
        assert backend.count_objects("shop-images") == 1
        backend.delete("shop-images", purge=True)
        assert backend.read("shop-images") is None
