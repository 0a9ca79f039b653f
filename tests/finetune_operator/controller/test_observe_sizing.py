"""The sizing pod as the lifecycle sees it (controller/observe.py: sizing_pod_state)."""

from __future__ import annotations

from finetune_operator.controller.observe import sizing_pod_state


def test_a_finished_pod_gives_its_termination_message_and_key():
    state = sizing_pod_state({
        "metadata": {"name": "chat-size", "annotations": {"finetune.dev/sizing-key": "k1"}},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "size", "state": {
            "terminated": {"exitCode": 1, "message": '{"error": "GatedRepo"}'}}}]}})
    assert (state.name, state.key, state.phase) == ("chat-size", "k1", "Failed")
    assert state.message == '{"error": "GatedRepo"}' and not state.deleting


def test_a_pod_past_its_deadline_gives_the_kubelets_message():
    state = sizing_pod_state({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"},
                              "status": {"phase": "Failed", "reason": "DeadlineExceeded",
                                         "message": "Pod was active on the node longer than "
                                                    "the specified deadline"}})
    assert "longer than the specified deadline" in state.message and state.deleting


def test_a_waiting_pod_says_why():
    state = sizing_pod_state({"metadata": {"name": "p"}, "status": {
        "phase": "Pending", "containerStatuses": [{"name": "size", "state": {
            "waiting": {"reason": "ErrImagePull"}}}]}})
    assert state.phase == "Pending" and state.waiting_reason == "ErrImagePull"
    assert sizing_pod_state({"metadata": {}}).phase == "Pending"
