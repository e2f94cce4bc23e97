"""Provision a consortium folder: CA, SuperLink TLS certificate, one SuperNode key pair and bundle per site.

Layout written by :func:`provision_consortium` (``OUT``)::

    OUT/consortium.json                    public facts only: sites, address, SANs, key fingerprints
    OUT/coordinator/                       stays with the coordinator (holds the only copy of the CA key)
        ca/ca.key  ca/ca.crt               CA key (0600) and certificate
        superlink/server.key server.crt    SuperLink TLS key (0600) + certificate; superlink/ca.crt
        site-keys/<site>.pub               public keys to register with `flwr supernode register`
        flwr-home/config.toml              FLWR_HOME for `flwr run` / `flwr supernode register`
        start-superlink.sh register-sites.sh run-app.sh README.md
    OUT/sites/<site>/                      one bundle per hospital, handed over as a whole
        ca.crt                             to verify the SuperLink (--root-certificates)
        supernode.key supernode.pub        this site's authentication key pair (private key 0600, only here)
        site.env                           SITE, SUPERLINK address, DATA_DIR placeholder
        start-supernode.sh README.md       the start command and the steps
        fedecg-supernode.service           a systemd unit (restart after a crash, 90 s later)

A private key is written once, into its own folder, and never copied: the CA key only under ``coordinator/ca``,
the SuperLink key only under ``coordinator/superlink``, a site's key only under ``sites/<site>``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template

from deploy import pki
from fedecg.errors import FedECGError
from fedecg.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

SITE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
DEFAULT_PORT = 8000  # flower-superlink 1.41 serves Fleet, Control and Runtime APIs on one HTTPS port
CONNECTION_NAME = "consortium"
TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class ConsortiumSpec:
    """What to provision. ``superlink_host`` is the address the sites dial; ``sans`` are extra certificate names."""

    sites: tuple[str, ...]
    superlink_host: str
    port: int = DEFAULT_PORT
    sans: tuple[str, ...] = ()
    name: str = "fedecg-consortium"
    ca_days: int = 3650
    cert_days: int = 825

    def __post_init__(self) -> None:
        if not self.sites:
            raise FedECGError("at least one site is needed (--sites a,b,c)")
        for site in self.sites:
            if not SITE_NAME_RE.match(site):
                raise FedECGError(
                    f"site name {site!r} is not allowed: use 1-40 of a-z, 0-9, '-', '_' (starting alnum)"
                )
        if len(set(self.sites)) != len(self.sites):
            raise FedECGError(f"site names repeat: {', '.join(self.sites)}")
        if not 1 <= self.port <= 65535:
            raise FedECGError(f"port {self.port} is outside 1-65535")
        if not self.superlink_host.strip():
            raise FedECGError("--superlink-host is empty")

    @property
    def superlink_address(self) -> str:
        host = self.superlink_host.strip()
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        return f"{host}:{self.port}"

    @property
    def cert_names(self) -> tuple[str, ...]:
        return (self.superlink_host.strip().strip("[]"), *self.sans)


@dataclass(frozen=True)
class SitePaths:
    """Files of one site bundle."""

    root: Path
    ca_cert: Path
    private_key: Path
    public_key: Path
    start_script: Path


@dataclass(frozen=True)
class Consortium:
    """Paths of a provisioned consortium folder (read back with :func:`load_consortium`)."""

    root: Path
    spec: ConsortiumSpec
    sites: dict[str, SitePaths] = field(default_factory=dict)

    @property
    def coordinator(self) -> Path:
        return self.root / "coordinator"

    @property
    def ca_cert(self) -> Path:
        return self.coordinator / "ca" / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.coordinator / "superlink" / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.coordinator / "superlink" / "server.key"

    @property
    def flwr_home(self) -> Path:
        return self.coordinator / "flwr-home"

    def site_public_key(self, site: str) -> Path:
        return self.coordinator / "site-keys" / f"{site}.pub"


def _site_paths(root: Path, site: str) -> SitePaths:
    base = root / "sites" / site
    return SitePaths(
        root=base,
        ca_cert=base / "ca.crt",
        private_key=base / "supernode.key",
        public_key=base / "supernode.pub",
        start_script=base / "start-supernode.sh",
    )


def _write_private(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, perms=stat.S_IRUSR | stat.S_IWUSR)  # 0600 before it becomes visible


def _write_public(path: Path, data: bytes | str, executable: bool = False) -> None:
    if isinstance(data, str):
        atomic_write_text(path, data)
    else:
        atomic_write_bytes(path, data)
    os.chmod(path, 0o755 if executable else 0o644)


def render_template(name: str, **values: object) -> str:
    """Fill ``deploy/templates/<name>`` (``string.Template`` syntax, ``$$`` for a literal ``$``)."""
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    try:
        return Template(text).substitute({k: str(v) for k, v in values.items()})
    except KeyError as exc:
        raise FedECGError(f"template {name} needs a value for {exc}") from None


def flwr_config_toml(address: str, root_certificates: Path | str, name: str = CONNECTION_NAME) -> str:
    """A FLWR_HOME/config.toml whose default SuperLink connection is ``name`` (TLS with our CA)."""
    return render_template(
        "flwr-config.toml", connection=name, address=address, root_certificates=Path(root_certificates).as_posix()
    )


def provision_consortium(out: Path, spec: ConsortiumSpec, overwrite: bool = False) -> Consortium:
    """Create the consortium folder ``out`` (see module doc). Refuses a non-empty ``out`` unless ``overwrite``."""
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FedECGError(f"{out} is not empty: choose a new folder (existing keys are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    cons = Consortium(root=out, spec=spec, sites={s: _site_paths(out, s) for s in spec.sites})

    ca = pki.make_ca(f"{spec.name} CA", days=spec.ca_days)
    server = pki.make_server_cert(ca, list(spec.cert_names), days=spec.cert_days)
    _write_private(cons.coordinator / "ca" / "ca.key", ca.key_pem)
    _write_public(cons.ca_cert, ca.cert_pem)
    _write_private(cons.server_key, server.key_pem)
    _write_public(cons.server_cert, server.cert_pem)
    _write_public(cons.coordinator / "superlink" / "ca.crt", ca.cert_pem)

    fingerprints: dict[str, str] = {}
    for site, paths in cons.sites.items():
        pair = pki.make_site_keypair(comment=f"{spec.name}:{site}")
        fingerprints[site] = pki.ssh_fingerprint(pair.public_openssh)
        _write_private(paths.private_key, pair.private_openssh)
        _write_public(paths.public_key, pair.public_openssh)
        _write_public(cons.site_public_key(site), pair.public_openssh)
        _write_public(paths.ca_cert, ca.cert_pem)
        _write_public(paths.root / "site.env", render_template(
            "site.env", site=site, superlink=spec.superlink_address))
        _write_public(paths.start_script, render_template("start-supernode.sh", site=site), executable=True)
        _write_public(paths.root / "fedecg-supernode.service", render_template("fedecg-supernode.service", site=site))
        _write_public(paths.root / "README.md", render_template(
            "site-README.md", site=site, superlink=spec.superlink_address, fingerprint=fingerprints[site],
            consortium=spec.name))

    _write_coordinator_files(cons, fingerprints)
    manifest = {
        "format": "fedecg-consortium/1",
        "spec": {**asdict(spec), "sites": list(spec.sites), "sans": list(spec.sans)},
        "superlink_address": spec.superlink_address,
        "certificate_sans": pki.cert_sans(server.cert_pem),
        "site_key_fingerprints": fingerprints,
    }
    _write_public(out / "consortium.json", json.dumps(manifest, indent=2) + "\n")
    log.info("provisioned %d sites under %s", len(spec.sites), out)
    return cons


def _write_coordinator_files(cons: Consortium, fingerprints: dict[str, str]) -> None:
    spec = cons.spec
    coord = cons.coordinator
    local_address = f"127.0.0.1:{spec.port}"  # the coordinator's own CLI talks to its SuperLink on loopback
    _write_public(cons.flwr_home / "config.toml",
                  flwr_config_toml(local_address, coord / "superlink" / "ca.crt"))
    _write_public(coord / "write-flwr-config.sh", render_template(
        "write-flwr-config.sh", connection=CONNECTION_NAME, address=local_address), executable=True)
    _write_public(coord / "start-superlink.sh", render_template("start-superlink.sh", port=spec.port),
                  executable=True)
    _write_public(coord / "register-sites.sh", render_template(
        "register-sites.sh", sites=" ".join(spec.sites), connection=CONNECTION_NAME), executable=True)
    _write_public(coord / "run-app.sh", render_template("run-app.sh", connection=CONNECTION_NAME),
                  executable=True)
    table = "\n".join(f"| {s} | `sites/{s}/` | `{fp}` |" for s, fp in fingerprints.items())
    _write_public(coord / "README.md", render_template(
        "coordinator-README.md", consortium=spec.name, superlink=spec.superlink_address, port=spec.port,
        sans=", ".join(pki.cert_sans(cons.server_cert.read_bytes())), site_table=table))


def load_consortium(root: Path) -> Consortium:
    """Read a provisioned folder back (validates ``consortium.json`` and that the coordinator files exist)."""
    root = Path(root).resolve()
    path = root / "consortium.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FedECGError(f"{path} not found: is {root} a folder made by `fedecg deploy provision`?") from None
    except json.JSONDecodeError as exc:
        raise FedECGError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != "fedecg-consortium/1":
        raise FedECGError(f"{path}: unknown format {manifest.get('format')!r}")
    raw = dict(manifest["spec"])
    raw["sites"] = tuple(raw["sites"])
    raw["sans"] = tuple(raw.get("sans", ()))
    spec = ConsortiumSpec(**raw)
    cons = Consortium(root=root, spec=spec, sites={s: _site_paths(root, s) for s in spec.sites})
    for needed in (cons.ca_cert, cons.server_cert, cons.server_key):
        if not needed.is_file():
            raise FedECGError(f"{needed} is missing from the consortium folder")
    return cons
