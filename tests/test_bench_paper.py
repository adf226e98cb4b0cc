"""The paper benchmark job: its smoke test end to end on tiny farms (Adult for the paper's columns, digits for
augmentation), the bundled configs' regimes, and its errors."""

import re

import pytest

from farm.config import load_config
from jobs.bench import paper as bench_paper
from jobs.common import resolve_config

ROW = re.compile(r"^\| (paper_\w+) \| (\w+) \| (label-only|confidence) \| (\d+\.\d)% \| (\d\.\d{3}) \| (\S+) "
                 r"\| (.+) \|$", re.M)


@pytest.fixture(scope="module")
def smoke_out(ray_local, tmp_path_factory):
    return str(tmp_path_factory.mktemp("bench_paper") / "bench")


@pytest.mark.system  # a job's --smoke-test end to end (trains 2 farms)
def test_smoke_test_prints_every_attack_beside_the_paper(smoke_out, capsys):
    assert bench_paper.main(["--smoke-test", "--out-root", smoke_out, "--configs", "paper_adult,paper_digits"]) == 0
    out = capsys.readouterr().out
    assert "machine: " in out and "setup: paper_adult, paper_digits" in out
    assert re.search(r"paper_adult: adult N=200 .* 6 models: targets \[0\], 5 shadows", out), out
    assert re.search(r"models: train accuracy \d+\.\d%, test accuracy \d+\.\d%, gap -?\d+\.\d points", out), out
    rows = {(m[0], m[1]): m for m in ROW.findall(out)}
    assert {a for c, a in rows if c == "paper_digits"} == set(bench_paper.ATTACKS)
    # Adult's queries (gaussian, bitflip) cannot serve the image-only augmentation attack: skipped with a reason.
    assert {a for c, a in rows if c == "paper_adult"} == set(bench_paper.ATTACKS) - {"augmentation"}
    assert "skipped augmentation: needs queries of kind" in out
    paper = {a: (m[5], m[6]) for (c, a), m in rows.items() if c == "paper_adult"}
    assert paper["gap"] == ("58.7%", "gap") and paper["noise"] == ("58.7%", "noise robustness")
    assert paper["confidence_classifier"] == ("59.9%", "confidence-vector") and paper["loss"] == ("-", "-")
    assert all(m[5] == "-" for (c, _), m in rows.items() if c == "paper_digits")  # the paper has no digits figure
    for config in ("paper_adult", "paper_digits"):
        assert re.search(rf"{config}: best label-only \w+ \d+\.\d% vs best confidence \w+ \d+\.\d%: [+-]\d+\.\d", out)


@pytest.mark.system  # resumes the farms of the test above
def test_rerun_resumes_without_training(smoke_out, capsys):
    assert bench_paper.main(["--smoke-test", "--out-root", smoke_out, "--configs", "paper_adult",
                             "--attacks", "gap"]) == 0
    assert re.search(r"trained now 0 in", capsys.readouterr().out)


@pytest.mark.parametrize("name", bench_paper.CONFIGS)
def test_configs_are_small_overfit_regimes(name):
    cfg = load_config(resolve_config(name))
    assert cfg.membership.mode == "lira" and 8 <= cfg.membership.n_models <= 16 and len(cfg.membership.target_ids) == 4
    kinds = {q.kind for q in cfg.queries}
    assert "clean" in kinds and "gaussian" in kinds and cfg.train.weight_decay == 0
    if cfg.data.name == "adult":  # the paper's 10k training points; its noise attack on both feature types
        assert cfg.data.subsample * cfg.membership.p_in == 10_000 and "bitflip" in kinds


def test_unknown_attack_is_one_line(capsys):
    assert bench_paper.main(["--smoke-test", "--configs", "paper_synthetic", "--attacks", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shadowfarm: error: ") and "nope" in err and err.count("\n") == 1
