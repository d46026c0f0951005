"""The README's main job, end to end on a tiny shop (slow: it runs every view and three models)."""
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_the_whole_product(tmp_path):
    ws = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--workspace", str(ws),
                           "--size", "60"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for step in ("[1/6]", "[4/6]", "[5/6]", "[6/6]", "audit PASSED"):
        assert step in out
    table = out[out.index("[6/6]"):]
    for model in ("pop", "sasrec", "macl"):
        assert any(line.startswith(model + " ") for line in table.splitlines()), model
    runs = sorted((ws / "runs").iterdir())
    assert len(runs) == 3
    for run in runs:
        assert (run / "report.md").is_file() and list(run.glob("*.png"))
