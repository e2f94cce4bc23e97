"""deploy.pki: CA, SuperLink certificate (SANs, chain) and OpenSSH site keys as Flower expects them."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from deploy import pki
from fedecg.errors import FedECGError


@pytest.fixture(scope="module")
def ca() -> pki.PemPair:
    return pki.make_ca("test CA", days=30)


def test_ca_is_a_self_signed_ca_certificate(ca):
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    cert.verify_directly_issued_by(cert)


def test_server_cert_has_requested_names_plus_loopback_and_chains_to_ca(ca):
    server = pki.make_server_cert(ca, ["link.hospital.org", "10.1.2.3"], days=30)
    cert = x509.load_pem_x509_certificate(server.cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"link.hospital.org", "localhost"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("127.0.0.1")}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_server_cert_rejects_a_bad_name(ca):
    with pytest.raises(FedECGError, match="not a valid host name"):
        pki.make_server_cert(ca, ["bad name/with slash"])


def test_site_keypair_is_openssh_p384_and_public_matches_private():
    pair = pki.make_site_keypair("consortium:site-a")
    private = load_ssh_private_key(pair.private_openssh, None)
    public = load_ssh_public_key(pair.public_openssh)
    assert pair.private_openssh.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pair.public_openssh.startswith(b"ecdsa-sha2-nistp384 ")
    assert pair.public_openssh.rstrip().endswith(b"consortium:site-a")
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert private.public_key().public_numbers() == public.public_numbers()


def test_ssh_fingerprint_is_stable_and_distinct():
    a, b = pki.make_site_keypair("a"), pki.make_site_keypair("b")
    assert pki.ssh_fingerprint(a.public_openssh) == pki.ssh_fingerprint(a.public_openssh)
    assert pki.ssh_fingerprint(a.public_openssh) != pki.ssh_fingerprint(b.public_openssh)
    assert pki.ssh_fingerprint(a.public_openssh).startswith("SHA256:")
