import numpy as np
import torch

from farm.config import DataConfig, ModelConfig, TrainConfig, model_seed
from farm.data import load_dataset
from farm.membership import lira_membership
from farm.train import index_stream, steps_per_epoch, train_group


def _digits(n=300):
    data = load_dataset(DataConfig(name="digits", subsample=n), seed=0)
    return data, torch.tensor(data.x), torch.tensor(data.y)


def test_index_stream_uses_only_members_and_covers_them():
    members = np.array([2, 5, 7, 11])
    stream = index_stream(members, seed=1, n_steps=6, batch_size=2)
    assert stream.shape == (6, 2) and set(stream.ravel()) == set(members)
    assert (np.sort(stream.ravel()[:4]) == members).all()  # first pass is a permutation
    assert np.array_equal(stream, index_stream(members, seed=1, n_steps=6, batch_size=2))


def test_vmapped_ensemble_matches_per_model_loop():
    data, x, y = _digits()
    member = lira_membership(n_models=3, n_examples=len(y), p_in=0.5, seed=0)
    kwargs = dict(model_cfg=ModelConfig(name="mlp", hidden=(32,)), train_cfg=TrainConfig(epochs=3, batch_size=32),
                  info=data.info, x=x, y=y, member=member, seeds=[model_seed(0, m) for m in range(3)],
                  n_steps_per_epoch=steps_per_epoch(member, 32))
    grouped = train_group(**kwargs, vectorize=True)
    looped = train_group(**kwargs, vectorize=False)
    for a, b in zip(grouped.state_dicts, looped.state_dicts, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=2e-4, rtol=1e-3)
    agree = (grouped.predict(x).argmax(-1) == looped.predict(x).argmax(-1)).float().mean()
    assert agree > 0.99


def test_a_models_training_does_not_depend_on_its_group():
    data, x, y = _digits()
    member = lira_membership(n_models=4, n_examples=len(y), p_in=0.5, seed=0)
    common = dict(model_cfg=ModelConfig(name="mlp", hidden=(16,)), train_cfg=TrainConfig(epochs=2, batch_size=32),
                  info=data.info, x=x, y=y, n_steps_per_epoch=steps_per_epoch(member, 32))
    alone = train_group(**common, member=member[[3]], seeds=[model_seed(0, 3)])
    group = train_group(**common, member=member[[1, 3]], seeds=[model_seed(0, 1), model_seed(0, 3)])
    for k, v in alone.state_dicts[0].items():
        torch.testing.assert_close(v, group.state_dicts[1][k], atol=2e-4, rtol=1e-3)


def test_training_learns():
    data, x, y = _digits(400)
    member = lira_membership(n_models=2, n_examples=len(y), p_in=0.5, seed=0)
    out = train_group(model_cfg=ModelConfig(name="mlp", hidden=(64,)),
                      train_cfg=TrainConfig(epochs=20, batch_size=32, lr=0.01),
                      info=data.info, x=x, y=y, member=member, seeds=[1, 2],
                      n_steps_per_epoch=steps_per_epoch(member, 32))
    correct = (out.predict(x).argmax(-1) == y).float()
    for g in range(2):
        rows = torch.tensor(member[g])
        assert correct[g][rows].mean() > 0.95 and correct[g][~rows].mean() > 0.8
