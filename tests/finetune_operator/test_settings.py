"""Operator settings from the environment: the stuck-pods grace period, where 0 means never
(the other durations must be positive), and the GPU node labels; a bad value names its
variable, no traceback."""

from __future__ import annotations

import pytest
from finetune_operator.placement import GpuNodeLabels
from finetune_operator.settings import SettingsError, from_env


def test_the_stuck_pods_grace_period_is_off_unless_set():
    assert from_env({}).stuck_pods_fail_after == 0
    assert from_env({"FINETUNE_STUCK_PODS_FAIL_AFTER": "0"}).stuck_pods_fail_after == 0
    assert from_env({"FINETUNE_STUCK_PODS_FAIL_AFTER": "1800"}).stuck_pods_fail_after == 1800


@pytest.mark.parametrize("text", ["-5", "soon", "inf"])
def test_a_bad_grace_period_is_refused_naming_the_variable(text):
    with pytest.raises(SettingsError, match="FINETUNE_STUCK_PODS_FAIL_AFTER must be a"):
        from_env({"FINETUNE_STUCK_PODS_FAIL_AFTER": text})


def test_zero_stays_refused_where_it_means_nothing():
    with pytest.raises(SettingsError, match="FINETUNE_UNSCHEDULABLE_AFTER must be a positive "
                                            r"number of seconds \(got '0'\)"):
        from_env({"FINETUNE_UNSCHEDULABLE_AFTER": "0"})


def test_gpu_node_labels_default_to_gpu_feature_discovery():
    assert from_env({}).gpu_node_labels == GpuNodeLabels()
    assert from_env({"FINETUNE_GPU_NODE_LABELS": ""}).gpu_node_labels == GpuNodeLabels()


def test_gpu_node_labels_follow_the_variable():
    env = {"FINETUNE_GPU_NODE_LABELS":
           '{"enabled": true, "key": "gpu", "values": {"L4-24GB": ["l4"]}}'}
    assert from_env(env).gpu_node_labels == GpuNodeLabels("gpu", {"L4-24GB": ("l4",)})
    off = {"FINETUNE_GPU_NODE_LABELS": '{"enabled": false, "key": "nvidia.com/gpu.product"}'}
    assert from_env(off).gpu_node_labels is None


def test_a_bad_gpu_node_label_mapping_names_the_variable_and_the_chart_value():
    env = {"FINETUNE_GPU_NODE_LABELS": '{"values": {"H100": ["h100"]}}'}
    with pytest.raises(SettingsError) as err:
        from_env(env)
    message = str(err.value)
    assert message.startswith("FINETUNE_GPU_NODE_LABELS (the chart's trainer.gpuNodeLabels) ")
    assert "did you mean H100-80GB?" in message


WEBHOOK_ENV = {"FINETUNE_WEBHOOK_PORT": "9443",
               "FINETUNE_WEBHOOK_SERVICE": "ft-finetune-operator-webhook.ops.svc",
               "FINETUNE_WEBHOOK_SECRET": "ft-finetune-operator-webhook-tls",
               "FINETUNE_WEBHOOK_CONFIGURATION": "ft-finetune-operator",
               "FINETUNE_NAMESPACE": "ops"}


@pytest.mark.parametrize("port", ["", "0"])
def test_the_webhook_is_off_unless_a_port_is_set(port):
    assert from_env({**WEBHOOK_ENV, "FINETUNE_WEBHOOK_PORT": port}).webhook is None


def test_the_webhook_settings_follow_the_variables():
    webhook = from_env(WEBHOOK_ENV).webhook
    assert (webhook.port, webhook.service, webhook.namespace, webhook.secret,
            webhook.configuration, webhook.cert_dir) == (
        9443, "ft-finetune-operator-webhook.ops.svc", "ops",
        "ft-finetune-operator-webhook-tls", "ft-finetune-operator", "")


def test_a_self_signed_webhook_without_its_secret_is_refused_naming_the_variables():
    env = {k: v for k, v in WEBHOOK_ENV.items() if k != "FINETUNE_WEBHOOK_SECRET"}
    with pytest.raises(SettingsError, match="so FINETUNE_WEBHOOK_SECRET must be too"):
        from_env(env)


def test_with_cert_managers_files_no_secret_is_needed():
    env = {"FINETUNE_WEBHOOK_PORT": "9443", "FINETUNE_WEBHOOK_SERVICE": "w.ops.svc",
           "FINETUNE_WEBHOOK_CERT_DIR": "/etc/finetune-webhook-tls"}
    assert from_env(env).webhook.cert_dir == "/etc/finetune-webhook-tls"
