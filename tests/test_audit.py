"""Auditing a served model end to end: same scores as the in-run oracle, crash-safe journal, budget, CLI errors."""

import json
import socket

import numpy as np
import pandas as pd
import pytest

from attacks.audit import AuditOptions, audit_run, journal_dir, open_target, target_key
from attacks.oracles.http_client import HttpSettings, TargetError
from attacks.oracles.journal import Journal
from attacks.oracles.model import ModelOracle, export_torchscript
from attacks.oracles.server import LabelServer
from attacks.stage import AttackOptions, attack_run
from farm.shards import MEMBERSHIP, membership_matrix
from farm.storage import RunDir
from jobs import audit as audit_job
from jobs import cli
from jobs import serve as serve_job

ATTACKS = ("augmentation", "noise", "boundary")
BOUNDARY = {"max_iter": 2, "init_evals": 8, "max_evals": 8}
FAST = dict(n_pseudo=2, bootstrap=0)
NO_WAIT = HttpSettings(batch_size=256, concurrency=2, backoff=0.0, retries=1)


@pytest.fixture(scope="module")
def run(farms):
    return farms.run(*farms.LOGITS)


@pytest.fixture(scope="module")
def members(run):
    member, _ = membership_matrix(RunDir(run).read_table(MEMBERSHIP))
    return tuple(np.flatnonzero(member[0]).tolist())


@pytest.fixture(scope="module")
def direct(run, members):
    """The audit of model 0 through the in-run oracle (no HTTP): {attack: result}."""
    oracle, _ = open_target(run, "model:0")
    return {r["attack"]: r for r in audit_run(run, oracle, target="model:0", options=_options(members),
                                              progress=False)}


def _serve(run, name, **kwargs):
    """Model 0 of the run on loopback at /<name>/predict: a URL (journal) of its own even if a port is reused."""
    return LabelServer(ModelOracle.from_run(run, 0), path=f"/{name}/predict", **kwargs).start()


def _options(members=None, attacks=ATTACKS):
    return AuditOptions(attacks=attacks, settings={"boundary": BOUNDARY}, members=members, **FAST)


def _journal(run, url):
    """The journal of the one model that answered at `url` (its generation folder under the URL's journal)."""
    (generation,) = [n for n in RunDir(run).listdir(journal_dir(url)) if "-" in n]
    return Journal(RunDir(run), f"{journal_dir(url)}/{generation}")


def _scores(run, target, attack):
    return pd.read_parquet(f"{run}/audit/{target_key(target)}/{attack}/scores.parquet")


def test_http_audit_gives_the_scores_of_the_in_run_oracle(run, members, direct):
    server = _serve(run, "same")
    try:
        oracle, name = open_target(run, server.url, http=NO_WAIT)
        over_http = audit_run(run, oracle, target=name, options=_options(members), progress=False)
    finally:
        server.stop()
    attacked = {r["attack"]: r for r in attack_run(run, AttackOptions(attacks=ATTACKS, settings={"boundary": BOUNDARY},
                                                                      targets=(0,), **FAST), progress=False)}
    assert [r["attack"] for r in over_http] == list(direct) == list(ATTACKS)
    for http_result in over_http:
        attack, direct_result = http_result["attack"], direct[http_result["attack"]]
        a, b = _scores(run, server.url, attack), _scores(run, "model:0", attack)
        assert len(a) == 120 and a["member"].tolist() == b["member"].tolist()
        np.testing.assert_array_equal(a["score"], b["score"])
        farm = pd.read_parquet(f"{run}/attacks/{attack}/scores.parquet")  # `shadowfarm attack` on target 0
        np.testing.assert_array_equal(a["score"], farm["score"])
        assert a["member"].tolist() == farm["member"].tolist()
        assert http_result["shadow_thresholds"] == direct_result["shadow_thresholds"]
        assert http_result["auc"] == direct_result["auc"] == attacked[attack]["auc"]
    journal = Journal(RunDir(run), oracle.journal.rel)  # as written to disk
    assert server.stats()["inputs_answered"] == len(journal) == oracle.queries_used
    saved = json.loads(RunDir(run).read_text(f"audit/{target_key(server.url)}/target.json"))
    assert saved["queries_used"] == len(journal) and saved["target"] == server.url


def test_server_killed_mid_audit_spends_nothing_twice(run, members, direct):
    first = _serve(run, "killed", on_answer=lambda n: n == 5 and first.stop())  # dies after its 5th answer
    url, port = first.url, int(first.url.split(":")[2].split("/")[0])
    oracle, name = open_target(run, url, http=NO_WAIT)
    with pytest.raises(TargetError, match="connection failed"):
        audit_run(run, oracle, target=name, options=_options(members), progress=False)
    answered = first.stats()["inputs_answered"]
    assert 0 < answered == len(Journal(RunDir(run), oracle.journal.rel))
    second = _serve(run, "killed", port=port)
    try:
        again, _ = open_target(run, url, http=NO_WAIT)
        audit_run(run, again, target=name, options=_options(members), progress=False)
    finally:
        second.stop()
    total = answered + second.stats()["inputs_answered"]  # the second server also answered the re-checked rows
    assert again.journal.rel == oracle.journal.rel and again.rechecked == min(64, answered)
    assert total == len(Journal(RunDir(run), again.journal.rel)) + again.rechecked == again.queries_used
    for attack in ATTACKS:  # the same result as an audit that was never interrupted
        np.testing.assert_array_equal(_scores(run, url, attack)["score"], _scores(run, "model:0", attack)["score"])


def _cli_audit(run, url, *extra):
    return cli.main(["audit", run, "--target", url, "--attacks", "augmentation,noise", "--pseudo-targets", "2",
                     "--bootstrap", "0", "--backoff", "0", "--retries", "1", "--quiet", *extra])


def test_budget_is_never_exceeded_and_the_rest_is_resumed(run, members, capsys):
    server = _serve(run, "budget")
    try:
        assert _cli_audit(run, server.url, "--budget", "500", "--batch-size", "100") == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "query budget exceeded" in err and "budget of 500" in err
        answered = server.stats()["inputs_answered"]
        assert 0 < answered <= 500 and answered == len(_journal(run, server.url))
        assert _cli_audit(run, server.url, "--budget", "100000") == 0
        out = capsys.readouterr().out
        assert "augmentation" in out and "noise" in out and "queries used" in out
        saved = json.loads(RunDir(run).read_text(f"audit/{target_key(server.url)}/target.json"))
        assert saved["queries_used"] == server.stats()["inputs_answered"] <= 100000 and saved["budget"] == 100000
    finally:
        server.stop()


def test_a_model_swapped_behind_the_url_is_refused_then_journaled_apart(run, members, capsys):
    """A redeploy behind the same URL: the journal of the old model is never read as the new model's answers."""
    old = _serve(run, "swap")
    port = int(old.url.split(":")[2].split("/")[0])
    try:
        assert _cli_audit(run, old.url) == 0
    finally:
        old.stop()
    capsys.readouterr()
    new = LabelServer(ModelOracle.from_run(run, 1), path="/swap/predict", port=port).start()
    try:
        assert _cli_audit(run, new.url) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "the target changed since its journal" in err and "--new-journal" in err
        assert new.stats()["inputs_answered"] == 64  # only the re-checked rows (RECHECK)
        assert _cli_audit(run, new.url, "--new-journal") == 0
        assert "note: --new-journal" in capsys.readouterr().out
    finally:
        new.stop()
    direct_1 = "model-1-without-http"  # the same shadows as the HTTP audit (model:1 would drop model 1 from them)
    audit_run(run, ModelOracle.from_run(run, 1), target=direct_1, options=_options(attacks=("augmentation", "noise")),
              progress=False)
    for attack in ("augmentation", "noise"):
        np.testing.assert_array_equal(_scores(run, new.url, attack)["score"], _scores(run, direct_1, attack)["score"])
    assert len([n for n in RunDir(run).listdir(journal_dir(new.url)) if "-" in n]) == 2  # the old one is kept


def test_4xx_malformed_and_timeouts_exit_with_one_line(run, capsys, monkeypatch):
    monkeypatch.setenv("AUDIT_TOKEN", "tok-123")
    server = _serve(run, "token", token="tok-123")
    try:
        assert _cli_audit(run, server.url) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("shadowfarm: error: ") and "HTTP 401" in err and "\n" not in err
        assert _cli_audit(run, server.url, "--token-env", "AUDIT_TOKEN", "--encoding", "json") == 0
        saved = RunDir(run).read_text(f"audit/{target_key(server.url)}/target.json")
        assert "tok-123" not in saved and '"token_env": "AUDIT_TOKEN"' in saved
        assert _cli_audit(run, server.url, "--token-env", "UNSET_VARIABLE_FOR_TEST") == 2
        assert "UNSET_VARIABLE_FOR_TEST" in capsys.readouterr().err
    finally:
        server.stop()
    # a target that answers 20 requests, then one label too few: the 20 answers stay journaled
    garbage, good = _serve(run, "garbage"), [0]
    answer = garbage.answer

    def answer_then_break(x):
        labels = answer(x)
        if garbage.requests_answered <= 20:
            good[0] += len(labels)
            return labels
        return labels[:-1]

    garbage.answer = answer_then_break
    try:
        assert _cli_audit(run, garbage.url, "--batch-size", "50", "--concurrency", "1") == 2
        err = capsys.readouterr().err.strip()
        assert "malformed response: expected" in err and "\n" not in err
        assert len(_journal(run, garbage.url)) == good[0] > 0
    finally:
        garbage.stop()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/predict"
        assert _cli_audit(run, url, "--timeout", "0.05") == 2
        assert "no answer within 0.05 s" in capsys.readouterr().err


def test_without_ground_truth_the_audit_flags_members(run, tmp_path, members, capsys):
    server = _serve(run, "unknown")
    try:
        assert _cli_audit(run, server.url, "--examples", "60", "--fpr", "0.1") == 0
        out = capsys.readouterr().out
        assert "AUC" not in out and "flagged" in out
        scores = _scores(run, server.url, "noise")
        assert len(scores) == 60 and scores["member"].isna().all() and scores["flagged"].dtype == bool
        metrics = json.loads(RunDir(run).read_text(f"audit/{target_key(server.url)}/noise/metrics.json"))
        assert "auc" not in metrics and metrics["n_flagged"] == int(scores["flagged"].sum())
        assert "0.1" in metrics["shadow_thresholds"]  # None: +inf, nothing flagged at that FPR
        ids = tmp_path / "members.txt"
        ids.write_text("# training set of the target\n" + "\n".join(map(str, members)))
        assert _cli_audit(run, server.url, "--examples", "60", "--members", str(ids)) == 0
        assert "AUC" in capsys.readouterr().out
        scores = _scores(run, server.url, "noise")
        assert scores["member"].tolist() == [i in set(members) for i in scores["example_id"]]
        ids.write_text("1\n2\nthree\n")
        assert _cli_audit(run, server.url, "--members", str(ids)) == 2
        assert "line 3: 'three'" in capsys.readouterr().err
    finally:
        server.stop()


def test_serve_command_and_its_errors(run, monkeypatch, capsys):
    args = cli.build_parser().parse_args(["serve", run, "--model-id", "0", "--port", "0"])
    server = serve_job.make_server(args).start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        oracle, _ = open_target(run, server.url, http=NO_WAIT)
        x = np.zeros((3, 1, 8, 8), np.float32)
        np.testing.assert_array_equal(oracle.predict_labels(x), ModelOracle.from_run(run, 0).predict_labels(x))
    finally:
        server.stop()
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    assert cli.main(["serve", run, "--model-id", "0", "--token-env", "NO_SUCH_TOKEN"]) == 2
    assert "NO_SUCH_TOKEN" in capsys.readouterr().err
    assert cli.main(["serve", run, "--model-id", "99"]) == 2
    assert "model_id=00099" in capsys.readouterr().err


@pytest.mark.system  # a job's --smoke-test end to end, over HTTP
def test_smoke_job_audits_a_served_model(farms, capsys):
    assert audit_job.main(["--smoke-test", "--run", farms.smoke(), "--quiet",
                           "--attacks", "gap,noise,boundary"]) == 0
    out = capsys.readouterr().out
    assert "boundary" in out and "queries used" in out and "the server answered" in out


def test_torchscript_targets_served_or_direct(run, tmp_path):
    export_torchscript(run, 0, tmp_path / "target.pt")
    args = cli.build_parser().parse_args(["serve", run, "--torchscript", str(tmp_path / "target.pt")])
    server = serve_job.make_server(args).start()
    options = _options(attacks=("augmentation", "noise"))
    try:
        for target in (server.url, str(tmp_path / "target.pt"), "model:0"):
            oracle, name = open_target(run, target, http=NO_WAIT)
            audit_run(run, oracle, target=name, options=options, progress=False)
    finally:
        server.stop()
    for attack in ("augmentation", "noise"):
        expected = _scores(run, "model:0", attack)["score"]
        np.testing.assert_array_equal(_scores(run, server.url, attack)["score"], expected)
        np.testing.assert_array_equal(_scores(run, str(tmp_path / "target.pt"), attack)["score"], expected)
