"""Training end to end on the tiny shop: overfitting, exact resume after kill -9, checkpoints
that load with weights_only=True, the run folder, evaluate/recommend CLIs, baselines."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from flows.cli import main as macl
from schemas.errors import ContractError
from trainer.config import resolve_config
from trainer.data import Cases, make_batch
from trainer.evaluate import evaluate
from trainer.inference import load_run
from trainer.loop import run_training
from trainer.models.baselines import SKNN, Pop, SPop
from trainer.config import BaselineConfig
from trainer.runs import RunDir, compare_runs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(shop, tmp_path_factory):
    """One small macl run shared by the checks that only read a finished run."""
    runs = tmp_path_factory.mktemp("runs")
    cfg = resolve_config("macl", None, _tiny(["train.epochs=2"]))
    run, summary = run_training(cfg, shop, runs_dir=str(runs), run_id="macl-tiny")
    return run, summary


def _tiny(extra=()):
    from tests.trainer.synthetic import TINY

    return TINY + list(extra)


def test_tiny_model_overfits_tiny_data(shop, tmp_path):
    cfg = resolve_config("sasrec", None, _tiny([
        "train.epochs=4", "train.lr=0.01", "arch.dropout=0.0", "arch.attn_dropout=0.0",
        "arch.dim=32", "train.patience=20", "train.select_metric=mrr@20"]))
    run, summary = run_training(cfg, shop, runs_dir=str(tmp_path))
    loaded = load_run(run.location)
    res = evaluate(loaded.model, loaded.data.train, ks=[1], max_len=8, batch_size=256,
                   device=torch.device("cpu"), tie_policy="pessimistic")
    assert res.metrics["hr@1"] > 0.9  # the next item is a function of the last one here
    losses = [h["train"]["loss"]["total"] for h in run.read_metrics()]
    assert losses[-1] < 0.25 * losses[0]


def test_run_folder_contents_and_weights_only_checkpoints(trained):
    run, summary = trained
    for name in ("config.resolved.yaml", "manifest.json", "last.pt", "best.pt", "metrics.jsonl",
                 "report.md", "summary.json", "losses.png", "valid_metrics.png",
                 "adaptive_weights.png", "hr_by_popularity.png", "test_ranks.parquet"):
        assert run.exists(name), name
    for name in ("last.pt", "best.pt"):
        payload = torch.load(os.path.join(run.location, name), weights_only=True)
        assert {"model", "optimizer", "scheduler", "scaler", "rng", "progress"} <= set(payload)
        assert isinstance(payload["rng"]["torch"], torch.Tensor)
        assert json.loads(payload["progress"])["epoch"] >= 1
    manifest = run.read_manifest()
    assert manifest.store_sha256 and set(manifest.data_sha256) == {"catalog", "train", "valid",
                                                                   "test"}
    assert manifest.extra["features"]["tables"] == ["image/orig/0", "image/noise/0",
                                                    "text/orig/0", "text/swap/0"]
    assert run.read_config() == resolve_config("macl", None, _tiny(["train.epochs=2"]))
    report = (Path(run.location) / "report.md").read_text()
    assert "Are the adaptive weights uniform?" in report and "`item`" in report
    ranks = pq.read_table(os.path.join(run.location, "test_ranks.parquet"))
    from trainer.evaluate import metrics_from_ranks

    assert metrics_from_ranks(ranks.column("rank").to_numpy(), [20])["hr@20"] == \
        summary["test"]["metrics"]["hr@20"]


def _progress(path):
    try:
        return json.loads(torch.load(path, weights_only=True)["progress"])
    except Exception:  # replaced between stat and read: try again
        return None


def test_resume_after_kill_reaches_the_same_final_metrics(shop, tmp_path):
    overrides = _tiny(["train.epochs=4", "train.checkpoint_every_steps=3", "train.patience=10"])
    cfg = resolve_config("macl", None, overrides)
    _, full = run_training(cfg, shop, runs_dir=str(tmp_path), run_id="full")

    args = [sys.executable, "-m", "flows.cli", "train", "--workspace", shop, "--model", "macl",
            "--runs-dir", str(tmp_path), "--run-id", "killed"]
    for o in overrides:
        args += ["--set", o]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "killed" / "last.pt"
    killed_at = None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if last.exists():
                p = _progress(last)
                if p and p["epoch"] >= 1 and p["step"] > 0:  # a mid-epoch checkpoint of epoch 1+
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_at = p
                    break
            time.sleep(0.01)
    finally:
        proc.wait(timeout=60)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    assert not (tmp_path / "killed" / "summary.json").exists()

    run, resumed = run_training(None, None, resume=str(tmp_path / "killed"))
    assert resumed["test"]["metrics"] == full["test"]["metrics"]
    assert resumed["valid"]["metrics"] == full["valid"]["metrics"]
    assert resumed["best_epoch"] == full["best_epoch"]
    strip = lambda recs: [{"epoch": r["epoch"], "loss": r["train"]["loss"], "valid": r["valid"]}
                          for r in recs]  # noqa: E731
    full_log = RunDir.open(str(tmp_path / "full")).read_metrics()
    assert strip(run.read_metrics()) == strip(full_log)
    assert len(run.read_metrics()) == 4


def test_evaluate_cli_matches_the_summary(trained, capsys):
    run, summary = trained
    assert macl(["evaluate", "--run", run.location]) == 0
    written = json.loads((Path(run.location) / "eval-test.json").read_text())
    assert written["test"]["metrics"] == summary["test"]["metrics"]
    assert "test:tail" in capsys.readouterr().out


def test_recommend_cli_single_and_batch(trained, shop, tmp_path, capsys):
    run, _ = trained
    assert macl(["recommend", "--run", run.location, "--items", "it001,it005,it009", "-k", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["rank", "item_id"] and len(out) == 2 + 5
    assert all(line.split()[1].startswith("it") for line in out[2:])
    assert "cluster" in out[2]  # titles shown
    src = tmp_path / "sessions.parquet"
    pq.write_table(pa.table({"session_id": ["a", "b"],
                             "items": [["it001", "it005"], ["it002"]]}), src)
    dst = tmp_path / "recs.parquet"
    assert macl(["recommend", "--run", run.location, "--input", str(src), "--output", str(dst),
                 "-k", "3", "--exclude-seen"]) == 0
    recs = pq.read_table(dst).to_pylist()
    assert len(recs) == 6 and [r["rank"] for r in recs[:3]] == [1, 2, 3]
    assert not {"it001", "it005"} & {r["item_id"] for r in recs if r["session_id"] == "a"}
    assert macl(["recommend", "--run", run.location, "--items", "nope"]) == 2
    assert "unknown item_id" in capsys.readouterr().err


def test_compare_runs_table(trained, shop, tmp_path):
    run, _ = trained
    cfg = resolve_config("pop", None, _tiny())
    pop_run, _ = run_training(cfg, shop, runs_dir=str(tmp_path))
    table = compare_runs([pop_run.location, run.location])
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["model", "run_id"]
    assert lines[2].startswith("pop") and lines[3].startswith("macl")


def test_fusing_variants_refuse_to_run_without_features(shop, tmp_path):
    for model in ("sasrec_mm", "macl"):
        with pytest.raises(ContractError, match="at least one modality"):
            run_training(resolve_config(model, None, _tiny(["features.modalities=[]"])), shop,
                         runs_dir=str(tmp_path))


def test_id_only_workspace(id_only_shop, tmp_path):
    cfg = resolve_config("sasrec", None, _tiny(["train.epochs=1"]))
    _, summary = run_training(cfg, id_only_shop, runs_dir=str(tmp_path))
    assert summary["test"]["metrics"]["hr@20"] > 0
    cfg = resolve_config("macl_com", None, _tiny(["train.epochs=1"]))
    _, summary = run_training(cfg, id_only_shop, runs_dir=str(tmp_path))
    assert "test" in summary
    with pytest.raises(ContractError, match="no feature store"):
        run_training(resolve_config("macl", None, _tiny()), id_only_shop, runs_dir=str(tmp_path))


def test_select_on_test_is_labelled(shop, tmp_path, capsys):
    assert macl(["train", "--workspace", shop, "--model", "sasrec", "--runs-dir", str(tmp_path),
                 "--select-on-test", *sum((["--set", o] for o in _tiny(["train.epochs=1"])),
                                          [])]) == 0
    out = capsys.readouterr().out
    assert "SELECTED ON TEST" in out
    run = RunDir.open(out.splitlines()[0].split(": ", 1)[1])
    assert "SELECTED ON TEST" in (Path(run.location) / "report.md").read_text()
    assert all("SELECTED ON TEST" in r["label"] for r in run.read_metrics())
    assert run.read_summary()["selected_on"] == "test"


# ---- baselines, hand-computed --------------------------------------------------------------------

def _fit(model, sessions):
    cases = Cases.from_lists([s[:-1] for s in sessions], [s[-1] for s in sessions],
                             session_ids=[f"s{i}" for i in range(len(sessions))])
    model.fit(cases)
    return model


def _scores(model, seq):
    batch = make_batch(Cases.from_lists([seq], [1]), np.array([0]), 10)
    return model.score_all(batch)[0].tolist()


def test_pop_and_spop_hand_computed():
    sessions = [[1, 2, 2], [2, 3], [4, 2]]
    pop = _fit(Pop(5), sessions)
    assert _scores(pop, [1])[1:] == [1, 4, 1, 1, 0]
    spop = _fit(SPop(5), sessions)
    s = _scores(spop, [3, 3, 5])
    assert s[1:] == pytest.approx([1 / 5, 4 / 5, 2 + 1 / 5, 1 / 5, 1 + 0])


def test_sknn_hand_computed():
    # train sessions (distinct items): A={1,2}, B={2,3}, C={4,5}; query {2}
    knn = _fit(SKNN(5, BaselineConfig(sknn_k=1, sknn_sample=0)), [[1, 2], [2, 3], [4, 5]])
    # cos(q, A) = 1/sqrt(1*2) = cos(q, B); k=1 keeps the more recent one (B): items 2 and 3
    w = 1 / np.sqrt(2)
    assert _scores(knn, [2])[1:] == pytest.approx([0, w, w, 0, 0])
    knn = _fit(SKNN(5, BaselineConfig(sknn_k=2, sknn_sample=0)), [[1, 2], [2, 3], [4, 5]])
    assert _scores(knn, [2])[1:] == pytest.approx([w, 2 * w, w, 0, 0])
    # sample=1: only the most recent overlapping session (B) is a candidate
    knn = _fit(SKNN(5, BaselineConfig(sknn_k=2, sknn_sample=1)), [[1, 2], [2, 3], [4, 5]])
    assert _scores(knn, [2])[1:] == pytest.approx([0, w, w, 0, 0])


@pytest.mark.parametrize("seed,k,sample", [(0, 3, 0), (1, 2, 4), (2, 5, 3)])
def test_sknn_matches_a_brute_force_reference(seed, k, sample):
    rng = np.random.default_rng(seed)
    n = 12
    sessions = [list(rng.integers(1, n + 1, size=rng.integers(2, 6))) for _ in range(15)]
    knn = _fit(SKNN(n, BaselineConfig(sknn_k=k, sknn_sample=sample)), sessions)
    for query in ([1, 2], [5], [3, 3, 7, 9]):
        q = set(query)
        cands = [i for i, s in enumerate(sessions) if q & set(s)]
        if sample:
            cands = sorted(cands)[-sample:]
        sims = {i: len(q & set(sessions[i])) / np.sqrt(len(q) * len(set(sessions[i])))
                for i in cands}
        neigh = sorted(cands, key=lambda i: (-sims[i], -i))[:k]
        want = np.zeros(n + 1)
        for i in neigh:
            for item in set(sessions[i]):
                want[item] += sims[i]
        assert _scores(knn, query)[1:] == pytest.approx(want[1:].tolist())


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(shop, tmp_path):
    """DDP (gloo, CPU): the global batch is split across ranks, gradients are averaged and
    per-case ranks are gathered before metrics, so without dropout the numbers are identical."""
    sets = _tiny(["train.epochs=2", "arch.dropout=0.0", "arch.attn_dropout=0.0"])
    cfg = resolve_config("sasrec", None, sets)
    _, single = run_training(cfg, shop, runs_dir=str(tmp_path), run_id="single")
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "-m", "flows.cli", "train", "--workspace", shop, "--model", "sasrec",
            "--runs-dir", str(tmp_path), "--run-id", "ddp"]
    for o in sets:
        args += ["--set", o]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = RunDir.open(str(tmp_path / "ddp")).read_summary()
    assert ddp["test"]["metrics"] == pytest.approx(single["test"]["metrics"], abs=1e-9)
    assert ddp["valid"]["metrics"] == pytest.approx(single["valid"]["metrics"], abs=1e-9)
    assert RunDir.open(str(tmp_path / "ddp")).read_manifest().extra["world_size"] == 2
