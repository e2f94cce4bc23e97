"""Key and certificate primitives for a consortium (the `cryptography` package only, no openssl binary).

- The consortium CA: an ECDSA P-384 key and a self-signed X.509 CA certificate (``basicConstraints CA:TRUE``).
- The SuperLink's TLS server certificate: ECDSA P-384, signed by the CA, with ``subjectAltName`` entries for
  every host name (DNS) and IP address a client may use to reach the SuperLink. ``127.0.0.1`` and
  ``localhost`` are always added: the SuperLink's own SuperExec connects to its Runtime API on loopback.
- A site's SuperNode authentication key pair: ECDSA P-384 (a NIST curve, as Flower 1.41 requires) in the
  OpenSSH formats ``ssh-keygen -t ecdsa -b 384`` writes (``-----BEGIN OPENSSH PRIVATE KEY-----`` and
  ``ecdsa-sha2-nistp384 AAAA... comment``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedecg.errors import FedECGError

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class PemPair:
    """A PEM private key and the PEM certificate that goes with it (bytes, ready to write)."""

    key_pem: bytes
    cert_pem: bytes


@dataclass(frozen=True)
class SshKeyPair:
    """An OpenSSH-format ECDSA key pair (private key unencrypted: the file mode protects it)."""

    private_openssh: bytes
    public_openssh: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise FedECGError(f"certificate validity must be at least 1 day, got {days}")
    now = dt.datetime.now(dt.timezone.utc)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def make_ca(common_name: str, days: int = 3650) -> PemPair:
    """A self-signed CA (ECDSA P-384, SHA-384) that signs the SuperLink certificate."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start, end = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return PemPair(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def san_entries(names: list[str] | tuple[str, ...]) -> list[x509.GeneralName]:
    """Turn host names / IP literals into SAN entries (IP literal → IPAddress, else DNSName), loopback added."""
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in [*names, *LOOPBACK_NAMES]:
        name = raw.strip().strip("[]")
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if any(c.isspace() for c in name) or "/" in name or ":" in name:
                raise FedECGError(f"not a valid host name or IP address for the certificate: {raw!r}") from None
            out.append(x509.DNSName(name))
    return out


def make_server_cert(ca: PemPair, names: list[str] | tuple[str, ...], days: int = 825) -> PemPair:
    """The SuperLink's TLS certificate signed by ``ca``; SANs = ``names`` + loopback (see module doc)."""
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise FedECGError("the CA key is not an EC key")
    sans = san_entries(names)
    key = _new_key()
    first = sans[0].value
    start, end = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(first))]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    return PemPair(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def make_site_keypair(comment: str) -> SshKeyPair:
    """An ECDSA P-384 key pair in OpenSSH format for SuperNode authentication (``comment`` ends the .pub line)."""
    key = _new_key()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return SshKeyPair(private, public + b" " + comment.encode("utf-8") + b"\n")


def ssh_fingerprint(public_openssh: bytes) -> str:
    """``SHA256:...`` fingerprint of an OpenSSH public key line, as ``ssh-keygen -lf`` prints it."""
    parts = public_openssh.split()
    if len(parts) < 2:
        raise FedECGError("not an OpenSSH public key line")
    digest = hashlib.sha256(base64.b64decode(parts[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def cert_sans(cert_pem: bytes) -> list[str]:
    """The SAN entries of a PEM certificate as strings (for reports and tests)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    ]
