"""The validation pipeline: files -> YAML documents -> typed resources -> a resolved SpecSet.

Called by ``kliv validate`` (and every later command that reads specs) and by
the operator's admission handler through :func:`validate_documents`.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kliv.specs.base import DEFAULT_NAMESPACE, GROUP, Resource
from kliv.specs.documents import Document, read_file, spec_files
from kliv.specs.errors import Problem
from kliv.specs.kinds import KINDS
from kliv.specs.parsing import parse_document
from kliv.specs.projects import Spec, SpecSet
from kliv.specs.resolving import resolve


@dataclasses.dataclass
class Validation:
    """The outcome of validating specs: what parsed, and every problem found."""

    specs: SpecSet
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def notes(self) -> list[Problem]:
        """Informational findings (severity ``info``): worth knowing, nothing to fix."""
        return [p for p in self.problems if p.severity == "info"]

    @property
    def valid(self) -> bool:
        return not self.errors


Parsed = tuple[Document, Resource | None, list[Problem]]


def validate_documents(documents: Iterable[Document]) -> Validation:
    """Parse and resolve documents that are already in memory."""
    return _resolved([(d, *parse_document(d)) for d in documents])


def _resolved(parsed: list[Parsed]) -> Validation:
    spec_set = SpecSet()
    problems: list[Problem] = []
    for document, resource, found in parsed:
        spec_set.documents += 1
        problems += found
        if resource is not None:
            spec_set.add(Spec(resource, document))
        else:
            spec_set.broken.update(_names_claimed(document.data))
    problems += resolve(spec_set)
    return Validation(spec_set, problems)


def _names_claimed(data: Any) -> set[tuple[str, str, str]]:
    """Best-effort names an invalid document would have had, by kind."""
    if not isinstance(data, dict):
        return set()
    metadata: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
    spec: dict[str, Any] = data["spec"] if isinstance(data.get("spec"), dict) else {}
    kind, name = str(data.get("kind")), metadata.get("name")
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    names = {n for n in (name, spec.get("name")) if isinstance(n, str)}
    if isinstance(name, str):
        names |= {name.replace("-", "_"), name.upper().replace("-", "_")}
    return {(kind, str(namespace), n) for n in names}


# File -> (stat key, its parsed documents and file-level problems), from the last load():
# a long-lived process re-loading mostly unchanged files (an apply loop, the benchmarks)
# re-parses only what changed. Cross-document resolution runs again, skipping the checks of
# unchanged specs whose inputs did not change either (kliv.specs.rechecking).
_PARSED: dict[Path, tuple[tuple[int, int, int], list[Parsed], list[Problem]]] = {}


def _parse_file(file: Path) -> tuple[list[Parsed], list[Problem]]:
    try:
        stat = file.stat()
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    except OSError:
        key = (0, 0, 0)
    cached = _PARSED.get(file)
    if cached is not None and cached[0] == key and key != (0, 0, 0):
        return cached[1], cached[2]
    documents, problems = read_file(file)
    parsed = [(d, *parse_document(d)) for d in documents]
    _PARSED[file] = (key, parsed, problems)
    return parsed, problems


def load(paths: Iterable[Path | str]) -> Validation:
    """Read, parse and resolve every spec under ``paths`` (files or folders)."""
    files, problems = spec_files([Path(p) for p in paths])
    named = {Path(p) for p in paths}
    parsed: list[Parsed] = []
    foreign: dict[str, list[str]] = {}
    # Loading builds hundreds of thousands of small acyclic objects that all stay alive;
    # the cyclic collector would re-scan them over and over (measured: 3-4x slower).
    collecting = gc.isenabled()
    gc.disable()
    try:
        for file in files:
            found, file_problems = _parse_file(file)
            if file not in named:
                kept = [item for item in found if not _foreign(item[0].data)]
                if len(kept) < len(found):
                    foreign.setdefault(str(file), []).extend(
                        str(item[0].data.get("apiVersion")) for item in found if _foreign(item[0].data)
                    )
                found = kept
            parsed += found
            problems += file_problems
        for stale in set(_PARSED) - set(files):
            del _PARSED[stale]
        validation = _resolved(parsed)
    finally:
        if collecting:
            # What was just built lives as long as the spec set (and the parse cache): keep the
            # cyclic collector from re-scanning it on every later collection (measured: at 1,000
            # tables each full collection took ~0.5 s during apply). Reference counting still
            # frees it; the objects are acyclic.
            gc.freeze()
            gc.enable()
    if foreign:
        problems.append(_skipped(foreign))
    validation.problems[:0] = problems
    return validation


def _foreign(data: Any) -> bool:
    """A manifest of another API group (a CRD, RBAC, a Deployment) beside the specs of a GitOps
    folder: neither a Kliv apiVersion nor a Kliv kind, so not a misspelt spec either."""
    if not isinstance(data, dict):
        return False
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or kind in KINDS:
        return False
    return api_version.split("/", 1)[0] != GROUP if "/" in api_version else True


def _skipped(foreign: dict[str, list[str]]) -> Problem:
    count = sum(len(v) for v in foreign.values())
    groups = sorted({v for versions in foreign.values() for v in versions})
    apis = ", ".join(groups[:8]) + (", ..." if len(groups) > 8 else "")
    files = sorted(foreign)
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return Problem(
        f"skipped {count} document{'s' * (count != 1)} of other APIs ({apis}) in {shown}",
        file=files[0],
        hint="found by walking a folder, they are not Kliv specs; name a file to validate it as one",
        severity="warning",
    )
