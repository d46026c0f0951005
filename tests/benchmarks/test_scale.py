"""benchmarks.scale at toy size: its sessions are a valid split and its table reports growth."""
import numpy as np

from benchmarks.scale import PROTOCOL, ensure_sessions, markdown, session_table
from schemas.io import read_split


def test_sessions_are_a_valid_split_with_zipf_popularity(workspace):
    table = session_table(n_items=50, n_sessions=2000, seed=0)
    lengths = np.array([len(s) for s in table.column("items").to_pylist()])
    assert lengths.min() >= 1 and lengths.max() <= 49
    counts = np.bincount(np.concatenate([np.concatenate(table.column("items").to_pylist()),
                                         table.column("target").to_numpy()]), minlength=51)
    assert counts[0] == 0 and counts.max() > 10 * np.median(counts[1:])  # a popular head
    ensure_sessions(workspace.path(), 50, 300)
    train, info = read_split(workspace, PROTOCOL, "train")
    assert train.num_rows == 300 and info["n_items"] == 50 and info["sessions"] == 300


def test_table_shows_the_growth_ratio():
    def result(n, scale):
        load = {"load_s": scale, "tensor_bytes": 2 ** 20 * scale, "peak_bytes": 2 ** 20 * scale,
                "ratio": 1.0}
        return {"items": n, "audit": {"audit_s": 2.0 * scale},
                "load": {"float16": load, "float32": load},
                "train": {"sessions": n, "step_s": 0.5, "samples_per_s": 512.0,
                          "epoch_s": n / 512, "extrapolated": n > 100, "steps_timed": 2,
                          "epoch_steps": n // 256}}
    text = markdown([result(100, 1), result(1000, 10)], "machine")
    assert "| audit, warm (s) | 2.0 | 20.0 | 10.0x |" in text
    assert "(extrapolated from 2 of 3 steps)" in text and "(full epoch)" in text
