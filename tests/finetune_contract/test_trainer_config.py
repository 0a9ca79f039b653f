"""TrainerConfig, the file every rank reads: libyaml both ways, and a round trip that loses
nothing."""

from __future__ import annotations

from finetune_operator.lifecycle import spec as specs

from tests.support.world import started_world


def test_the_trainer_config_goes_through_libyaml_and_equals_the_pure_python_round_trip():
    import yaml
    from finetune_contract import trainer_config
    from finetune_contract.trainer_config import TrainerConfig

    world = started_world()
    text = world.objects[("ConfigMap", "chat-trainer")]["data"]["trainer.yaml"]
    assert yaml.__with_libyaml__  # the operator image's PyYAML wheel carries libyaml
    assert trainer_config.SAFE_LOADER is yaml.CSafeLoader
    assert trainer_config.SAFE_DUMPER is yaml.CSafeDumper
    pure = TrainerConfig.model_validate(yaml.safe_load(text))
    assert specs.parse_started(text) == pure.spec
    assert text == yaml.safe_dump(pure.to_wire(), sort_keys=False)  # dumped the same way
