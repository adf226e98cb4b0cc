"""White-box attacks (issue 16): per-example gradient statistics against a plain per-model, per-example loop
(no vmap), the cache, the attacks' scores end to end, and that fitting never reads the target's membership."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from attacks.compute import whitebox as compute
from attacks.methods.whitebox import STATISTICS, precision_check
from attacks.registry import ATTACKS, applicable, choose_attacks, run_attack
from attacks.report.core import format_table, summary_rows
from attacks.responses import Responses
from attacks.stage import AttackOptions, attack_run
from farm.config import load_config
from farm.data import DatasetInfo
from farm.errors import ConfigError
from farm.models import build_model
from farm.plan import load_plan
from farm.shards import load_weights
from farm.storage import RunDir

RTOL = 1e-4
WHITE_BOX = tuple(name for name, spec in ATTACKS.items() if spec.white_box)


def reference(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Every white-box statistic of one model, one example at a time: zero_grad, backward, read .grad."""
    model.eval()
    layers = [m for m in model.modules() if list(m.parameters(recurse=False))]
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.detach())) for m in layers[:-1]]
    rows = {k: [] for k in ("loss", "margin", "grad_norm", "layers", "activations", "top")}
    for i in range(len(x)):
        seen.clear()
        model.zero_grad()
        logits = model(x[i:i + 1])
        F.cross_entropy(logits, y[i:i + 1]).backward()
        z = logits[0].detach().double().numpy()
        log_p = z - np.log(np.exp(z - z.max()).sum()) - z.max()
        per_layer = np.array([np.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in m.parameters(recurse=False)))
                              for m in layers])
        rows["loss"].append(-log_p[y[i]])
        rows["margin"].append(z[y[i]] - np.log(np.exp(np.delete(z, y[i])).sum()))
        rows["grad_norm"].append(np.sqrt((per_layer ** 2).sum()))
        rows["layers"].append(per_layer)
        rows["activations"].append(np.array([float(a.double().norm()) for a in seen]))
        rows["top"].append(np.sort(np.exp(log_p))[::-1][:compute.TOP_K])
    for h in hooks:
        h.remove()
    return {k: np.array(v) for k, v in rows.items()}


def assert_matches(found: dict, expected: dict) -> None:
    assert set(found) == set(expected)
    for k in expected:
        assert found[k].shape == expected[k].shape, k
        np.testing.assert_allclose(found[k], expected[k], rtol=RTOL, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("model_cfg", ["model.name=mlp", "model.name=cnn"])
def test_group_statistics_equal_the_per_example_loop(model_cfg):
    cfg = load_config(None, [model_cfg, "model.hidden=[12, 8]", "model.width=4", "model.dropout=0.3"])
    info = DatasetInfo(name="toy", kind="image", shape=(1, 8, 8), num_classes=5)
    torch.manual_seed(0)
    models = [build_model(cfg.model, info=info) for _ in range(3)]
    x, y = torch.randn(11, 1, 8, 8), torch.randint(0, 5, (11,))
    base, params, buffers = compute.stacked(cfg.model, info, [m.state_dict() for m in models])
    stats = compute.group_statistics(base, params, buffers, x, y, batch=4)  # 3 batched calls, the last short
    for g, model in enumerate(models):
        expected = reference(model, x, y)
        assert_matches({k: v[g] for k, v in stats.items()}, expected)
        assert_matches(compute.loop_statistics(model, x, y), expected)  # the benchmark's baseline


@pytest.fixture(scope="module")
def tiny_run(farms):
    return farms.run(*farms.SMALL)


def run_reference(run_uri: str) -> dict[str, np.ndarray]:
    """Responses.statistics of every model of the run, from the per-example loop on its saved weights."""
    plan = load_plan(run_uri)
    x, y = torch.tensor(plan.dataset.x), torch.tensor(plan.dataset.y, dtype=torch.int64)
    per_model = []
    for m in range(plan.cfg.membership.n_models):
        model = build_model(plan.cfg.model, info=plan.dataset.info)
        model.load_state_dict(load_weights(plan.run, m))
        per_model.append(reference(model, x, y))
    return {STATISTICS[k]: np.stack([r[k] for r in per_model]) for k in per_model[0]}


def test_ray_statistics_equal_the_loop_and_are_cached(tiny_run, monkeypatch):
    plan = load_plan(tiny_run)
    kwargs = dict(model_cfg=plan.cfg.model, info=plan.dataset.info, x=plan.dataset.x, labels=plan.dataset.y,
                  n_models=8, group_size=3, chunk_examples=50)
    stats = compute.whitebox_statistics(plan.run, models=[0, 2, 3, 5, 6, 7], progress=False, **kwargs)
    expected = run_reference(tiny_run)
    for name, values in stats.items():
        assert np.isnan(values[[1, 4]]).all()
        np.testing.assert_allclose(values[[0, 2, 3, 5, 6, 7]], expected[name][[0, 2, 3, 5, 6, 7]], rtol=RTOL,
                                   atol=1e-7, err_msg=name)
    monkeypatch.setattr(compute, "_chunk", lambda *a: pytest.fail("a finished chunk was computed again"))
    again = compute.whitebox_statistics(plan.run, models=[0, 2, 7], local=True, progress=False, **kwargs)
    np.testing.assert_array_equal(again[STATISTICS["loss"]][[0, 2, 7]], stats[STATISTICS["loss"]][[0, 2, 7]])


def test_attack_stage_scores_equal_scores_from_the_loop(tiny_run):
    settings = {"whitebox_classifier": {"max_iter": 20}}
    results = attack_run(tiny_run, AttackOptions(attacks=WHITE_BOX, n_pseudo=2, bootstrap=0, settings=settings),
                         progress=False)
    assert [r["attack"] for r in results] == list(WHITE_BOX)
    plan = load_plan(tiny_run)
    from attacks.loader import load_responses

    responses = load_responses(plan.run)
    for name, values in run_reference(tiny_run).items():
        responses = responses.with_statistic(name, values)
    shadows = np.arange(1, 8)
    for name in WHITE_BOX:
        scores = pd.read_parquet(f"{tiny_run}/attacks/{name}/scores.parquet")["score"].to_numpy()
        expected = run_attack(name, responses, target=0, shadows=shadows, settings=settings.get(name))
        np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-6, err_msg=name)
    rows = {r["attack"]: r for r in summary_rows(RunDir(tiny_run))}
    assert all(rows[name]["type"] == "white-box" for name in WHITE_BOX)
    lines = format_table(list(rows.values())).splitlines()
    assert all(any(line.split()[:2] == [name, "white-box"] for line in lines) for name in WHITE_BOX)
    assert lines[-1].startswith("stolen_memories: ")  # its promised vs realized precision


def planted(seed=3, m=10, n=80, layers=2):
    """A game with white-box statistics planted: members have smaller gradients and larger margins."""
    rng = np.random.default_rng(seed)
    member = np.zeros((m, n), bool)
    for i in range(n):
        member[rng.permutation(m)[: m // 2], i] = True
    shift = np.where(member, 1.0, 0.0)
    norms = np.exp(rng.normal(-shift[..., None], 1.0, (m, n, layers)))
    stats = {"loss": np.exp(rng.normal(-1 - shift, 1.0)), "margin": rng.normal(shift, 1.0),
             "grad_norm": np.sqrt((norms ** 2).sum(-1)), "layers": norms,
             "activations": np.abs(rng.normal(1 + 0.2 * shift[..., None], 1.0, (m, n, layers - 1))),
             "top": np.sort(rng.dirichlet(np.ones(4), (m, n)), axis=-1)[..., ::-1][..., :3]}
    labels = rng.integers(0, 4, n)
    return Responses(member=member, pred=np.zeros((m, n, 1), np.int16), labels=labels, query_kinds=("clean",),
                     query_params=({},), statistics={STATISTICS[k]: v for k, v in stats.items()})


@pytest.mark.parametrize(("name", "settings"), [
    ("gradient_norm", {"variant": "threshold"}), ("gradient_norm", {"variant": "calibrated"}),
    ("gradient_norm", {"variant": "offline"}), ("whitebox_classifier", {"max_iter": 20}),
    ("stolen_memories", {}), ("stolen_memories", {"variant": "offline"})])
def test_fitting_never_reads_the_targets_membership(name, settings):
    responses, shadows = planted(), np.arange(1, 10)
    scores = run_attack(name, responses, target=0, shadows=shadows, settings=settings)
    flipped = responses.member.copy()
    flipped[0] = ~flipped[0]
    other = Responses(**{**responses.__dict__, "member": flipped})
    np.testing.assert_array_equal(scores, run_attack(name, other, target=0, shadows=shadows, settings=settings))
    assert np.mean(scores[responses.member[0]]) > np.mean(scores[~responses.member[0]])  # the planted signal
    if settings.get("variant") == "threshold":
        return  # the target's own statistic: nothing is fit (its threshold comes from the shadow game)
    changed = responses.member.copy()
    changed[1] = ~changed[1]  # a shadow's membership is what the attacks fit on
    assert not np.array_equal(scores, run_attack(name, Responses(**{**responses.__dict__, "member": changed}),
                                                 target=0, shadows=shadows, settings=settings))


def test_a_model_without_hidden_layers_has_no_activations(tmp_path):
    run, key = RunDir(str(tmp_path)), compute.cache_key()
    stats = {"loss": np.ones((1, 3)), "margin": np.zeros((1, 3)), "grad_norm": np.ones((1, 3)),
             "layers": np.ones((1, 3, 1)), "activations": np.zeros((1, 3, 0)), "top": np.ones((1, 3, 3))}
    run.write_table(compute._part(key, 1, 0, 3), compute._table(0, stats, 0))
    read = compute._read(run, key, models=[1], n_examples=3, n_models=2, chunk_examples=3)
    assert read[STATISTICS["activations"]].shape == (2, 3, 0) and np.isnan(read[STATISTICS["loss"]][0]).all()
    responses = planted(layers=1)
    assert responses.statistics[STATISTICS["activations"]].shape[-1] == 0
    assert np.isfinite(run_attack("whitebox_classifier", responses, target=0, shadows=np.arange(1, 10),
                                  settings={"max_iter": 5})).all()


def test_stolen_memories_scores_are_probabilities_and_its_precision_check_counts():
    responses = planted(n=400)
    scores = run_attack("stolen_memories", responses, target=0, shadows=np.arange(1, 10))
    assert ((0 <= scores) & (scores <= 1)).all()
    check = precision_check(scores, responses.member[0], precision=0.8)
    flagged = scores >= 0.8
    assert check["n_flagged"] == flagged.sum() > 0 and check["promised"] >= 0.8
    assert check["realized"] == pytest.approx(responses.member[0][flagged].mean())
    assert precision_check(np.zeros(3), np.ones(3, bool), precision=0.5)["realized"] is None


def test_white_box_attacks_are_their_own_type_and_need_weights_not_logits():
    responses = planted()
    for name in WHITE_BOX:
        assert ATTACKS[name].kind == "white-box" and not ATTACKS[name].label_only
        assert applicable(name, responses) is None  # no logits needed
        assert "weights" in applicable(name, responses, weights=False)
    chosen, skipped = choose_attacks(None, responses, weights=False)
    assert not set(chosen) & set(WHITE_BOX) and set(WHITE_BOX) <= set(skipped)
    with pytest.raises(ConfigError, match="white-box statistics"):
        run_attack("gradient_norm", Responses(**{**responses.__dict__, "statistics": {}}), target=0,
                   shadows=np.arange(1, 10))
    with pytest.raises(ConfigError, match="precision"):
        run_attack("stolen_memories", responses, target=0, shadows=np.arange(1, 10), settings={"precision": 1.0})
