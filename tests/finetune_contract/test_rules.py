"""The contract's cross-field rules: the CEL the API server runs and the Python that
`finetune validate`, the operator and the trainer run agree case by case, in what they reject
and in what they say; the refusals that depend on where a job runs say the same everywhere."""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest
from finetune_contract import api, rules
from finetune_operator.crd import crd

ENV = celpy.Environment()
SPEC = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
# object -> (its schema in the CRD, its pydantic model, its rules, its path)
OBJECTS: dict[str, tuple[dict, type[api.ApiModel], tuple[rules.ObjectRule, ...], str]] = {
    "model": (SPEC["properties"]["model"], api.ModelSpec, rules.MODEL, "spec.model"),
    "source": (SPEC["properties"]["dataset"]["properties"]["train"], api.DataSource,
               rules.DATA_SOURCE, "spec.dataset.train"),
    "dataset": (SPEC["properties"]["dataset"], api.DatasetSpec, rules.DATASET, "spec.dataset"),
    "method": (SPEC["properties"]["method"], api.MethodSpec, rules.METHOD, "spec.method"),
    "training": (SPEC["properties"]["training"], api.TrainingSpec, rules.TRAINING,
                 "spec.training"),
    "resources": (SPEC["properties"]["resources"], api.ResourcesSpec, rules.RESOURCES,
                  "spec.resources"),
    "mlflow": (SPEC["properties"]["training"]["properties"]["mlflow"], api.MlflowTracking,
               rules.MLFLOW, "spec.training.mlflow"),
    "wandb": (SPEC["properties"]["training"]["properties"]["wandb"], api.WandbTracking,
              rules.WANDB, "spec.training.wandb"),
}
MLFLOW = {"trackingUri": "http://mlflow.mlops:5000"}
WANDB = {"project": "chat", "apiKey": {"name": "wandb", "key": "apiKey"}}
SECRET = {"name": "creds", "key": "k"}
LLAMA = {"model_type": "llama", "hidden_size": 64}
TRAIN = {"path": "train.jsonl"}

# (object, the object as written, the indices of the rules it breaks)
CASES: list[tuple[str, dict[str, Any], set[int]]] = [
    ("model", {"name": "org/model"}, set()),
    ("model", {"path": "models/base"}, set()),
    ("model", {"init": "random", "config": LLAMA}, set()),
    ("model", {}, {0}),
    ("model", {"init": "pretrained", "config": LLAMA}, {0}),
    ("model", {"init": "random"}, {1}),
    ("model", {"name": "label", "init": "random"}, {1}),
    ("model", {"name": "org/model", "cachePvc": "hub-cache"}, set()),
    ("model", {"name": "org/model", "init": "pretrained", "cachePvc": "hub-cache"}, set()),
    ("model", {"path": "models/base", "cachePvc": "hub-cache"}, {2}),
    ("model", {"name": "org/model", "path": "models/base", "cachePvc": "hub-cache"}, {2}),
    ("model", {"name": "label", "init": "random", "config": LLAMA, "cachePvc": "c"}, {2}),
    ("source", {"path": "train.jsonl"}, set()),
    ("source", {"hf": "org/data"}, set()),
    ("source", {}, {0}),
    ("source", {"path": "train.jsonl", "hf": "org/data"}, {0}),
    ("dataset", {"train": TRAIN}, set()),
    ("dataset", {"train": TRAIN, "eval": {"path": "eval.jsonl"}}, set()),
    ("dataset", {"train": TRAIN, "evalSplitRatio": 0.1}, set()),
    ("dataset", {"train": TRAIN, "eval": {"path": "eval.jsonl"}, "evalSplitRatio": 0.1}, {0}),
    ("method", {}, set()),
    ("method", {"task": "classification", "numLabels": 3}, set()),
    ("method", {"task": "classification"}, {0}),
    ("method", {"tuning": "freeze"}, {1}),
    ("method", {"tuning": "freeze", "trainableLayers": 2}, set()),
    ("method", {"tuning": "freeze", "task": "classification", "numLabels": 2}, set()),
    ("method", {"tuning": "freeze", "task": "classification"}, {0}),
    ("method", {"tuning": "lora"}, set()),
    ("method", {"tuning": "qlora", "lora": {"rank": 64, "useDora": True}}, set()),
    ("method", {"tuning": "full", "layerwiseLrDecay": 0.8, "l2ToPretrained": 0.1}, set()),
    ("method", {"tuning": "lora", "layerwiseLrDecay": 0.8}, {2}),
    ("method", {"tuning": "qlora", "l2ToPretrained": 0.1}, {3}),
    ("method", {"tuning": "lora", "task": "classification", "numLabels": 2}, {4}),
    ("method", {"tuning": "qlora", "task": "classification"}, {0, 4}),
    ("method", {"tuning": "auto"}, set()),
    ("method", {"tuning": "auto", "layerwiseLrDecay": 0.5, "l2ToPretrained": 1.0}, {2, 3}),
    ("method", {"tuning": "auto", "task": "classification", "numLabels": 2}, {4}),
    ("training", {}, set()),
    ("training", {"globalBatchSize": 8, "microBatchSize": 4}, set()),
    ("training", {"globalBatchSize": 4, "microBatchSize": 4}, set()),
    ("training", {"globalBatchSize": 2, "microBatchSize": 4}, {0}),
    ("training", {"reportTo": ["tensorboard"]}, set()),
    ("training", {"reportTo": ["mlflow", "wandb"], "mlflow": MLFLOW, "wandb": WANDB}, set()),
    ("training", {"reportTo": ["mlflow"]}, {1}),
    ("training", {"mlflow": MLFLOW}, {2}),
    ("training", {"reportTo": ["tensorboard"], "mlflow": MLFLOW}, {2}),
    ("training", {"reportTo": ["wandb"]}, {3}),
    ("training", {"reportTo": ["mlflow"], "wandb": WANDB, "mlflow": MLFLOW}, {4}),
    ("mlflow", MLFLOW, set()),
    ("mlflow", {**MLFLOW, "token": SECRET}, set()),
    ("mlflow", {**MLFLOW, "username": SECRET, "password": SECRET}, set()),
    ("mlflow", {**MLFLOW, "username": SECRET}, {0}),
    ("mlflow", {**MLFLOW, "password": SECRET}, {0}),
    ("mlflow", {**MLFLOW, "token": SECRET, "username": SECRET, "password": SECRET}, {1}),
    ("wandb", WANDB, set()),
    ("wandb", {"mode": "offline"}, set()),
    ("wandb", {}, {0}),
    ("wandb", {"project": "chat", "mode": "online"}, {0}),
    ("resources", {}, set()),
    ("resources", {"maxNodes": 2, "nodes": 2}, set()),
    ("resources", {"maxNodes": 2, "nodes": 8}, {0}),
    ("resources", {"nodes": 5}, {0}),  # maxNodes defaults to 4
]


def with_defaults(value: dict[str, Any], schema: dict) -> dict[str, Any]:
    """What the API server stores: absent fields with a default get it."""
    out = copy.deepcopy(value)
    for name, sub in schema.get("properties", {}).items():
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
    return out


def cel(expression: str, obj: dict[str, Any]) -> Any:
    return ENV.program(ENV.compile(expression)).evaluate({"self": celpy.json_to_cel(obj)})


def python_object(model: type[api.ApiModel], wire: dict[str, Any]) -> Any:
    """The pydantic object; a DataSource is built without its validator, which enforces the
    very rule under test."""
    if model is api.DataSource:
        return model.model_construct(path=wire.get("path"), hf=wire.get("hf"))
    return model.model_validate(wire)


@pytest.mark.parametrize("name,wire,expected", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_cel_and_python_reject_the_same_objects(name, wire, expected):
    schema, model, object_rules, _ = OBJECTS[name]
    stored = with_defaults(wire, schema)
    by_cel = {i for i, rule in enumerate(object_rules) if not cel(rule.cel, stored)}
    obj = python_object(model, wire)
    by_python = {i for i, rule in enumerate(object_rules) if not rule.holds(obj)}
    assert by_cel == by_python == expected


@pytest.mark.parametrize("name,wire,expected", [c for c in CASES if c[2]],
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES) if c[2]])
def test_the_api_server_and_validation_say_the_same(name, wire, expected):
    _, model, object_rules, path = OBJECTS[name]
    obj = python_object(model, wire)
    for index in expected:
        rule = object_rules[index]
        entry = rule.cel_validation()
        said = entry["message"]
        # The server's words are validation's, less the values only validation can fill in.
        assert rule.message_for(obj).startswith(said)
        assert said == rule.message_for(obj) or "(" in rule.message_for(obj)[len(said):]
        # The API server names the field at the rule's fieldPath, validation at its path.
        where = path + entry.get("fieldPath", "")
        assert rule.path_in(path) == where


@pytest.mark.parametrize("name", OBJECTS)
def test_the_crd_carries_exactly_the_rules_of_the_table(name):
    schema, _, object_rules, _ = OBJECTS[name]
    assert schema["x-kubernetes-validations"] == [r.cel_validation() for r in object_rules]


def test_every_rule_has_cases_that_keep_and_break_it():
    for name, (_, _, object_rules, _) in OBJECTS.items():
        for index in range(len(object_rules)):
            verdicts = {index in broken for obj, _, broken in CASES if obj == name}
            assert verdicts == {True, False}, f"{name} rule {index}"


def test_a_message_template_reaches_the_crd_without_its_values():
    """A messageExpression that formats numbers makes a real API server refuse the CRD."""
    rule = rules.ObjectRule(cel="true", holds=lambda _: True, field="nodes",
                            message="must not exceed maxNodes ({nodes} > {maxNodes})")
    entry = rule.cel_validation()
    assert entry == {"rule": "true", "message": "must not exceed maxNodes",
                     "fieldPath": ".nodes"}
    with pytest.raises(ValueError, match="trailing"):
        rules.ObjectRule(cel="true", holds=lambda _: True, message="is {nodes}, too many"
                         ).cel_validation()


# --------------------------------------------------------------------------- where it runs


def test_a_strategy_cpu_ranks_refuse_is_refused_on_cpu_only():
    (message,) = rules.strategy_refusals("fsdp", "cpu", tuning="full", l2_to_pretrained=0)
    assert message.startswith("fsdp is not supported on CPU")
    assert rules.strategy_refusals("fsdp", "cuda", tuning="full", l2_to_pretrained=0) == []


@pytest.mark.parametrize("strategy", ["zero1", "zero2", "zero3", "fsdp", "zero3-offload"])
def test_every_sharded_strategy_refuses_the_methods_that_need_whole_parameters(strategy):
    refusals = rules.strategy_refusals(strategy, "cuda", tuning="gradual-unfreeze",
                                       l2_to_pretrained=0.5)
    expected = f"tuning: gradual-unfreeze and l2ToPretrained needs strategy ddp (got {strategy})"
    assert refusals == [expected]
    assert rules.strategy_refusals("ddp", "cpu", tuning="gradual-unfreeze",
                                   l2_to_pretrained=0.5) == []


def test_fp16_needs_a_gpu():
    assert rules.precision_refusal("fp16", "cpu") == "fp16 needs a GPU; use fp32 or bf16 on cpu"
    assert rules.precision_refusal("fp16", "cuda") is None
    assert rules.precision_refusal("bf16", "cpu") is None


def test_early_stopping_needs_evaluation_and_checkpoints_at_evaluations():
    training = api.TrainingSpec(early_stopping_patience=2, eval_steps=10, save_steps=15)
    assert [f for f, _ in rules.early_stopping_problems(training, has_eval=False)] == [
        "training.earlyStoppingPatience", "training.saveSteps"]
    fine = api.TrainingSpec(early_stopping_patience=2, eval_steps=10, save_steps=20)
    assert rules.early_stopping_problems(fine, has_eval=True) == []
    assert rules.early_stopping_problems(api.TrainingSpec(), has_eval=False) == []


@pytest.mark.parametrize("tuning,allowed", [("lora", {"ddp", "zero2", "zero3", "fsdp"}),
                                            ("qlora", {"ddp"})])
def test_adapters_run_under_the_strategies_their_libraries_support(tuning, allowed):
    for strategy in ("ddp", "zero1", "zero2", "zero3", "fsdp", "zero3-offload"):
        refusals = rules.strategy_refusals(strategy, "cuda", tuning=tuning, l2_to_pretrained=0)
        if strategy in allowed:
            assert refusals == []
        else:
            (message,) = refusals
            assert message.startswith(f"tuning: {tuning} runs under ")
            assert message.endswith(f"; got {strategy})")
    (qlora_zero3,) = rules.strategy_refusals("zero3", "cuda", tuning="qlora", l2_to_pretrained=0)
    assert "bitsandbytes" in qlora_zero3


def test_merging_needs_adapters():
    assert rules.merge_problem("lora", True) is None
    assert rules.merge_problem("qlora", False) is None
    assert rules.merge_problem("full", False) is None
    assert rules.merge_problem("full", True).startswith("merges adapters into the base")
    assert rules.merge_problem("auto", True) is None


def test_auto_trains_the_tuning_its_plan_chose():
    assert rules.trained_tuning("auto", "qlora") == "qlora"
    assert rules.trained_tuning("freeze", None) == "freeze"
    with pytest.raises(ValueError, match="plan.tuning: required"):
        rules.trained_tuning("auto", None)
