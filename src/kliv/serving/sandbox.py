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
import functools
import json
from pathlib import Path

from kliv.specs.function import runtime_env
from kliv.stacks.functions.checking import MODULE, deno_binary

SOCKET = "s.sock"
BOOTSTRAP = "serve.ts"
PRELUDE = "prelude.ts"
READY = "\x00kliv:ready"
# Loopback, "this network", private, shared, link-local, benchmarking, documentation, multicast
# and reserved ranges. Deno takes CIDR ranges for IPv4 only: IPv6 forms are single addresses
# (the host's own are added at launch); IPv6 unique-local and link-local ranges cannot be
# expressed, see SECURITY.md.
DENIED_NETWORKS = (
    "127.0.0.0/8", "0.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
    "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4", "[::1]", "[::]", "[::ffff:127.0.0.1]", "[::ffff:0.0.0.0]",
    "[fd00:ec2::254]", "[64:ff9b::a9fe:a9fe]",
)  # fmt: skip


@functools.cache
def own_addresses() -> tuple[str, ...]:
    """This host's own addresses (a function must neither reach nor listen on them)."""
    import fcntl
    import ipaddress
    import socket
    import struct

    found: set[str] = set()
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:  # SIOCGIFADDR: the interface's IPv4 address
                packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))[20:24]
            except OSError:
                continue
            found.add(socket.inet_ntoa(packed))
    try:
        with open("/proc/net/if_inet6") as addresses:
            for line in addresses:
                found.add(f"[{ipaddress.IPv6Address(int(line.split()[0], 16)).compressed}]")
    except (OSError, ValueError, IndexError):
        pass
    return tuple(sorted(found))


# Runs before the function's module (imported first): what the function must not have.
# The Cache API writes to Deno's cache folder without any permission or quota.
_PRELUDE_SOURCE = "delete (globalThis as { caches?: unknown }).caches;\n"
# The module's own errors become a 500 with a generic body: their message may hold anything.
_BOOTSTRAP_SOURCE = f"""import "./{PRELUDE}";
import handler from "./{MODULE}";
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
    (folder / PRELUDE).write_text(_PRELUDE_SOURCE)
    (folder / BOOTSTRAP).write_text(_BOOTSTRAP_SOURCE)


def launch(
    folder: Path, deno_dir: Path, env: dict[str, str], secrets: dict[str, str], project: str, memory_mib: int
) -> Launch:
    socket = folder / SOCKET
    # Validated with the spec; checked again here: settings come back from the database.
    env = {k: v for k, v in env.items() if not runtime_env(k)}
    secrets = {k: v for k, v in secrets.items() if not runtime_env(k)}
    names = sorted({*env, *secrets, "KLIV_PROJECT"})
    command = [
        deno_binary(), "run", "--no-prompt", "--no-config", "--no-lock", "--no-remote", "--no-npm", "--cached-only",
        f"--allow-read={socket}", f"--allow-write={socket}", f"--allow-env={','.join(names)}",
        "--allow-net", f"--deny-net={','.join((*DENIED_NETWORKS, *own_addresses()))}",
        f"--v8-flags=--max-old-space-size={memory_mib}",
        BOOTSTRAP, str(socket),
    ]  # fmt: skip
    environment = {**env, **secrets, "KLIV_PROJECT": project, "DENO_DIR": str(deno_dir),
                   "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}  # fmt: skip
    return Launch(command, environment, folder)
