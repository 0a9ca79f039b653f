"""The webhook's self-signed CA and serving certificate (certificates.py)."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

from cryptography import x509
from finetune_operator.certificates import (
    CERT_LIFETIME,
    RENEW_BEFORE,
    Bundle,
    dns_names,
    issue,
    needs_renewal,
)

SERVICE = "ft-finetune-operator-webhook.ops.svc"
NOW = datetime(2026, 12, 4, tzinfo=UTC)


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def test_the_certificate_names_every_way_the_service_is_called_and_its_ca_signed_it():
    bundle = issue(SERVICE, NOW)
    cert, ca = _cert(bundle.cert), _cert(bundle.ca_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == dns_names(SERVICE) == [
        SERVICE, f"{SERVICE}.cluster.local", "ft-finetune-operator-webhook.ops",
        "ft-finetune-operator-webhook"]
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_tls_client_that_trusts_the_ca_accepts_the_certificate(tmp_path):
    bundle = issue(SERVICE, datetime.now(UTC))
    (tmp_path / "cert.pem").write_text(bundle.cert)
    (tmp_path / "key.pem").write_text(bundle.key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")  # key matches cert
    client = ssl.create_default_context(cadata=bundle.ca_cert)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(incoming, outgoing, server_hostname=SERVICE)
    tls_server = server.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):  # the handshake, by hand over memory
        for side in (tls_client, tls_server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        server_in.write(outgoing.read())
        incoming.write(server_out.read())
    assert tls_client.getpeercert()["subjectAltName"][0] == ("DNS", SERVICE)


def test_a_fresh_certificate_needs_no_renewal():
    assert needs_renewal(issue(SERVICE, NOW), SERVICE, NOW) is None


def test_it_is_renewed_near_its_end_with_the_same_ca():
    old = issue(SERVICE, NOW)
    later = NOW + CERT_LIFETIME - RENEW_BEFORE + timedelta(days=1)
    assert needs_renewal(old, SERVICE, later).startswith("it ends ")
    renewed = issue(SERVICE, later, ca=old)
    assert renewed.ca_cert == old.ca_cert  # the injected caBundle stays good
    assert renewed.cert != old.cert
    assert needs_renewal(renewed, SERVICE, later) is None


def test_one_made_for_another_service_or_unreadable_is_replaced():
    other = issue("other-webhook.ops.svc", NOW)
    assert needs_renewal(other, SERVICE, NOW).startswith("it is not made for ")
    broken = Bundle(cert="not a certificate", key="", ca_cert="")
    assert needs_renewal(broken, SERVICE, NOW).startswith("unreadable: ")
