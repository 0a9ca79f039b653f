"""The names derived from a FineTuneJob, and the longest job name whose derived names fit."""

from __future__ import annotations

from finetune_operator import apirules, names


def test_longest_allowed_name_fits_every_derived_hostname():
    limit = names.max_job_name_length(max_restarts=3, max_nodes=4)
    name = "a" * limit
    for derived in (names.service_name(name), names.pod_hostname(name, 3, 3)):
        assert apirules.is_dns_1035_label(derived)
    assert len(names.pod_hostname("a" * (limit + 1), 3, 3)) > apirules.DNS_LABEL_MAX


def test_metrics_port_names_are_metrics_then_metrics_dash_local_rank():
    assert [names.metrics_port_name(r) for r in (0, 1, 2, 63)] == [
        "metrics", "metrics-1", "metrics-2", "metrics-63"]
    # A container port name is an IANA service name: at most 15 characters.
    assert len(names.metrics_port_name(63)) <= 15
