"""The one table of strategies, and what is derived from it: the API's names, the planner's
search order, the DeepSpeed stages the trainer configures."""

from __future__ import annotations

import typing

from finetune_contract import api, strategies
from finetune_operator.planner.choose import LAST_RESORT, SEARCH_ORDER


def test_the_api_offers_the_tables_strategies_in_its_order():
    assert typing.get_args(api.Strategy) == strategies.NAMES
    field = api.ResourcesSpec.model_fields["strategy"]
    assert typing.get_args(field.annotation) == (strategies.AUTO, *strategies.NAMES)
    assert field.default == strategies.AUTO


def test_the_planner_tries_them_in_the_tables_order_offloading_last():
    assert SEARCH_ORDER == ("ddp", "zero1", "zero2", "zero3", "fsdp")
    assert LAST_RESORT == "zero3-offload"


def test_every_deepspeed_strategy_has_its_stage_and_only_ddp_is_unsharded():
    stages = {s.name: s.zero_stage for s in strategies.TABLE if s.deepspeed}
    assert stages == {"zero1": 1, "zero2": 2, "zero3": 3, "zero3-offload": 3}
    assert [s.name for s in strategies.TABLE if not s.sharded] == ["ddp"]
    assert [s.name for s in strategies.TABLE if s.cpu_refusal] == ["fsdp"]
