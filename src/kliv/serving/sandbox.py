"""How one function version's Deno process is started: folder, command line, environment.

Called by :mod:`kliv.serving.instances` for every start. The process gets a folder of its
own holding the module and a generated bootstrap that serves it on a unix socket in that
folder; it may read and write only that socket, read only the env variables the spec
declares, reach the network but never loopback, ``0.0.0.0``, private, shared or
link-local ranges (Deno checks the resolved address, so ``localhost`` and ``127.1`` are
denied too), and nothing else (no subprocesses, FFI, system information or files). Its
environment holds the declared ``env``, the secrets' values (in memory only: never written
to the folder) and ``KLIV_PROJECT``; nothing of ``kliv serve``'s own.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kliv.stacks.functions.checking import MODULE, deno_binary

SOCKET = "s.sock"
BOOTSTRAP = "serve.ts"
READY = "\x00kliv:ready"
# IPv6 forms Deno's --deny-net takes are single addresses, not ranges.
DENIED_NETWORKS = (
    "127.0.0.0/8", "0.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
    "100.64.0.0/10", "[::1]", "[::]", "[::ffff:127.0.0.1]", "[::ffff:0.0.0.0]",
)  # fmt: skip
# The module's own errors become a 500 with a generic body: their message may hold anything.
_BOOTSTRAP_SOURCE = f"""import handler from "./{MODULE}";
const path = Deno.args[0];
Deno.serve({{ path, onListen() {{ console.error({json.dumps(READY)}); }} }}, async (request) => {{
  try {{
    return await handler.fetch(request);
  }} catch (error) {{
    console.error("uncaught:", error instanceof Error ? (error.stack ?? error.message) : String(error));
    return new Response(JSON.stringify({{ error: "function-error", message: "the function threw an exception" }}),
      {{ status: 500, headers: {{ "content-type": "application/json", "x-kliv-error": "function-error" }} }});
  }}
}});
"""


@dataclasses.dataclass(frozen=True)
class Launch:
    """Everything a start needs: the command, its environment and where it listens."""

    command: list[str]
    environment: dict[str, str]
    folder: Path

    @property
    def socket(self) -> Path:
        return self.folder / SOCKET


def prepare(folder: Path, source: str) -> None:
    """Write the module and the bootstrap (code only: never a secret)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    (folder / MODULE).write_text(source)
    (folder / BOOTSTRAP).write_text(_BOOTSTRAP_SOURCE)


def launch(
    folder: Path, deno_dir: Path, env: dict[str, str], secrets: dict[str, str], project: str, memory_mib: int
) -> Launch:
    socket = folder / SOCKET
    names = sorted({*env, *secrets, "KLIV_PROJECT"})
    command = [
        deno_binary(), "run", "--no-prompt", "--no-config", "--no-lock", "--no-remote", "--no-npm", "--cached-only",
        f"--allow-read={socket}", f"--allow-write={socket}", f"--allow-env={','.join(names)}",
        "--allow-net", f"--deny-net={','.join(DENIED_NETWORKS)}",
        f"--v8-flags=--max-old-space-size={memory_mib}",
        BOOTSTRAP, str(socket),
    ]  # fmt: skip
    environment = {**env, **secrets, "KLIV_PROJECT": project, "DENO_DIR": str(deno_dir),
                   "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}  # fmt: skip
    return Launch(command, environment, folder)
