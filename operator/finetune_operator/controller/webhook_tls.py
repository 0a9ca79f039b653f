"""The webhook's certificate, kept where every replica finds the same one, and its CA put
where the API server reads it.

Self-signed (the default): the CA and the serving certificate live in one Secret of the
operator's namespace. The first replica to start makes them; a second one, or a restart,
reads them back, so the caBundle injected before stays good across restarts and upgrades.
Two replicas starting at once: one create wins, the other gets 409 and reads the winner's.
With cert-manager, its Secret is mounted and cert-manager injects the CA itself.
"""

from __future__ import annotations

import base64
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from finetune_operator.certificates import Bundle, issue, needs_renewal
from finetune_operator.settings import WebhookSettings

log = logging.getLogger(__name__)

# The keys of a kubernetes.io/tls Secret, and the CA's (cert-manager's names).
CERT, KEY, CA_CERT, CA_KEY = "tls.crt", "tls.key", "ca.crt", "ca.key"
ATTEMPTS = 3


def serving_bundle(webhook: WebhookSettings, now: datetime,
                   core: Any = None) -> Bundle:
    """The certificate to serve: cert-manager's files when mounted, else the Secret's,
    made or renewed first when it is missing or due."""
    if webhook.cert_dir:
        folder = Path(webhook.cert_dir)
        return Bundle(cert=(folder / CERT).read_text(), key=(folder / KEY).read_text(),
                      ca_cert=(folder / CA_CERT).read_text())
    core = core or kubernetes.client.CoreV1Api()
    for _ in range(ATTEMPTS):
        secret = _read_secret(core, webhook)
        stored = _bundle(secret)
        why = "there is none" if stored is None else needs_renewal(stored, webhook.service, now)
        if why is None:
            assert stored is not None
            return stored
        fresh = issue(webhook.service, now, ca=stored)
        try:
            _write_secret(core, webhook, secret, fresh)
        except ApiException as err:
            if err.status == 409:  # another replica wrote it first: read theirs
                continue
            raise
        log.info("webhook certificate for %s made and kept in Secret %s/%s (%s before)",
                 webhook.service, webhook.namespace, webhook.secret, why)
        return fresh
    raise RuntimeError(f"Secret {webhook.namespace}/{webhook.secret} kept changing while the "
                       "webhook certificate was written; restart the operator")


def inject_ca(webhook: WebhookSettings, ca_cert: str, admission: Any = None) -> None:
    """Put the CA into every webhook of the ValidatingWebhookConfiguration, where it differs."""
    admission = admission or kubernetes.client.AdmissionregistrationV1Api()
    config = admission.read_validating_webhook_configuration(webhook.configuration)
    bundle = base64.b64encode(ca_cert.encode()).decode()
    patch = [{"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
             for i, hook in enumerate(config.webhooks or [])
             if hook.client_config.ca_bundle != bundle]
    if patch:
        admission.patch_validating_webhook_configuration(webhook.configuration, patch)
        log.info("CA bundle put into ValidatingWebhookConfiguration %s", webhook.configuration)


def write_files(bundle: Bundle, folder: Path) -> tuple[Path, Path]:
    """The certificate and key as the webhook server reads them (the key owner-only)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / CERT, folder / KEY
    cert.write_text(bundle.cert)
    key.touch(mode=0o600)
    key.write_text(bundle.key)
    return cert, key


def _read_secret(core: Any, webhook: WebhookSettings) -> Any:
    try:
        return core.read_namespaced_secret(webhook.secret, webhook.namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _bundle(secret: Any) -> Bundle | None:
    data = (secret.data or {}) if secret is not None else {}
    if not all(k in data for k in (CERT, KEY, CA_CERT, CA_KEY)):
        return None
    text = {k: base64.b64decode(v).decode() for k, v in data.items()}
    return Bundle(cert=text[CERT], key=text[KEY], ca_cert=text[CA_CERT], ca_key=text[CA_KEY])


def _write_secret(core: Any, webhook: WebhookSettings, old: Any, bundle: Bundle) -> None:
    """Create it, or replace the one read (its resourceVersion: 409 if it changed since)."""
    data = {CERT: bundle.cert, KEY: bundle.key, CA_CERT: bundle.ca_cert, CA_KEY: bundle.ca_key}
    body = kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(
            name=webhook.secret, namespace=webhook.namespace,
            labels={"app.kubernetes.io/managed-by": "finetune-operator"},
            resource_version=old.metadata.resource_version if old is not None else None),
        type="kubernetes.io/tls",
        data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()})
    if old is None:
        core.create_namespaced_secret(webhook.namespace, body)
    else:
        core.replace_namespaced_secret(webhook.secret, webhook.namespace, body)
