"""YAML documents with positions: every JSON pointer maps back to a line and column.

Called by :mod:`kliv.specs.loading` for each spec file. PyYAML's C composer
builds the node tree (fast, with marks); this module turns it into plain data
itself so that it can refuse what a spec never needs and what a careless or
hostile author might write: duplicate keys (YAML would keep the last one
silently), merge keys, unknown tags, and alias "bombs" whose expansion would
explode in memory.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kliv.specs.errors import Problem, Source, pointer

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - libyaml is bundled with PyYAML's wheels
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

_STRING = "tag:yaml.org,2002:str"
# Plain scalars that are not strings start with one of these (YAML 1.1 core schema).
_TYPED_STARTS = frozenset("-+.0123456789~nNtTfFyYoO<=")


class _Loader(_BaseLoader):
    """The C loader with a faster tag resolver: specs use no path resolvers, and most scalars
    are plain words whose first character already rules out every implicit type."""

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and implicit[0] and value and value[0] not in _TYPED_STARTS:
            return _STRING
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_EXPANDED_NODES = 250_000
MAX_DEPTH = 64  # specs need about 8 levels
# libyaml's composer recurses in C: tens of thousands of `[` crash the process, so flow
# nesting is measured (roughly: brackets inside strings count too) before composing.
MAX_FLOW_BRACKET_DEPTH = 1000
_BRACKETS = re.compile(r"[\[\]{}]")
_DOCUMENT_START = re.compile(r"^---", re.M)
YAML_SUFFIXES = (".yaml", ".yml")
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclasses.dataclass
class Document:
    """One YAML document: its data and the node tree it was built from (for positions).

    Positions are looked up only when a problem is reported, by walking the
    node tree along the JSON pointer: cheaper than recording every node's.
    """

    source: Source
    data: Any
    root: Node | None = None

    def position(self, path: str) -> tuple[int | None, int | None]:
        """Line and column (1-based) of ``path`` or of its nearest present ancestor."""
        node = self.root
        if node is None:
            return None, None
        mark = node.start_mark
        for raw in path.split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, MappingNode):
                found = next((pair for pair in node.value if str(pair[0].value) == part), None)
                if found is None:
                    break
                mark = found[0].start_mark  # the key's line: where the field is written
                node = found[1]
            elif isinstance(node, SequenceNode) and part.isdigit() and int(part) < len(node.value):
                node = node.value[int(part)]
                mark = node.start_mark
            else:
                break
        return mark.line + 1, mark.column + 1

    def position_inside(
        self, path: str, line: int, column: int, text: str | None = None
    ) -> tuple[int | None, int | None]:
        """Where ``line``:``column`` of the string at ``path`` stands in the file, when it is written as
        a block scalar (``inline: |``, each of its lines a line of the file, indented as ``text``, the
        file's content, shows); else where ``path`` is."""
        node = self.root
        for raw in path.split("/")[1:]:
            if not isinstance(node, MappingNode):
                return self.position(path)
            node = next((pair[1] for pair in node.value if str(pair[0].value) == raw), None)
        if not isinstance(node, ScalarNode) or node.style not in ("|", ">") or line < 1:
            return self.position(path)
        first = node.start_mark.line + 1  # the block's first line follows its indicator (0-based)
        lines = text.split("\n") if text is not None else []
        indent = 0
        if first < len(lines):
            indent = len(lines[first]) - len(lines[first].lstrip(" "))
        return first + line, indent + column


class _DocumentError(Exception):
    def __init__(self, message: str, hint: str, node: Node, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.node = node
        self.path = path


_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_COLLECTION_TAGS: dict[type[Node], str] = {SequenceNode: "tag:yaml.org,2002:seq", MappingNode: "tag:yaml.org,2002:map"}
_SCALARS = SafeConstructor()


def _build(node: Node, path: tuple[str, ...] = ()) -> Any:
    """Plain data from a node tree, refusing what specs never need."""
    if len(path) > MAX_DEPTH:
        raise _DocumentError(
            f"the document is nested more than {MAX_DEPTH} levels deep", "flatten it", node, pointer(*path)
        )
    if isinstance(node, ScalarNode):
        if node.tag == _STR_TAG:
            return node.value
        try:
            return _SCALARS.construct_object(node, deep=True)
        except ConstructorError as exc:
            raise _DocumentError(
                f"cannot read this value: {exc.problem}", "quote the value or remove the YAML tag", node, pointer(*path)
            ) from None
        except (ValueError, OverflowError) as exc:
            # A 5000-digit number (Python's int limit), a date like 2001-13-45 (YAML reads it as a date).
            reason = str(exc).split(";")[0][:200]
            raise _DocumentError(
                f"cannot read this value: {reason}", "quote it if it is text", node, pointer(*path)
            ) from None
    if node.tag != _COLLECTION_TAGS.get(type(node)):
        raise _DocumentError(
            f"unsupported YAML tag `{node.tag}`", "remove the tag: specs are plain data", node, pointer(*path)
        )
    if isinstance(node, SequenceNode):
        return [_build(item, (*path, str(i))) for i, item in enumerate(node.value)]
    if isinstance(node, MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                raise _DocumentError("YAML merge keys (`<<`) are not supported", "write the fields out", key_node,
                                     pointer(*path))  # fmt: skip
            if not isinstance(key_node, ScalarNode):
                raise _DocumentError("mapping keys must be plain strings", "", key_node, pointer(*path))
            key = str(key_node.value)
            if key in result:
                first = next(k for k, _ in node.value if str(k.value) == key)
                raise _DocumentError(
                    f"duplicate key `{key}` (first on line {first.start_mark.line + 1})",
                    "YAML would silently keep only the last value: remove one of them",
                    key_node,
                    pointer(*path, key),
                )
            result[key] = _build(value_node, (*path, key))
        return result
    raise _DocumentError("unsupported YAML node", "", node, pointer(*path))  # pragma: no cover


def _expanded_size(root: Node) -> int:
    """Node count with every alias expanded; raises on recursive aliases."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _DocumentError("recursive YAML alias", "remove the alias", node)
        active.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = total
        if total > MAX_EXPANDED_NODES:
            raise _DocumentError(
                f"the document expands to more than {MAX_EXPANDED_NODES} nodes",
                "YAML aliases multiply content: write the document without `*alias` chains",
                node,
            )
        return total

    return size(root)


def _flow_depth_problem(text: str, file: str) -> Problem | None:
    depth = 0
    for match in _BRACKETS.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_FLOW_BRACKET_DEPTH:
            start = match.start()
            line = text.count("\n", 0, start) + 1
            document = max(len(_DOCUMENT_START.findall(text, 0, start)) - (text.startswith("---")), 0)
            message = f"the document nests more than {MAX_FLOW_BRACKET_DEPTH} `[`/`{{` levels"
            return Problem(message, "", "flatten it", file, document, line, start - text.rfind("\n", 0, start))
    return None


def parse_text(text: str, file: str) -> tuple[list[Document], list[Problem]]:
    """All documents in ``text``; empty documents are skipped."""
    if text.count("[") + text.count("{") > MAX_FLOW_BRACKET_DEPTH:
        deep = _flow_depth_problem(text, file)
        if deep is not None:
            return [], [deep]
    documents: list[Document] = []
    index = -1
    # Aliases need anchors: without an `&` the expansion check cannot find anything.
    may_alias = "&" in text
    try:
        for index, node in enumerate(yaml.compose_all(text, Loader=_Loader)):
            if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL_TAG and not node.value):
                continue  # an empty document, e.g. between two `---`
            if may_alias:
                _expanded_size(node)
            documents.append(Document(Source(file, index), _build(node), node))
    except _DocumentError as exc:
        mark = exc.node.start_mark
        problem = Problem(exc.message, exc.path, exc.hint, file, max(index, 0), mark.line + 1, mark.column + 1)
        return documents, [problem]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        message = f"invalid YAML: {exc.problem or exc.context}"
        hint = "check indentation and quoting; tabs are not allowed for indentation"
        return documents, [Problem(message, "", hint, file, max(index + 1, 0), line, column)]
    except yaml.YAMLError as exc:
        return documents, [Problem(f"invalid YAML: {exc}", "", "", file, max(index + 1, 0))]
    except RecursionError:
        return documents, [Problem("the document is nested too deeply", "", "flatten it", file, index + 1)]
    return documents, []


def read_file(path: Path) -> tuple[list[Document], list[Problem]]:
    """Documents of one file, or a problem saying why it cannot be read."""
    file = str(path)
    try:
        if not path.is_file():  # /dev/zero or a FIFO would be read forever
            return [], [Problem("not a regular file", hint="name a .yaml file or a folder of them", file=file)]
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return [], [Problem(f"file is {size} bytes; at most {MAX_FILE_BYTES} are read", file=file)]
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)  # a file that grows while it is read stops here
        if len(raw) > MAX_FILE_BYTES:
            return [], [Problem(f"file is over {MAX_FILE_BYTES} bytes; at most that many are read", file=file)]
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [], [Problem(f"file is not UTF-8 (byte {exc.start})", hint="save it as UTF-8", file=file)]
    except OSError as exc:
        return [], [Problem(f"cannot read file: {exc.strerror}", file=file)]
    return parse_text(text, file)


def _yaml_files(folder: Path, root: Path) -> Iterator[Path]:
    """The YAML files under ``folder``, skipping hidden entries and node_modules, never through a
    link to a folder (as ``Path.rglob``), and a linked file only if it stays inside ``root``.
    One ``scandir`` per folder: no ``stat`` or path resolution per file unless it is a link."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or entry.name == "node_modules":
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from _yaml_files(folder / entry.name, root)
            elif os.path.splitext(entry.name)[1] in YAML_SUFFIXES:
                file = folder / entry.name
                if entry.is_symlink():
                    if file.is_file() and file.resolve().is_relative_to(root):
                        yield file
                elif entry.is_file(follow_symlinks=False):
                    yield file


def spec_files(paths: list[Path]) -> tuple[list[Path], list[Problem]]:
    """Expand folders into their YAML files (recursively, sorted)."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            # A link inside a spec folder that leads out of it (to /proc/self/environ, say) is not a spec:
            # specs are untrusted, and values of what they point at would be echoed in errors.
            # Hidden entries (.venv, .git, .github) and node_modules are tooling, never specs.
            found = sorted(_yaml_files(path, path.resolve()))
            if not found:
                problems.append(
                    Problem("folder has no .yaml or .yml files", file=str(path), hint="point at a spec folder")
                )
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            problems.append(Problem("no such file or folder", file=str(path), hint="check the path"))
    return files, problems
