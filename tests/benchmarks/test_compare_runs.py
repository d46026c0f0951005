"""benchmarks/compare_runs.py: groups of runs compared case by case, mismatched splits refused."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.compare_runs import group_ranks, main


def _run(path, ranks, targets):
    path.mkdir(parents=True)
    pq.write_table(pa.table({"row": list(range(len(ranks)))[::-1], "rank": ranks[::-1],
                             "target": targets[::-1]}), path / "test_ranks.parquet")
    (path / "summary.json").write_text(json.dumps({"best_epoch": 1}))
    return path


def test_ranks_come_back_in_row_order_and_hr_is_compared(tmp_path, capsys):
    targets = list(range(1, 201))
    a = [_run(tmp_path / f"a{s}", [1] * 200, targets) for s in range(2)]  # every case a hit
    b = [_run(tmp_path / "b0", [1] * 100 + [50] * 100, targets)]  # half the cases
    ranks, tg = group_ranks(a)
    assert ranks.shape == (2, 200) and tg.tolist() == targets
    assert main(["--a", *map(str, a), "--b", *map(str, b), "--metrics", "hr@20",
                 "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "| hr@20 | 1.0000 ± 0.0000 | 0.5000 ± 0.0000 | +100.0% |" in out
    assert "better" in out


def test_groups_on_different_test_cases_are_refused(tmp_path):
    a = _run(tmp_path / "a", [1, 2, 3], [1, 2, 3])
    b = _run(tmp_path / "b", [1, 2, 3], [1, 2, 4])
    with pytest.raises(SystemExit, match="different cases"):
        main(["--a", str(a), "--b", str(b)])
