"""The deletion plan of a Project, as data: what is dropped, what is forgotten, and how risky."""

from __future__ import annotations

from kliv.stacks.contract import Record
from kliv.stacks.postgres.deleting import plan_deletion

RESOURCES = {
    f"{kind}/ns/{name}": Record(kind, name, physical, "hash", False)
    for kind, name, physical in (
        ("Project", "shop", "shop"),
        ("Table", "orders", "orders"),
        ("TablePolicy", "orders-read", "orders_read"),
        ("Bucket", "images", "shop-images"),
        ("ProjectSecret", "stripe", "STRIPE_KEY"),
    )
}


class TestDeletionPlans:
    def test_delete_drops_and_gates_data_but_forgets_buckets(self) -> None:
        deletion = plan_deletion("ns", "shop", "shop", RESOURCES, ("ns", "shop"), drop_requested=True)
        assert deletion.drop
        risks = {c.resource: c.risk for c in deletion.plan.changes}
        assert risks == {
            "Bucket/ns/images": "safe", "ProjectSecret/ns/stripe": "data-loss", "Table/ns/orders": "data-loss",
            "TablePolicy/ns/orders-read": "safe", "Project/ns/shop": "data-loss",
        }  # fmt: skip
        assert deletion.plan.changes[-1].resource == "Project/ns/shop"
        bucket = next(c for c in deletion.plan.changes if c.resource == "Bucket/ns/images")
        assert bucket.summary[0].startswith("forget bucket shop-images")
        assert {c.action for c in deletion.plan.changes} == {"delete"}

    def test_retain_or_a_foreign_database_forgets_everything(self) -> None:
        for owner, drop in ((("ns", "shop"), False), (("other", "shop"), True), (None, True)):
            deletion = plan_deletion("ns", "shop", "shop", RESOURCES, owner, drop_requested=drop)
            assert not deletion.drop
            assert {c.risk for c in deletion.plan.changes} == {"safe"}
            assert deletion.plan.refused(allow_data_loss=False) == []
