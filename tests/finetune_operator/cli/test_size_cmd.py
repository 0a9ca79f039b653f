"""`finetune size`: what the operator's sizing pod runs, against the Hub stand-in."""

from __future__ import annotations

import json

from finetune_operator.cli import main
from finetune_operator.sizing import parse_result


def test_prints_and_writes_the_sizing_of_a_hub_model(tiny_hub, tiny_model, tmp_path, capsys):
    log = tmp_path / "termination-log"
    assert main(["size", "--model", "acme/tiny", "--termination-log", str(log)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == log.read_text()
    result = parse_result(printed)
    assert result.parameters == tiny_model[1] and result.config["model_type"] == "llama"
    assert result.commit == tiny_hub.repos[("model", "acme/tiny")].branches["main"]


def test_a_gated_model_without_a_token_is_an_error_object(tiny_hub, tmp_path, capsys):
    log = tmp_path / "termination-log"
    assert main(["size", "--model", "acme/gated", "--termination-log", str(log)]) == 1
    value = json.loads(log.read_text())
    assert value["error"] == "GatedRepo" and "spec.secrets.hfToken" in value["message"]
    assert capsys.readouterr().out.strip() == log.read_text()


def test_the_token_comes_from_hf_token(tiny_hub, tiny_model, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    assert main(["size", "--model", "acme/gated"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == tiny_model[1]


def test_a_folder(tiny_model, capsys):
    assert main(["size", "--path", str(tiny_model[0])]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == tiny_model[1]
