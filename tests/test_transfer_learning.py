"""Transfer-learning targets (issue 16, Zou et al.): the teacher (file or farm-trained), fine-tuning all layers or
the head only (frozen layers never change), vmapped groups equal to the per-model loop, the stored teacher."""

import json

import numpy as np
import pytest
import torch

from farm.config import ModelConfig, TrainConfig, load_config, model_seed
from farm.data import load_dataset
from farm.driver import train_farm
from farm.errors import ConfigError
from farm.membership import lira_membership
from farm.models import build_model, head_parameters
from farm.plan import load_plan, open_run, plan_run
from farm.shards import load_weights, model_dir
from farm.storage import RunDir
from farm.teacher import TEACHER_PT, fine_tune_init, split_public, stored_teacher, teacher_init
from farm.train import steps_per_epoch, train_group
from farm.verify import verify_plan
from jobs import cli

MODEL = ModelConfig(name="mlp", hidden=(16, 16))
TINY = ["data.subsample=240", "membership.n_models=8", "train.epochs=2", "teacher.epochs=2", "farm.group_size=8",
        "queries=[clean, {kind: translate, d: 1}]"]
SMALL = ["data.subsample=100", "model.hidden=[16, 16]", "membership.n_models=4"]


def _teacher(info):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return {k: v.detach().clone() for k, v in build_model(MODEL, info=info).state_dict().items()}


def _fine_tune(mode: str, vectorize: bool):
    data = load_dataset(load_config(None, ["data.subsample=200"]).data, seed=0)
    member = lira_membership(n_models=3, n_examples=len(data), p_in=0.5, seed=0)
    teacher = _teacher(data.info)
    group = train_group(model_cfg=MODEL, train_cfg=TrainConfig(epochs=2, batch_size=32, lr=0.01), info=data.info,
                        x=torch.tensor(data.x), y=torch.tensor(data.y), member=member,
                        seeds=[model_seed(0, m) for m in range(3)], n_steps_per_epoch=steps_per_epoch(member, 32),
                        vectorize=vectorize, init_model=fine_tune_init(teacher, mode))
    return group, teacher, set(head_parameters(build_model(MODEL, info=data.info)))


@pytest.mark.parametrize("mode", ["head", "all"])
def test_fine_tuning_vmapped_equals_loop_and_head_mode_freezes_the_body(mode):
    grouped, teacher, head = _fine_tune(mode, vectorize=True)
    looped, _, _ = _fine_tune(mode, vectorize=False)
    assert grouped.vectorized and not looped.vectorized
    for a, b in zip(grouped.state_dicts, looped.state_dicts, strict=True):
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=2e-4, rtol=1e-3)
    for state in grouped.state_dicts + looped.state_dicts:
        body_kept = [torch.equal(state[k], teacher[k]) for k in teacher if k not in head]
        assert all(body_kept) if mode == "head" else not any(body_kept)
        assert not any(torch.equal(state[k], teacher[k]) for k in head)  # each model's own head, trained
    heads = [s["5.weight"] for s in grouped.state_dicts]
    assert not torch.equal(heads[0], heads[1])  # heads drawn from each model's seed


def test_teacher_files_state_dict_and_torchscript_are_checked(tmp_path):
    info = load_dataset(load_config(None, SMALL).data, seed=0).info
    model = build_model(MODEL, info=info)
    torch.save(model.state_dict(), tmp_path / "teacher.pt")
    torch.jit.save(torch.jit.script(model), tmp_path / "teacher.ts")
    torch.save(build_model(ModelConfig(name="mlp", hidden=(16, 8)), info=info).state_dict(), tmp_path / "wrong.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for name in ("teacher.pt", "teacher.ts"):
        plan = plan_run(load_config(None, [*SMALL, f"teacher.path={tmp_path / name}"]), str(tmp_path / name[-2:]))
        assert plan.public is None and len(plan.dataset) == 100  # a file teacher: no public split
    for name, message in (("wrong.pt", r"parameter '3.weight' has shape \[8, 16\], the model 'mlp' of this config "
                                       r"needs \[16, 16\]"),
                          ("text.pt", "not a state_dict or TorchScript file"), ("none.pt", "not found")):
        with pytest.raises(ConfigError, match=f"^teacher.path: {tmp_path / name}: {message}") as err:
            plan_run(load_config(None, [*SMALL, f"teacher.path={tmp_path / name}"]), str(tmp_path / "bad"))
        assert "\n" not in str(err.value)
    assert not (tmp_path / "bad").exists()


def test_teacher_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="^teacher.fine_tune: expected 'all' or 'head'"):
        load_config(None, ["teacher.fine_tune=middle"])
    with pytest.raises(ConfigError, match="^teacher.public_fraction"):
        load_config(None, ["teacher.public_fraction=1.0"])
    with pytest.raises(ConfigError, match="no layers below its head"):
        plan_run(load_config(None, ["model.name=logistic", "teacher={}"]), "unused")
    with pytest.raises(ConfigError, match=r"^teacher.classes: \[10\] are not labels"):
        plan_run(load_config(None, ["teacher.classes=[1, 10]"]), "unused")


def test_public_split_is_disjoint_seeded_and_filtered_by_class():
    cfg = load_config(None, ["data.subsample=300", "teacher.classes=[0, 1, 2]", "teacher.public_fraction=0.4"])
    data = load_dataset(cfg.data, seed=0)
    population, public = split_public(cfg, data)
    rows = {tuple(r) for r in data.x.reshape(len(data), -1)}
    assert len(rows) == len(data)  # examples are distinct, so rows identify them
    pop = {tuple(r) for r in population.x.reshape(len(population), -1)}
    pub = {tuple(r) for r in public.x.reshape(len(public), -1)}
    assert not pop & pub and len(population) == 300 - 120 and set(public.y) == {0, 1, 2}
    assert set(population.y) == set(range(10))
    again, _ = split_public(cfg, data)
    assert np.array_equal(again.x, population.x)


@pytest.mark.system  # jobs end to end through the CLI: train a config, attack it, resume it
def test_transfer_config_trains_attacks_and_reuses_its_teacher(ray_local, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "transfer")
    config = "jobs/configs/transfer.yaml"
    assert cli.main(["train", config, *sum([["--set", s] for s in TINY + ["teacher.fine_tune=head"]], []),
                     "--out", out, "--quiet"]) == 0
    run_json = json.loads((tmp_path / "transfer" / "run.json").read_text())
    record, plan = run_json["teacher"], load_plan(out)
    assert record["source"] == "trained" and record["fine_tune"] == "head" and record["classes"] == [0, 1, 2, 3, 4]
    assert run_json["dataset"]["n_examples"] == len(plan.dataset) == 120 and record["n_public"] == len(plan.public)
    teacher = torch.load(tmp_path / "transfer" / TEACHER_PT, weights_only=True)
    for m in range(8):  # head only: every model's body is the teacher's, bit for bit
        state = load_weights(RunDir(out), m)
        assert all(torch.equal(state[k], teacher[k]) for k in teacher if k not in record["head"])
    assert cli.main(["attack", out, "--attacks", "gap,loss,lira_confidence", "--bootstrap", "0",
                     "--pseudo-targets", "2", "--no-report", "--quiet"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in ("gap", "loss", "lira_confidence"))
    # a re-run resumes: the stored teacher is reused, never trained again
    RunDir(out).delete(model_dir(3))
    before = (tmp_path / "transfer" / TEACHER_PT).read_bytes()
    monkeypatch.setattr("farm.teacher.train_teacher", lambda *a, **k: pytest.fail("teacher trained again"))
    plan = plan_run(load_config(config, TINY + ["teacher.fine_tune=head"]), out)
    assert train_farm(plan, progress=False) == [3]
    assert (tmp_path / "transfer" / TEACHER_PT).read_bytes() == before and verify_plan(load_plan(out)) == []


def test_a_teacher_file_is_stored_in_the_run_and_fine_tuned_from(tmp_path):
    info = load_dataset(load_config(None, SMALL).data, seed=0).info
    torch.jit.save(torch.jit.script(build_model(MODEL, info=info)), tmp_path / "teacher.ts")
    cfg = load_config(None, [*SMALL, f"teacher.path={tmp_path / 'teacher.ts'}", "teacher.fine_tune=head"])
    plan = plan_run(cfg, str(tmp_path / "run"))
    open_run(plan)  # what train_farm does first: the run tables, run.json and the stored teacher
    record = json.loads((tmp_path / "run" / "run.json").read_text())["teacher"]
    assert record["source"] == "file" and record["file"] == str(tmp_path / "teacher.ts")
    file_state = torch.jit.load(tmp_path / "teacher.ts").state_dict()
    assert all(torch.equal(v, file_state[k]) for k, v in stored_teacher(plan.run).items())
    (tmp_path / "teacher.ts").unlink()  # stored: later stages (attack, resume) no longer need the file
    model = build_model(MODEL, info=info)
    teacher_init(load_plan(str(tmp_path / "run")).cfg, plan.run)(model)
    assert [k for k, p in model.named_parameters() if p.requires_grad] == ["5.weight", "5.bias"]
    assert all(torch.equal(model.state_dict()[k], file_state[k]) for k in ("1.weight", "3.bias"))
