"""The webhook certificate kept in its Secret and the CA injected (controller/webhook_tls.py),
against an in-memory stand-in for the Secrets API; the real API server runs the same through
tests/e2e/test_cluster_webhook.py (the restart keeps the certificate)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from finetune_operator.certificates import CERT_LIFETIME
from finetune_operator.controller.webhook_tls import inject_ca, serving_bundle, write_files
from finetune_operator.settings import WebhookSettings
from kubernetes.client.exceptions import ApiException

WEBHOOK = WebhookSettings(port=9443, service="ft-webhook.ops.svc", namespace="ops",
                          secret="ft-webhook-tls", configuration="ft")
NOW = datetime(2026, 12, 4, tzinfo=UTC)


class Secrets:
    """Secrets with resourceVersions: a create of an existing one, or a replace of a stale
    one, gets 409 as from the API server."""

    def __init__(self) -> None:
        self.stored: dict[str, SimpleNamespace] = {}
        self.writes = 0
        self.before_write = lambda: None  # what another replica does meanwhile

    def read_namespaced_secret(self, name, namespace):
        if name not in self.stored:
            raise ApiException(status=404)
        return self.stored[name]

    def create_namespaced_secret(self, namespace, body):
        self.before_write()
        if body.metadata.name in self.stored:
            raise ApiException(status=409)
        self._store(body)

    def replace_namespaced_secret(self, name, namespace, body):
        self.before_write()
        if self.stored[name].metadata.resource_version != body.metadata.resource_version:
            raise ApiException(status=409)
        self._store(body)

    def _store(self, body) -> None:
        self.writes += 1
        self.stored[body.metadata.name] = SimpleNamespace(
            data=dict(body.data), metadata=SimpleNamespace(resource_version=str(self.writes)))


def test_the_first_start_makes_the_certificate_and_later_ones_read_it_back():
    secrets = Secrets()
    first = serving_bundle(WEBHOOK, NOW, secrets)
    again = serving_bundle(WEBHOOK, NOW + timedelta(days=1), secrets)  # a restart, a replica
    assert again == first and secrets.writes == 1
    stored = secrets.stored["ft-webhook-tls"].data
    assert base64.b64decode(stored["ca.crt"]).decode() == first.ca_cert


def test_replicas_starting_together_serve_the_one_that_was_stored_first():
    secrets = Secrets()
    theirs = {}

    def other_replica_wins() -> None:
        secrets.before_write = lambda: None
        theirs["bundle"] = serving_bundle(WEBHOOK, NOW, secrets)

    secrets.before_write = other_replica_wins
    ours = serving_bundle(WEBHOOK, NOW, secrets)
    assert ours == theirs["bundle"] and secrets.writes == 1


def test_a_certificate_near_its_end_is_renewed_under_the_same_ca():
    secrets = Secrets()
    first = serving_bundle(WEBHOOK, NOW, secrets)
    renewed = serving_bundle(WEBHOOK, NOW + CERT_LIFETIME - timedelta(days=1), secrets)
    assert renewed.cert != first.cert and renewed.ca_cert == first.ca_cert


def test_cert_managers_mounted_files_are_served_as_they_are(tmp_path):
    for name, text in (("tls.crt", "CERT"), ("tls.key", "KEY"), ("ca.crt", "CA")):
        (tmp_path / name).write_text(text)
    mounted = WebhookSettings(port=9443, service="ft-webhook.ops.svc", cert_dir=str(tmp_path))
    bundle = serving_bundle(mounted, NOW, core=None)
    assert (bundle.cert, bundle.key, bundle.ca_cert) == ("CERT", "KEY", "CA")


class Configurations:
    def __init__(self, bundles: list[str | None]) -> None:
        self.hooks = [SimpleNamespace(client_config=SimpleNamespace(ca_bundle=b))
                      for b in bundles]
        self.patches: list[list[dict]] = []

    def read_validating_webhook_configuration(self, name):
        return SimpleNamespace(webhooks=self.hooks)

    def patch_validating_webhook_configuration(self, name, patch):
        self.patches.append(patch)


@pytest.mark.parametrize("present", [None, "b2xk"])
def test_the_ca_goes_into_every_webhook_that_lacks_it(present):
    configurations = Configurations([present])
    inject_ca(WEBHOOK, "CA PEM", configurations)
    value = base64.b64encode(b"CA PEM").decode()
    assert configurations.patches == [[{"op": "add", "path": "/webhooks/0/clientConfig/caBundle",
                                        "value": value}]]
    configurations.hooks[0].client_config.ca_bundle = value
    inject_ca(WEBHOOK, "CA PEM", configurations)
    assert len(configurations.patches) == 1  # already there: nothing written


def test_the_key_file_is_readable_by_its_owner_only(tmp_path):
    bundle = serving_bundle(WEBHOOK, NOW, Secrets())
    cert, key = write_files(bundle, tmp_path / "tls")
    assert cert.read_text() == bundle.cert
    assert key.stat().st_mode & 0o077 == 0
