"""Checking a function's module without running it: ``deno info`` for its imports, ``deno check``
for its types and its default export.

Called by the Function provider while it plans (so ``kliv plan`` refuses a broken module and
nothing is deployed) and by ``kliv serve`` (which finds Deno through :func:`deno_binary`).
Neither command executes the module: ``deno info`` reads its import graph, ``deno check``
type-checks it beside a generated wrapper that assigns the default export to
``{ fetch(req: Request): Response | Promise<Response> }``. Only the module itself may be in
its graph: an import of another file, a remote URL or an npm package is refused (Deno reads
static imports even under ``--deny-read``, so confining them is this check's job). Both run
in a clean environment and a fresh folder, with a time limit: the module is untrusted.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kliv.stacks.errors import EngineError, InvalidSourceError

MODULE = "function.ts"
WRAPPER = "check.ts"
CHECK_SECONDS = 60  # a pathological type can make the checker work without end
_WRAPPER_SOURCE = (
    f'import handler from "./{MODULE}";\n'
    "const _checked: { fetch(req: Request): Response | Promise<Response> } = handler;\n"
)
_LOCATION = re.compile(r"at (file://\S+?):(\d+):(\d+)")
_FLAGS = ("--no-config", "--no-lock", "--no-remote", "--no-npm", "--quiet")


@functools.cache
def deno_binary() -> str:
    """The Deno that ``pip install kliv`` brought (the ``deno`` wheel), else one on PATH."""
    try:
        import deno

        found = str(deno.find_deno_bin())
        if os.access(found, os.X_OK):
            return found
    except (ImportError, FileNotFoundError):
        pass
    on_path = shutil.which("deno")
    if on_path is None:
        raise EngineError("Deno is not installed", "`pip install deno` (a dependency of kliv) or put `deno` on PATH")
    return on_path


def clean_environment(deno_dir: str) -> dict[str, str]:
    """Nothing of the control plane's environment: only where Deno keeps its cache."""
    return {"DENO_DIR": deno_dir, "NO_COLOR": "1", "HOME": deno_dir, "PATH": "/usr/bin:/bin",
            "DENO_NO_UPDATE_CHECK": "1"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Checked:
    """A module that passed: its sha256 is what was checked."""

    sha256: str


def _located(text: str, folder: Path) -> tuple[int, int, bool]:
    """(line, column, in the wrapper) of the first location Deno names in the module."""
    for match in _LOCATION.finditer(text):
        file = match.group(1)
        if file.endswith("/" + MODULE):
            return int(match.group(2)), int(match.group(3)), False
        if file.endswith("/" + WRAPPER):
            return 0, 0, True
    return 0, 0, False


def _deno_message(text: str, folder: Path) -> str:
    """Deno's own words, without ANSI colours, stack traces or our temporary paths."""
    lines = []
    for line in text.splitlines():
        if line.startswith("Stack backtrace") or line.strip().startswith("0: <unknown>"):
            break
        lines.append(line.replace(folder.as_uri() + "/", "").replace(str(folder) + "/", ""))
    return "\n".join(line for line in lines if line.strip() and not line.startswith("Check ")).strip()[:2000]


def _run(arguments: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    deno_dir = folder / ".deno"
    try:
        return subprocess.run(  # a fixed binary and flags; the module is never executed
            [deno_binary(), *arguments],
            cwd=folder,
            env=clean_environment(str(deno_dir)),
            capture_output=True,
            text=True,
            timeout=CHECK_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InvalidSourceError(
            f"checking the module took longer than {CHECK_SECONDS} s", "simplify its types", 0, 0
        ) from None


def _imports(info: dict[str, Any], module_uri: str) -> InvalidSourceError | None:
    modules = info.get("modules", [])
    if info.get("roots") != [module_uri] or not any(m.get("specifier") == module_uri for m in modules):
        # Fail closed: a graph that is not rooted at the module as written cannot be checked.
        return InvalidSourceError("Deno reported an import graph kliv cannot check", "report this", 0, 0)
    for module in modules:
        if module.get("specifier") != module_uri:
            continue
        for dependency in module.get("dependencies", []):
            specifier = str(dependency.get("specifier", ""))
            code = dependency.get("code") or dependency.get("type") or {}
            start = (code.get("span") or {}).get("start") or {}
            line, column = int(start.get("line", -1)) + 1, int(start.get("character", -1)) + 1
            if specifier.startswith(("npm:", "jsr:", "http:", "https:", "node:")):
                why, hint = "cannot be imported: a function is one self-contained module (remote, jsr: and npm: " \
                            "imports are not allowed)", "copy the code you need into the function's source"  # fmt: skip
                if specifier.startswith("node:"):
                    why, hint = "is a Node built-in, which Deno functions here cannot import", "use the web APIs"
            else:
                why, hint = "is outside the function's artifact (its source is one module)", (
                    "put the code into the function's source")  # fmt: skip
            return InvalidSourceError(f"import `{specifier[:200]}` {why}", hint, line, column)
    if len(modules) != 1:
        return InvalidSourceError("the module imports other modules", "put the code into the function's source", 0, 0)
    return None


def check(source: str) -> Checked:
    """Refuse (:class:`InvalidSourceError`, with Deno's message, line and column) a module that
    imports anything, does not type-check or has no default ``fetch`` handler."""
    from kliv.stacks.functions.artifacts import sha256

    with tempfile.TemporaryDirectory(prefix="kliv-check-") as name:
        folder = Path(name).resolve()  # Deno names modules by their real path (a symlinked TMPDIR)
        (folder / MODULE).write_text(source)
        (folder / WRAPPER).write_text(_WRAPPER_SOURCE)
        info = _run(["info", "--json", *_FLAGS, MODULE], folder)
        if info.returncode != 0 and not info.stdout.strip():
            line, column, _ = _located(info.stderr, folder)
            raise InvalidSourceError(_deno_message(info.stderr, folder), "fix the module's syntax", line, column)
        refused = _imports(json.loads(info.stdout or "{}"), (folder / MODULE).as_uri())
        if refused is not None:
            raise refused
        checked = _run(["check", *_FLAGS, WRAPPER], folder)
        if checked.returncode != 0:
            text = checked.stderr + checked.stdout
            line, column, wrapper = _located(text, folder)
            message = _deno_message(text, folder)
            if wrapper:  # kliv's own wrapper is no business of the author's: only what it found
                first = next((ln for ln in message.splitlines() if "[ERROR]" in ln), "")
                found = first.split("[ERROR]:", 1)[-1].strip()
                said = "the module has no `export default`" if "no default export" in found else (
                    "the module's default export is not an object with a `fetch(req: Request)` handler returning "
                    f"a Response: {found}")  # fmt: skip
                raise InvalidSourceError(
                    said,
                    "end the module with `export default { fetch(req: Request): Response | Promise<Response> "
                    "{ ... } }`",
                    0,
                    0,
                )
            raise InvalidSourceError(message, "fix the error Deno reports at that line", line, column)
    return Checked(sha256(source))


@functools.lru_cache(maxsize=256)
def check_cached(source: str) -> Checked:
    """:func:`check`, once per source per process (a plan re-checks nothing it checked)."""
    return check(source)


def transpile(source: str) -> str:
    """The module as JavaScript (types stripped), for the Lambda target's Node runtime. Checked first:
    the same refusals as :func:`check`. ``deno cache`` emits without executing anything; the emit is
    read from Deno's cache (``gen/file/<path>.js``, the layout of the Deno 2 this package pins)."""
    check_cached(source)
    with tempfile.TemporaryDirectory(prefix="kliv-emit-") as name:
        folder = Path(name).resolve()
        (folder / MODULE).write_text(source)
        built = _run(["cache", "--no-config", "--no-lock", "--quiet", MODULE], folder)
        emitted = folder / ".deno" / "gen" / "file" / str(folder / MODULE).lstrip("/")
        emitted = emitted.with_name(emitted.name + ".js")
        if built.returncode != 0 or not emitted.is_file():
            raise InvalidSourceError(_deno_message(built.stderr, folder) or "Deno emitted no JavaScript",
                                     "fix the module", 0, 0)  # fmt: skip
        lines = emitted.read_text().splitlines()
        return "\n".join(line for line in lines if not line.startswith("// denoCacheMetadata=")) + "\n"
