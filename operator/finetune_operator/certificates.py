"""The webhook's self-signed TLS: a CA of its own and a serving certificate it signs for the
webhook Service's DNS names. Pure: the names and the time in, PEM text out.

The API server trusts the CA through the ValidatingWebhookConfiguration's caBundle; the
certificate is renewed well before it ends (needs_renewal), with the same CA while that one
has long enough to live, so a caBundle already injected stays good.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=3650)
CERT_LIFETIME = timedelta(days=365)
# Renewed once less than this is left: operators restart far more often than this.
RENEW_BEFORE = timedelta(days=30)
# Clocks of the API server and the operator may differ a little.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class Bundle:
    """PEM text, as a kubernetes.io/tls Secret keeps it (tls.crt, tls.key, ca.crt)."""

    cert: str
    key: str
    ca_cert: str
    ca_key: str = ""  # only where the operator signs its own certificates


def dns_names(service: str) -> list[str]:
    """The names the API server may call `service` (<name>.<namespace>.svc) by."""
    name, namespace = service.split(".")[:2]
    return [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local",
            f"{name}.{namespace}", name]


def issue(service: str, now: datetime, ca: Bundle | None = None) -> Bundle:
    """A serving certificate for `service`, signed by `ca`, or by a new CA when none is
    given (or the one given ends before the certificate would)."""
    if ca is None or not ca.ca_key or _not_after(ca.ca_cert) < now + CERT_LIFETIME:
        ca = _new_ca(service, now)
    ca_key = serialization.load_pem_private_key(ca.ca_key.encode(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.encode())
    key = ec.generate_private_key(ec.SECP256R1())
    names = dns_names(service)
    cert = (_builder(names[0], key, now, CERT_LIFETIME)
            .issuer_name(ca_cert.subject)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return Bundle(cert=_pem(cert), key=_key_pem(key), ca_cert=ca.ca_cert, ca_key=ca.ca_key)


def needs_renewal(bundle: Bundle, service: str, now: datetime) -> str | None:
    """Why `bundle` cannot serve `service` until well after `now`; None when it can."""
    try:
        cert = x509.load_pem_x509_certificate(bundle.cert.encode())
        x509.load_pem_x509_certificate(bundle.ca_cert.encode())
        serialization.load_pem_private_key(bundle.key.encode(), password=None)
    except ValueError as err:
        return f"unreadable: {err}"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return "it names no DNS names"
    missing = set(dns_names(service)) - set(sans.value.get_values_for_type(x509.DNSName))
    if missing:
        return f"it is not made for {', '.join(sorted(missing))}"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"it ends {cert.not_valid_after_utc.date().isoformat()}"
    return None


def _new_ca(service: str, now: datetime) -> Bundle:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(f"finetune-operator webhook CA ({service})", key, now, CA_LIFETIME)
            .issuer_name(_name(f"finetune-operator webhook CA ({service})"))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Bundle(cert="", key="", ca_cert=_pem(cert), ca_key=_key_pem(key))


def _builder(common_name: str, key: ec.EllipticCurvePrivateKey, now: datetime,
             lifetime: timedelta) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + lifetime))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _not_after(pem: str) -> datetime:
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()
