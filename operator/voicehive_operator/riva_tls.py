"""One certificate per managed Riva pool: a private CA and a server certificate for its Service.

WHY the operator issues them: the pool's gRPC is served over TLS by an nginx sidecar (the Riva
ASR NIM has no setting we could verify for TLS on its own gRPC port), and the only parties that
must trust it are the pool's callers (worker Pods, the operator's provider check), which the
operator configures anyway. So no cert-manager is required: a small ECDSA P-256 CA per pool,
whose key stays in the pool's Secret so the server certificate can be renewed without changing
what callers trust. No I/O here; ``riva.py`` stores and reads the Secret.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650  # the trust anchor callers hold; outlives any server certificate it signs
CERT_DAYS = 365
RENEW_BEFORE_DAYS = 30  # re-issue the server certificate this long before it expires
BACKDATE = dt.timedelta(minutes=5)  # tolerate clocks slightly behind the operator's
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

# Keys of the pool's kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt are the type's conventions).
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"


def service_dns_names(service: str, namespace: str) -> list[str]:
    """Every name a Pod may dial a Service by (the certificate's subjectAltNames)."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


@dataclass(frozen=True)
class PoolTls:
    """PEM texts of one pool's CA and server certificate; the keys never appear in ``repr``."""

    ca_pem: str
    cert_pem: str
    ca_key_pem: str = field(repr=False)
    key_pem: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """Short SHA-256 of the server certificate (public): a renewal changes it, and the pool's
        Pod template carries it so nginx restarts with the new certificate."""
        return hashlib.sha256(self.cert_pem.encode()).hexdigest()[:16]

    def secret_data(self) -> dict[str, str]:
        return {TLS_CERT: self.cert_pem, TLS_KEY: self.key_pem, CA_CERT: self.ca_pem, CA_KEY: self.ca_key_pem}


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _new_ca(common_name: str, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(service: str, namespace: str, now: dt.datetime, ca: PoolTls | None = None) -> PoolTls:
    """A server certificate for the Service's names, signed by ``ca``'s CA (kept) or a new one."""
    if ca is not None:
        ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
        loaded = serialization.load_pem_private_key(ca.ca_key_pem.encode(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError("the pool CA key is not an EC key")
        ca_key = loaded
    else:
        ca_cert, ca_key = _new_ca(f"VoiceHive Riva pool CA {namespace}/{service}", now)
    key = ec.generate_private_key(ec.SECP256R1())
    names = service_dns_names(service, namespace)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[2])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=CERT_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return PoolTls(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        ca_key_pem=ca.ca_key_pem if ca is not None else _pem_key(ca_key),
        key_pem=_pem_key(key),
    )


def from_secret(data: dict[str, str]) -> PoolTls | None:
    """The material of a pool Secret, or ``None`` when a key is missing (then it is re-issued)."""
    try:
        return PoolTls(ca_pem=data[CA_CERT], cert_pem=data[TLS_CERT], ca_key_pem=data[CA_KEY], key_pem=data[TLS_KEY])
    except KeyError:
        return None


def renewal_reason(tls: PoolTls, service: str, namespace: str, now: dt.datetime) -> str | None:
    """Why the stored material cannot serve as it is (plain words), or ``None`` when it can.

    ``"ca"`` in the returned text means the CA itself is unusable and a new one is needed.
    """
    try:
        ca = x509.load_pem_x509_certificate(tls.ca_pem.encode())
        cert = x509.load_pem_x509_certificate(tls.cert_pem.encode())
    except ValueError:
        return "ca: the stored certificates cannot be read"
    if ca.not_valid_after_utc - now < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return "ca: the pool CA expires soon"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "the server certificate was not issued by the stored CA"
    if cert.not_valid_after_utc - now < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return "the server certificate expires soon"
    try:
        key = serialization.load_pem_private_key(tls.key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return "the server key cannot be read"
    if key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
        return "the server key does not match its certificate"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        sans = []
    if sorted(sans) != sorted(service_dns_names(service, namespace)):
        return "the server certificate names another Service"
    return None


def ensure(existing: PoolTls | None, service: str, namespace: str, now: dt.datetime) -> tuple[PoolTls, str | None]:
    """The material to use and, when it had to be (re-)issued, why; keeps the CA when it can."""
    if existing is None:
        return issue(service, namespace, now), "issued"
    reason = renewal_reason(existing, service, namespace, now)
    if reason is None:
        return existing, None
    keep_ca = not reason.startswith("ca:")
    try:
        return issue(service, namespace, now, existing if keep_ca else None), reason
    except ValueError:
        return issue(service, namespace, now), "the stored CA key cannot be read"
