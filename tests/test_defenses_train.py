"""Training-time defenses: config, per-model draws inside vmapped groups, early stopping, DP-SGD."""

import numpy as np
import pytest
import torch

from farm.config import RunConfig, config_hash, from_dict, load_config, model_seed, to_dict
from farm.data import DatasetInfo, load_dataset
from farm.defenses import BatchDraws, augment, check_defenses, validation_split
from farm.errors import ConfigError
from farm.membership import lira_membership
from farm.queries import Query, apply_query
from farm.train import steps_per_epoch, train_group
from jobs.common import resolve_config

SMALL = ["train.epochs=3", "train.batch_size=32", "model.hidden=[16]", "train.lr=0.01"]


def _digits(n=240):
    data = load_dataset(load_config(None, [f"data.subsample={n}"]).data, seed=0)
    return data, torch.tensor(data.x), torch.tensor(data.y)


def _train(overrides, *, member, seeds, vectorize=True, data=None):
    data, x, y = data or _digits()
    cfg = load_config(None, SMALL + overrides)
    return train_group(model_cfg=cfg.model, train_cfg=cfg.train, info=data.info, x=x, y=y, member=member,
                       seeds=seeds, n_steps_per_epoch=steps_per_epoch(member, cfg.train.batch_size),
                       vectorize=vectorize)


def _close(a, b):
    for sa, sb in zip(a.state_dicts, b.state_dicts, strict=True):
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], atol=2e-5, rtol=1e-4)


def test_defense_fields_parse_round_trip_and_keep_old_hashes():
    cfg = load_config(None, ["train.mixup_alpha=0.4", "train.augmentation.translate=2", "train.augmentation.flip=true",
                             "train.early_stopping.patience=3"])
    assert cfg.train.augmentation.translate == 2 and cfg.train.early_stopping.patience == 3
    assert cfg.train.dp_sgd is None and from_dict(to_dict(cfg)) == cfg
    dp = load_config(None, ["train.dp_sgd={}"])
    assert dp.train.dp_sgd.epsilon == 8.0 and from_dict(to_dict(dp)) == dp
    # runs made before these fields existed keep their hash (the quickstart's, computed before this change)
    assert config_hash(load_config(resolve_config("quickstart"))) == "f3ffec48d83db719"
    base = config_hash(RunConfig())
    for item in ("train.mixup_alpha=0.4", "train.augmentation.flip=true", "train.early_stopping.patience=2",
                 "train.dp_sgd.epsilon=4"):
        assert config_hash(load_config(None, [item])) != base, item


@pytest.mark.parametrize("overrides, message", [
    (["train.dp_sgd.epsilon=8", "train.mixup_alpha=1"], "train.mixup_alpha"),
    (["train.dp_sgd.epsilon=8", "train.early_stopping.patience=2"], "train.early_stopping"),
    (["train.dp_sgd.epsilon=8", "train.augmentation.flip=true"], "train.augmentation"),
    (["train.dp_sgd.epsilon=0"], "train.dp_sgd.epsilon"),
    (["train.dp_sgd.accountant=moments"], "train.dp_sgd.accountant"),
    (["train.dp_sgd.bogus=1"], "train.dp_sgd.bogus"),
    (["train.early_stopping.validation_fraction=1"], "train.early_stopping.validation_fraction"),
    (["train.mixup_alpha=-1"], "train.mixup_alpha"),
    (["train.augmentation.translate=-1"], "train.augmentation.translate"),
])
def test_bad_defense_values_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, overrides)


def test_augmentation_is_checked_against_the_data():
    tabular = DatasetInfo(name="adult", kind="tabular", shape=(104,), num_classes=2)
    with pytest.raises(ConfigError, match="image data"):
        check_defenses(load_config(None, ["train.augmentation.translate=1"]), info=tabular)
    image = DatasetInfo(name="digits", kind="image", shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ConfigError, match="image size"):
        check_defenses(load_config(None, ["train.augmentation.translate=8"]), info=image)
    check_defenses(load_config(None, ["train.augmentation.translate=1"]), info=image)
    check_defenses(load_config(None, ["train.dp_sgd={}"]), info=image)


def test_training_augmentation_matches_the_translate_and_flip_queries():
    info = DatasetInfo(name="digits", kind="image", shape=(1, 8, 8), num_classes=10)
    x = torch.rand(5, 1, 8, 8)
    shifts = torch.tensor([[0, 1], [1, 0], [-1, 0], [0, -2], [2, 2]])
    out = augment(x[None], flip=None, shift=shifts[None])[0]
    for i, (dy, dx) in enumerate(shifts.tolist()):
        expected = apply_query(Query(0, "translate", {"dx": dx, "dy": dy}, 0), x[i : i + 1], info=info)[0]
        assert torch.equal(out[i], expected)
    flips = torch.tensor([[True, False, True, False, False]])
    flipped = augment(x[None], flip=flips, shift=None)[0]
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])


def test_each_model_draws_from_its_own_seed():
    cfg = load_config(None, ["train.mixup_alpha=1", "train.augmentation.translate=1"]).train
    pair = BatchDraws(cfg, [11, 22], batch_size=8, device="cpu").epoch(5)
    alone = BatchDraws(cfg, [22], batch_size=8, device="cpu").epoch(5)
    assert torch.equal(pair.lam[:, 1], alone.lam[:, 0]) and torch.equal(pair.perm[:, 1], alone.perm[:, 0])
    assert torch.equal(pair.shift[:, 1], alone.shift[:, 0])
    assert not torch.equal(pair.lam[:, 0], pair.lam[:, 1])
    assert (pair.perm.sort(-1).values == torch.arange(8)).all()  # a permutation of the batch per model and step


@pytest.mark.parametrize("overrides", [
    ["train.mixup_alpha=0.5"],
    ["train.augmentation.translate=1", "train.augmentation.flip=true"],
    ["train.early_stopping.patience=1", "train.mixup_alpha=1", "train.augmentation.translate=2"],
])
def test_vmapped_defenses_match_the_per_model_loop_and_do_not_depend_on_the_group(overrides):
    data = _digits()
    member = lira_membership(n_models=3, n_examples=len(data[2]), p_in=0.5, seed=0)
    seeds = [model_seed(0, m) for m in range(3)]
    grouped = _train(overrides, member=member, seeds=seeds, data=data)
    assert grouped.vectorized
    _close(grouped, _train(overrides, member=member, seeds=seeds, vectorize=False, data=data))
    alone = _train(overrides, member=member[[2]], seeds=seeds[2:], data=data)
    for k, v in alone.state_dicts[0].items():
        torch.testing.assert_close(v, grouped.state_dicts[2][k], atol=2e-5, rtol=1e-4)
    assert grouped.details[2] == alone.details[0]  # early stopping decides per model
    _close(grouped, _train(overrides, member=member, seeds=seeds, data=data))  # same seed, same weights


def test_early_stopping_holds_out_own_members_and_keeps_the_best_epoch():
    members = np.array([3, 5, 8, 13, 21, 34, 55, 89, 144, 233])
    train_rows, val_rows = validation_split(members, seed=7, fraction=0.2)
    assert len(val_rows) == 2 and set(train_rows) | set(val_rows) == set(members)
    assert not set(train_rows) & set(val_rows)
    data = _digits()
    member = lira_membership(n_models=2, n_examples=len(data[2]), p_in=0.5, seed=0)
    # a learning rate this large diverges after the first epochs: the best epoch is early, training stops
    out = _train(["train.early_stopping.patience=2", "train.epochs=12", "train.lr=0.5"], member=member,
                 seeds=[1, 2], data=data)
    for details in out.details:
        stop = details["early_stopping"]
        assert 1 <= stop["best_epoch"] < stop["stopped_epoch"] <= 12
        assert stop["stopped_epoch"] - stop["best_epoch"] == 2 or stop["stopped_epoch"] == 12
    assert [d["early_stopping"]["n_validation"] for d in out.details] == [round(0.1 * n) for n in member.sum(1)]


def test_dp_sgd_trains_one_model_at_a_time_and_reports_the_spent_epsilon():
    pytest.importorskip("opacus")
    data = _digits()
    member = lira_membership(n_models=2, n_examples=len(data[2]), p_in=0.5, seed=0)
    dp = ["train.dp_sgd.epsilon=4", "train.dp_sgd.accountant=rdp", "train.batch_size=64", "train.epochs=2"]
    out = _train(dp, member=member, seeds=[1, 2], data=data)
    assert not out.vectorized and len(out.details) == 2
    for details in out.details:
        record = details["dp_sgd"]
        assert 3.5 < record["epsilon"] <= 4.0 + 1e-6 and record["noise_multiplier"] > 0
        assert record["steps"] == 2 * round(1 / record["sample_rate"])
    again = _train(dp, member=member, seeds=[1, 2], data=data)
    for a, b in zip(out.state_dicts, again.state_dicts, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)  # seeded sampler and noise
    assert not any(torch.equal(out.state_dicts[0][k], again.state_dicts[1][k]) for k in out.state_dicts[0])
