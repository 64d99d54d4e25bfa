"""The spec language of ``cloud.kliv.dev/v1alpha1``: models, validation, CRDs.

Public API (everything else in this package is an implementation detail):

- :func:`load` validates spec files and folders into a :class:`Validation`;
  :func:`validate_documents` does the same for documents already in memory.
- :class:`SpecSet` / :class:`ProjectSpecs` group the valid resources by project.
- :data:`KINDS` maps each kind to its pydantic model.
- :class:`Problem` is what every check reports.
"""

from kliv.specs.base import API_VERSION, GROUP, VERSION, Resource
from kliv.specs.bucket import Bucket
from kliv.specs.database_function import DatabaseFunction
from kliv.specs.documents import Document, parse_text
from kliv.specs.email_template import EmailTemplate
from kliv.specs.errors import Problem, Source
from kliv.specs.function import Function
from kliv.specs.kinds import KINDS
from kliv.specs.loading import Validation, load, validate_documents
from kliv.specs.project import Project
from kliv.specs.project_secret import ProjectSecret
from kliv.specs.projects import ProjectSpecs, Spec, SpecSet
from kliv.specs.table import Table
from kliv.specs.table_policy import TablePolicy
from kliv.specs.trigger import Trigger

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "Bucket",
    "DatabaseFunction",
    "Document",
    "EmailTemplate",
    "Function",
    "Problem",
    "Project",
    "ProjectSecret",
    "ProjectSpecs",
    "Resource",
    "Source",
    "Spec",
    "SpecSet",
    "Table",
    "TablePolicy",
    "Trigger",
    "Validation",
    "load",
    "parse_text",
    "validate_documents",
]
