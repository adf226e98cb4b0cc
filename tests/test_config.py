import pytest

from farm.config import (
    RunConfig,
    config_hash,
    from_dict,
    load_config,
    model_seed,
    to_dict,
)
from farm.errors import ConfigError
from farm.overrides import apply_overrides
from jobs.common import resolve_config


def test_defaults_round_trip():
    cfg = RunConfig()
    assert from_dict(to_dict(cfg)) == cfg


def test_bundled_configs_load():
    for name in ("quickstart",):
        cfg = load_config(resolve_config(name))
        assert from_dict(to_dict(cfg)) == cfg


def test_overrides_parse_yaml_values():
    cfg = load_config(None, ["train.epochs=5", "model.hidden=[8, 4]", "data.subsample=100", "train.lr=0.1"])
    assert cfg.train.epochs == 5 and cfg.model.hidden == (8, 4) and cfg.data.subsample == 100
    assert cfg.train.lr == 0.1


def test_queries_accept_strings_and_mappings():
    cfg = from_dict({"queries": ["clean", {"kind": "translate", "d": 2}]})
    assert [q.kind for q in cfg.queries] == ["clean", "translate"]
    assert dict(cfg.queries[1].params) == {"d": 2}


def test_hash_ignores_scheduling_but_not_semantics():
    base = config_hash(RunConfig())
    assert config_hash(load_config(None, ["farm.group_size=4", "farm.num_cpus=2"])) == base
    assert config_hash(load_config(None, ["train.epochs=3"])) != base
    assert config_hash(load_config(None, ["seed=1"])) != base


def test_model_seed_is_pure_and_distinct():
    assert model_seed(0, 3) == model_seed(0, 3)
    assert len({model_seed(0, m) for m in range(100)} | {model_seed(1, 0)}) == 101


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["train.epoch=3"], "train.epoch"),
        (["bogus=1"], "bogus"),
        (["train.epochs=abc"], "train.epochs"),
        (["train.epochs=1.5"], "train.epochs"),
        (["train.epochs=0"], "train.epochs"),
        (["train.lr=-1"], "train.lr"),
        (["membership.n_models=1"], "membership.n_models"),
        (["membership.p_in=0"], "membership.p_in"),
        (["membership.p_in=1.5"], "membership.p_in"),
        (["membership.mode=shokri"], "membership.mode"),
        (["membership.target_ids=[99]"], "membership.target_ids"),
        (["data.download=maybe"], "data.download"),
        (["farm.num_gpus=-1"], "farm.num_gpus"),
        (["train.optimizer=rmsprop"], "train.optimizer"),
        (["queries=[{d: 1}]"], "queries[0]"),
        (["train=3"], "train"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert field in message and "\n" not in message


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(top)


def test_apply_overrides_does_not_mutate():
    data = {"train": {"epochs": 1}}
    apply_overrides(data, ["train.epochs=2"])
    assert data == {"train": {"epochs": 1}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(data, ["train.epochs"])
