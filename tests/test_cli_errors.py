"""Bad input exits non-zero with one clear line and leaves no run directory behind."""

import numpy as np
import pytest

from jobs import cli


def _npz(tmp_path, name, x, y):
    path = tmp_path / name
    np.savez(path, x=x, y=y)
    return str(path)


def _cases(tmp_path):
    good_x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    nan_x = good_x.copy()
    nan_x[3, 1] = np.nan
    mismatched = _npz(tmp_path, "mismatched.npz", good_x, np.zeros(19, int))
    with_nan = _npz(tmp_path, "nan.npz", nan_x, np.arange(20) % 2)
    return {
        "unknown key": (["--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
        "unknown dataset": (["--set", "data.name=imagenet"], "unknown dataset 'imagenet' (valid: adult,"),
        "unknown model": (["--set", "model.name=vit"], "unknown model 'vit' (valid:"),
        "unknown perturbation": (["--set", "queries=[blur]"], "unknown query kind 'blur' (valid:"),
        "n_models < 2": (["--set", "membership.n_models=1"], "membership.n_models"),
        "p_in zero": (["--set", "membership.p_in=0"], "membership.p_in"),
        "p_in above one": (["--set", "membership.p_in=1.2"], "membership.p_in"),
        "missing npz": (["--set", "data.name=npz", "--set", f"data.path={tmp_path}/none.npz"], "none.npz"),
        "npz x/y mismatch": (["--set", "data.name=npz", "--set", f"data.path={mismatched}", "--set", "queries=[clean]"],
                             "mismatched.npz"),
        "npz NaN": (["--set", "data.name=npz", "--set", f"data.path={with_nan}", "--set", "queries=[clean]"],
                    "NaN"),
        "wrong query for the data": (["--set", "data.name=synthetic", "--set", "queries=[flip]"], "flip"),
        "bad override syntax": (["--set", "train.epochs"], "KEY=VALUE"),
    }


CASES = ["unknown key", "unknown dataset", "unknown model", "unknown perturbation", "n_models < 2", "p_in zero",
         "p_in above one", "missing npz", "npz x/y mismatch", "npz NaN", "wrong query for the data",
         "bad override syntax"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_nonzero_no_run_dir(case, tmp_path, capsys):
    args, expected = _cases(tmp_path)[case]
    out = tmp_path / "run"
    assert cli.main(["train", "quickstart", *args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shadowfarm: error:") and "\n" not in err and expected in err, err
    assert not out.exists()


def test_missing_config_file(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "nope.yaml" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_bad_input_leaves_an_existing_run_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"config_hash": "x"}')
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir())
    assert cli.main(["train", "quickstart", "--set", "membership.n_models=1", "--out", str(out)]) == 2
    assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before


def test_not_a_run_directory(tmp_path, capsys):
    (tmp_path / "stuff.txt").write_text("mine")
    assert cli.main(["train", "quickstart", "--set", "data.subsample=50", "--out", str(tmp_path), "--quiet"]) == 2
    assert "not a shadowfarm run" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["stuff.txt"]


def test_verify_missing_run(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path / "nothing")]) == 2
    assert "run.json" in capsys.readouterr().err


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--set" in text and "resume" in text
