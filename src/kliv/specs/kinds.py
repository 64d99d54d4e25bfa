"""The registry of spec kinds: the one place that lists them all."""

from __future__ import annotations

from kliv.specs.base import Resource
from kliv.specs.bucket import Bucket
from kliv.specs.database_function import DatabaseFunction
from kliv.specs.email_template import EmailTemplate
from kliv.specs.function import Function
from kliv.specs.project import Project
from kliv.specs.project_secret import ProjectSecret
from kliv.specs.table import Table
from kliv.specs.table_policy import TablePolicy
from kliv.specs.trigger import Trigger

KINDS: dict[str, type[Resource]] = {
    model.KIND: model
    for model in (
        Project,
        Table,
        TablePolicy,
        DatabaseFunction,
        Trigger,
        Bucket,
        ProjectSecret,
        Function,
        EmailTemplate,
    )
}
