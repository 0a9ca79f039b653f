"""Every size a job gives is bounded (bounds.py) before anything is planned: generated
values around each bound (bound - 1, bound, bound + 1), huge ones, negative ones, floats for
integers, each through `validate_spec` as the operator calls it (no planning) and through
the planner's own count for a config it reads from a file or a sizing pod."""

from __future__ import annotations

import copy
import random
from decimal import Decimal

import pytest
from finetune_operator import bounds
from finetune_operator.planner.parameters import ConfigError, count_parameters
from finetune_operator.sizes import format_size, parse_quantity, parse_size
from finetune_operator.validation import validate_spec

from tests.support.ftj_samples import spec_dict

GPT2_KEYS = {"n_layer", "n_embd", "n_inner", "n_head", "n_positions"}
RNG = random.Random(15)


def model_type_of(key: str) -> str:
    return "gpt2" if key in GPT2_KEYS else "mixtral" if "expert" in key else "llama"


def job_with(key: str, value: object) -> dict:
    spec = copy.deepcopy(spec_dict())
    spec["model"]["config"] = {"model_type": model_type_of(key), key: value}
    return spec


def problems_at(spec: dict, field: str) -> list[str]:
    _, problems = validate_spec(spec, "bounded", plan=False)
    return [p.message for p in problems if p.path == field]


def too_large(limit: int) -> list[int]:
    return [limit + 1, limit + RNG.randrange(2, 10**6), limit * 1000, 10**18, 10**400]


def not_sizes() -> list[object]:
    return [0, -1, -RNG.randrange(2, 10**9), -(10**30), 2.5, "64", True, [64], {"n": 64}]


CONFIG_CASES = [(key, value, "ok") for key, b in bounds.CONFIG_BOUNDS.items()
                for value in (b.limit - 1, b.limit, RNG.randrange(1, b.limit))]
CONFIG_CASES += [(key, value, "bound") for key, b in bounds.CONFIG_BOUNDS.items()
                 for value in too_large(b.limit)]
CONFIG_CASES += [(key, value, "type") for key in bounds.CONFIG_BOUNDS for value in not_sizes()]
# A whole float reaches the API server as an integer (YAML goes through JSON: 27.0 is 27),
# and validation reads it so (validation.wire_form).
CONFIG_CASES += [(key, float(RNG.randrange(1, 99)), "ok") for key in bounds.CONFIG_BOUNDS]


@pytest.mark.parametrize(("key", "value", "expect"), CONFIG_CASES)
def test_every_config_size_is_checked_against_its_bound_before_planning(key, value, expect):
    found = problems_at(job_with(key, value), f"spec.model.config.{key}")
    if expect == "ok":
        assert found == []
        return
    assert len(found) == 1, found
    if expect == "type":
        assert found[0].startswith("must be a positive integer")
    else:
        limit = bounds.CONFIG_BOUNDS[key].limit
        assert f"above the bound of {limit} " in found[0]
        assert "give the model's real size" in found[0]
    assert len(found[0]) < 300  # the value quoted short, whatever it was


# The planner does not read max_position_embeddings (validation bounds it).
PLANNED_SIZES = [key for key in bounds.CONFIG_BOUNDS if key != "max_position_embeddings"]


@pytest.mark.parametrize(("key", "value"), [(key, value) for key in PLANNED_SIZES
                                            for value in too_large(
                                                bounds.CONFIG_BOUNDS[key].limit)[:2]])
def test_the_planner_refuses_a_config_size_above_its_bound(key, value):
    """A config from a model's folder or a sizing pod never went through validate_spec."""
    config = {"model_type": model_type_of(key), key: value}  # the family's defaults besides
    with pytest.raises(ConfigError) as err:
        count_parameters(config)
    assert err.value.key == key and "above the bound" in err.value.message


def test_sizes_each_within_bounds_can_still_count_too_many_parameters():
    config = {"model_type": "llama", "vocab_size": 32000,
              "num_hidden_layers": bounds.CONFIG_BOUNDS["num_hidden_layers"].limit,
              "hidden_size": bounds.CONFIG_BOUNDS["hidden_size"].limit,
              "intermediate_size": bounds.CONFIG_BOUNDS["intermediate_size"].limit}
    with pytest.raises(ConfigError) as err:
        count_parameters(config)
    assert err.value.key is None
    assert f"above the bound of {format_size(bounds.PARAMETERS.limit)}" in err.value.message


LIMIT = bounds.PARAMETERS.limit
PARAMETER_CASES = [(LIMIT - 1, "ok"), (LIMIT, "ok"), (LIMIT + 1, "bound"),
                   (RNG.randrange(1, LIMIT), "ok"), (RNG.randrange(LIMIT + 1, 10**20), "bound"),
                   (10**400, "bound"), (-1, "positive"), (0, "positive"),
                   (f"{LIMIT // 10**12}T", "ok"), (f"{LIMIT // 10**12}.000000000001T", "bound"),
                   ("9" * 500 + "T", "bound"), ("9" * 5000, "bound"), ("1e5", "size"),
                   (f"{LIMIT // 10**9 - 1}B", "ok"), ("x" * 100_000, "size")]


@pytest.mark.parametrize(("value", "expect"), PARAMETER_CASES,
                         ids=[str(i) for i in range(len(PARAMETER_CASES))])
def test_model_parameters_are_bounded(value, expect):
    if expect == "ok":
        assert 0 < parse_size(value) <= LIMIT
        return
    with pytest.raises(ValueError) as err:
        parse_size(value)
    message = str(err.value)
    assert len(message) < 300
    if expect == "bound":
        assert f"above the bound of {format_size(LIMIT)} " in message
    spec = copy.deepcopy(spec_dict())
    spec["model"] = {"name": "some-org/some-model", "parameters": value}
    assert problems_at(spec, "spec.model.parameters") == [message]


MEMORY, CPUS = bounds.MEMORY_BYTES.limit, bounds.CPUS.limit
QUANTITY_CASES = [("memory", str(MEMORY - 1), "ok"), ("memory", str(MEMORY), "ok"),
                  ("memory", str(MEMORY + 1), "bound"), ("memory", "1024Ti", "ok"),
                  ("memory", "1025Ti", "bound"), ("memory", "1e400", "bound"),
                  ("memory", "9" * 30, "bound"), ("memory", "-16Gi", "positive"),
                  ("cpu", str(CPUS - 1), "ok"), ("cpu", str(CPUS), "ok"),
                  ("cpu", str(CPUS + 1), "bound"), ("cpu", f"{CPUS * 1000 + 1}m", "bound"),
                  ("cpu", "1e400", "bound"), ("cpu", "-2", "positive"),
                  ("cpu", str(RNG.randrange(1, CPUS)), "ok")]


@pytest.mark.parametrize(("field", "value", "expect"), QUANTITY_CASES)
def test_resource_quantities_are_bounded(field, value, expect):
    spec = copy.deepcopy(spec_dict())
    spec["resources"] = {**spec["resources"], field: value}
    found = problems_at(spec, f"spec.resources.{field}")
    if expect == "ok":
        assert found == [] and parse_quantity(value, field) <= bounds.QUANTITIES[field][0].limit
        return
    assert len(found) == 1 and len(found[0]) < 300, found
    if expect == "bound":
        assert "above the bound of" in found[0] and bounds.QUANTITY_FIX in found[0]
    else:
        assert found[0].startswith("must be positive")


def test_a_bound_message_names_the_value_the_bound_and_the_fix():
    message = bounds.PARAMETERS.problem(Decimal(10) ** 400, format_size)
    assert message == ("is 1.000e+400, above the bound of 20T (the largest published models "
                       "have about 2T parameters); give the model's real size")
    assert bounds.PARAMETERS.problem(LIMIT, format_size) is None


def test_every_bounded_config_size_is_an_integer_in_the_contracts_type_table():
    from finetune_contract.api import CONFIG_VALUE_TYPES

    integers = {key for key, (kind, _) in CONFIG_VALUE_TYPES.items() if kind is int}
    assert integers == set(bounds.CONFIG_BOUNDS)
