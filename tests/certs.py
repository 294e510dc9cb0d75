"""Throw-away PKI for TLS and token tests: a CA, server and client
certificates, token signing keys, written as PEM files.

Plain ``cryptography`` (no Twisted), usable from unit, integration and
end-to-end tests alike.
"""

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_key(kind="ec"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(certificate):
    return certificate.public_bytes(serialization.Encoding.PEM)


def _builder(subject, issuer, public_key, days=1, not_before=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    start = not_before or now - datetime.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
    )


class CA:
    """A certificate authority that issues server and client certificates."""

    def __init__(self, name="registryd test CA"):
        self.key = new_key()
        self.certificate = (
            _builder(_name(name), _name(name), self.key.public_key(), days=2)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self):
        return cert_pem(self.certificate)

    def issue(
        self, common_name, dns=(), ips=(), client=False, key=None, days=1, not_before=None, ca=False
    ):
        """``(key, certificate)`` for a server (or client) named so."""
        key = key or new_key()
        names = [x509.DNSName(name) for name in dns] + [
            x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips
        ]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            _builder(
                _name(common_name), self.certificate.subject, key.public_key(), days, not_before
            )
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


def self_signed(key, common_name="token signer", days=1):
    """A self-signed certificate for ``key`` (a token server's usual
    ``rootcertbundle``)."""
    subject = _name(common_name)
    return _builder(subject, subject, key.public_key(), days).sign(key, hashes.SHA256())


def write(directory, name, data):
    path = Path(directory) / name
    path.write_bytes(data)
    return str(path)


def server_files(directory, ca, dns=("localhost",), ips=("127.0.0.1", "::1"), prefix="server"):
    """Write ``prefix``.crt and ``prefix``.key for a server certificate from
    ``ca``; return their paths."""
    key, certificate = ca.issue(dns[0] if dns else "registryd", dns=dns, ips=ips)
    return (
        write(directory, f"{prefix}.crt", cert_pem(certificate)),
        write(directory, f"{prefix}.key", key_pem(key)),
    )
