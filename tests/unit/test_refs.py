"""Ref: a resource's identity, per project (kliv.stacks.refs)."""

from __future__ import annotations

from kliv.stacks.refs import Ref


class TestRef:
    def test_shown_without_project_described_with_it(self) -> None:
        ref = Ref("Bucket", "default", "alpha", "images")
        assert str(ref) == ref.shown == "Bucket/default/images"
        assert ref.describe() == "Bucket/default/images (Project default/alpha)"

    def test_parse_round_trip(self) -> None:
        assert Ref.parse("Table/ns/notes", "beta") == Ref("Table", "ns", "beta", "notes")

    def test_same_name_other_project_is_another_resource(self) -> None:
        assert Ref.parse("Table/ns/notes", "alpha") != Ref.parse("Table/ns/notes", "beta")
