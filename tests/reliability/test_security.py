"""Security: no unrestricted unpickling, weights-only checkpoints, confined image paths, and
audit SQL that never pastes user input.

Static checks walk the syntax tree of every tracked Python file of the packages and the
benchmarks; behavioural checks feed hostile files to the real commands. (The SR-GNN reader's
refusals of globals, floats, strings and dicts are in tests/pipeline/test_ingest_srgnn.py;
path confinement cases in tests/pipeline/test_sources.py and test_bad_input.py here.)
"""
from __future__ import annotations

import ast
import io
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "pipeline", "flows", "trainer", "benchmarks")


def python_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--", *(f"{p}/*.py" for p in PACKAGES)], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    files = [REPO / f for f in out if (REPO / f).exists()]
    assert len(files) > 40  # the scan really covers the code base
    return files


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def dotted(node: ast.AST) -> str:
    """'torch.load' for torch.load(...), 'con.execute' for con.execute(...)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan(text: str, rel: str) -> list[str]:
    """Every risky call in one source file, as 'file:line: what'."""
    out = []
    tree = ast.parse(text, rel)
    for call in calls(tree):
        name = dotted(call.func)
        where = f"{rel}:{call.lineno}"
        if name.endswith("torch.load") and not is_true(keyword(call, "weights_only")):
            out.append(f"{where}: torch.load without weights_only=True")
        if name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "dill.loads",
                    "cloudpickle.load", "cloudpickle.loads", "joblib.load", "pd.read_pickle",
                    "pandas.read_pickle", "shelve.open", "marshal.loads", "yaml.unsafe_load",
                    "yaml.full_load"):
            out.append(f"{where}: unrestricted deserialisation ({name})")
        if name == "yaml.load":
            loader = keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
            if loader is None or "Safe" not in dotted(loader):
                out.append(f"{where}: yaml.load without a safe loader")
        if (name.endswith("np.load") or name.endswith("numpy.load")) and \
                is_true(keyword(call, "allow_pickle")):
            out.append(f"{where}: np.load(allow_pickle=True)")
        if name in ("eval", "exec", "os.system", "os.popen"):
            out.append(f"{where}: {name}")
        if is_true(keyword(call, "shell")):
            out.append(f"{where}: subprocess with shell=True")
        if name.split(".")[-1] in ("execute", "sql", "query", "executemany") and call.args:
            sql = call.args[0]
            if isinstance(sql, (ast.JoinedStr, ast.BinOp)) or (
                    isinstance(sql, ast.Call) and dotted(sql.func).endswith("format")):
                out.append(f"{where}: SQL built by string formatting ({name})")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(dotted(b).endswith("Unpickler")
                                                  for b in node.bases):
            methods = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
            refuses = "find_class" in methods and any(isinstance(n, ast.Raise)
                                                      for n in ast.walk(methods["find_class"]))
            if not refuses:
                out.append(f"{rel}:{node.lineno}: Unpickler subclass that admits globals")
    return out


def test_the_scan_finds_each_risky_pattern():
    bad = """
import pickle, torch, yaml, numpy as np, subprocess, os
pickle.loads(b"")
torch.load("x.pt")
torch.load("x.pt", weights_only=False)
yaml.load(open("c.yaml"))
np.load("a.npy", allow_pickle=True)
subprocess.run("ls", shell=True)
eval("1")
con.execute(f"SELECT * FROM read_parquet('{path}')")
con.sql("SELECT " + column)
class Loose(pickle.Unpickler):
    pass
torch.load("ok.pt", weights_only=True)
yaml.load(text, Loader=yaml.SafeLoader)
con.execute("SELECT $x", {"x": 1})
"""
    found = [f.split(": ", 1)[1] for f in scan(bad, "bad.py")]
    assert found == ["unrestricted deserialisation (pickle.loads)",
                     "torch.load without weights_only=True",
                     "torch.load without weights_only=True",
                     "yaml.load without a safe loader", "np.load(allow_pickle=True)",
                     "subprocess with shell=True", "eval",
                     "SQL built by string formatting (con.execute)",
                     "SQL built by string formatting (con.sql)",
                     "Unpickler subclass that admits globals"]


def test_no_unrestricted_unpickling_unsafe_loading_or_pasted_sql():
    found = [f for path in python_files()
             for f in scan(path.read_text(), str(path.relative_to(REPO)))]
    assert found == []


def test_the_only_unpickler_refuses_every_global(tmp_path):
    """The SR-GNN reader: a pickle that would run code when loaded is refused, nothing runs."""
    from pipeline.ingest.srgnn import restricted_load
    from schemas.errors import ContractError

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for obj in ([[1, 2], Payload()], ([[1]], [Payload()])):
        path = tmp_path / "all_train_seq.txt"
        path.write_bytes(pickle.dumps(obj, protocol=2))
        with pytest.raises(ContractError, match="refers to the global"):
            restricted_load(path)
    assert not marker.exists()


def test_checkpoints_load_weights_only(tmp_path, capsys, monkeypatch):
    """A run folder whose checkpoint carries a code-running pickle: evaluate and resume stop
    with a clear error (exit 2) and nothing runs."""
    import torch

    from flows.cli import main as macl
    from tests.trainer.synthetic import TINY, make_workspace
    from trainer.config import resolve_config
    from trainer.loop import run_training

    monkeypatch.chdir(tmp_path)
    ws = make_workspace(tmp_path / "ws", with_store=False)
    run, _ = run_training(resolve_config("sasrec", None, TINY + ["train.epochs=1"]), ws.root,
                          runs_dir=str(tmp_path / "runs"), run_id="r")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buf = io.BytesIO()
    torch.save({"format": "macl-checkpoint/1", "model": Payload()}, buf)
    for name in ("best.pt", "last.pt"):
        Path(run.location, name).write_bytes(buf.getvalue())
    assert macl(["evaluate", "--run", run.location]) == 2
    assert "best.pt: is not a readable macl checkpoint" in capsys.readouterr().err
    assert macl(["train", "--resume", run.location]) == 2
    assert "last.pt: is not a readable macl checkpoint" in capsys.readouterr().err
    assert not marker.exists()


def test_audit_paths_are_parameters_not_sql(tmp_path):
    """A workspace whose path is an SQL injection attempt audits normally, in-process and
    through the printed ``--sql`` script (where paths are quoted for display)."""
    import duckdb

    from benchmarks.synthetic_store import write_synthetic_store
    from pipeline.audit import audit_store, load_statements
    from schemas.fs import Workspace

    header, statements = load_statements()
    for st in statements:  # the statements read registered relations, never a path
        assert "read_parquet" not in st.sql and "'/" not in st.sql
        assert set(st.params) <= {"n_items", "limit"}
    hostile = tmp_path / "ws'); DROP TABLE items; SELECT ('x"
    store = write_synthetic_store(Workspace.open(hostile), 4, views=(("text", "orig"),), dim=3,
                                  shard_size=2, image_files=False)
    report = audit_store(store.workspace, expected=store.expected)
    assert report.passed and report.items == 4 and report.rows == 4
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    for st in report.sql.split(";\n"):
        if st.strip() and not all(line.startswith("--") for line in st.strip().splitlines()):
            con.execute(st)
    assert con.execute("SELECT covered, items FROM coverage").fetchall() == [(4, 4)]
    assert con.execute("SELECT count(*) FROM items").fetchone() == (4,)
    shutil.rmtree(hostile)
