"""`kliv operator` as a real process against the emulated cluster: kubeconfig, TLS files, start, stop.

Used by the scenarios that must go through the command itself (its login, its webhook server, its
relay, its metrics) rather than through ``make_registry`` in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyrings import TEST_KEY

KLIV = Path(sys.executable).with_name("kliv")


def free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kubeconfig(folder: Path, server: str, namespace: str) -> Path:
    """A kubeconfig for the emulator: what `kubectl` and kopf's kubeconfig login read."""
    path = folder / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: emulated, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: tester, user: {token: emulated-token}}]\n"
        f"contexts: [{{name: test, context: {{cluster: emulated, user: tester, namespace: {namespace}}}}}]\n"
        "current-context: test\n"
    )
    return path


def certificate(folder: Path, name: str = "tls") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (what cert-manager's Certificate gives in a cluster)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kliv-operator-webhook.kliv-system.svc")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class OperatorProcess:
    process: asyncio.subprocess.Process
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def wait_for_port(port: int, process: OperatorProcess, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if process.process.returncode is not None:
            raise AssertionError(f"kliv operator exited {process.process.returncode}:\n{process.output()[-3000:]}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"nothing listens on {port}:\n{process.output()[-3000:]}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return


@contextlib.asynccontextmanager
async def kliv_operator(
    folder: Path,
    server: str,
    namespace: str,
    database_url: str,
    *args: str,
    env: dict[str, str] | None = None,
    clusterwide: bool = False,
) -> AsyncIterator[OperatorProcess]:
    """`kliv operator --namespace NS --log-format text ARGS` with the test's database and key; stopped with
    SIGTERM (as Kubernetes stops a pod) on exit. ``clusterwide``: no --namespace, as deploy/ runs it
    (kopf then peers through a ClusterKopfPeering, not a namespaced KopfPeering)."""
    log = folder / f"operator-{free_port()}.log"
    environment = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig(folder, server, namespace)),
        "KLIV_DATABASE_URL": database_url,
        "KLIV_SECRET_KEY": TEST_KEY,
        "KLIV_CONFIG": "/nonexistent",
        "KLIV_BUCKETS_DIR": str(folder / "buckets"),
        **(env or {}),
    }
    if "KLIV_AMQP_URL" not in (env or {}):
        environment.pop("KLIV_AMQP_URL", None)  # the relay runs only where a test asks for it
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            str(KLIV), "operator", *([] if clusterwide else ["--namespace", namespace]), "--log-format", "text", *args,
            env=environment, stdout=sink, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    running = OperatorProcess(process, log)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
