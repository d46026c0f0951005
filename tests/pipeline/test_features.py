import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.augment.image import decode_image
from pipeline.features import (
    FeaturesConfig,
    StoreBusy,
    StoreLock,
    build_manifest,
    clean_store,
    compute_part,
    part_is_current,
    plan_run,
    select_views,
    shard_ranges,
)
from schemas.errors import ContractError
from schemas.store import read_feature_matrix, read_part_info, read_view_rows, view_dir
from tests.pipeline.tiny_catalog import WORDS, build_catalog


def config(**over):
    base = {"shard_size": 3, "loader_workers": 2, "prefetch_batches": 1,
            "image": {"batch_size": 2, "device": "cpu", "views": {"orig": {}}},
            "text": {"batch_size": 2, "device": "cpu", "views": {"orig": {}}}}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return FeaturesConfig.from_dict(base)


def run_all(ws, cfg, **kw):
    plan = plan_run(ws, cfg, **kw)
    return plan, [compute_part(ws, cfg, p) for p in plan.parts]


# ------------------------------------------------------------------ configuration


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    with pytest.raises(ContractError, match=r"unknown key\(s\) \['shardsize'\]"):
        FeaturesConfig.from_dict({"shardsize": 3})
    with pytest.raises(ContractError, match=r"unknown key\(s\) \['encodr'\] in image"):
        FeaturesConfig.from_dict({"image": {"encodr": "x"}})
    with pytest.raises(ContractError, match="has no parameter"):
        FeaturesConfig.from_dict({"image": {"views": {"blur": {"params": {"radius": 2}}}}})
    with pytest.raises(ContractError, match="expected an integer"):
        FeaturesConfig.from_dict({"shard_size": "big"})
    with pytest.raises(ContractError, match="deterministic view"):
        FeaturesConfig.from_dict({"image": {"views": {"hflip": {"samples": 2}}}})
    with pytest.raises(ContractError, match="unknown features preset"):
        FeaturesConfig.from_dict({"preset": "fast"})
    with pytest.raises(ContractError, match="no such config file"):
        FeaturesConfig.load(tmp_path / "nope.yaml")


def test_config_yaml_round_trip_and_presets(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("preset: paper\nshard_size: 7\ntext:\n  views:\n    swap: {samples: 2}\n")
    cfg = FeaturesConfig.load(path)
    assert cfg.image.encoder == "googlenet" and cfg.text.model == "bert-base-uncased"
    assert cfg.text.pooling == "cls" and cfg.shard_size == 7
    assert list(cfg.text.views) == ["swap"]  # a views mapping replaces the preset's views
    assert FeaturesConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "g.yaml").write_text(cfg.to_yaml())
    assert FeaturesConfig.load(tmp_path / "g.yaml") == cfg
    default = FeaturesConfig.load(None)
    assert default == FeaturesConfig.load("default")
    assert default.image.encoder == "efficientnet-lite0"
    assert len(default.expected_views()) == 11


def test_expected_views_is_what_provenance_records(tmp_path):
    cfg = config(seed=5, text={"views": {"swap": {"samples": 2, "seed": 9,
                                                   "params": {"aug_p": 0.2}}}})
    exp = cfg.expected_views()
    assert exp[("text", "swap")] == {"encoder": "sentence-transformers/all-MiniLM-L6-v2",
                                     "view_params": {"aug_p": 0.2, "aug_min": 1, "aug_max": 10},
                                     "seed": 9, "samples": 2}
    assert exp[("image", "orig")] == {"encoder": "efficientnet-lite0", "view_params": {},
                                      "seed": 5, "samples": 1}
    ws = build_catalog(tmp_path / "ws", 3)
    run_all(ws, cfg)
    for (m, v), want in exp.items():
        info = read_part_info(ws, m, v, "part-00000.parquet")
        got = {"encoder": info["encoder"]["name"], "view_params": info["view_params"],
               "seed": info["seed"], "samples": info["samples"]}
        assert got == want


def test_select_views_and_shards():
    cfg = FeaturesConfig()
    assert select_views(cfg, ["text/swap", "hflip"]) == [("image", "hflip"), ("text", "swap")]
    assert select_views(cfg, ["orig"]) == [("image", "orig"), ("text", "orig")]
    assert len(select_views(cfg, ["image"])) == 6
    with pytest.raises(ContractError, match="matches no configured view"):
        select_views(cfg, ["audio"])
    assert shard_ranges(7, 3) == [(0, 1, 3), (1, 4, 6), (2, 7, 7)]
    assert shard_ranges(0, 3) == []


# ------------------------------------------------------------------ computing parts


def test_failed_image_mid_batch_shifts_no_other_row(tmp_path):
    ws = build_catalog(tmp_path / "ws", 5)
    (tmp_path / "ws" / "images" / "3.jpg").write_bytes(b"\xff\xd8 corrupt")
    cfg = config(shard_size=5, image={"batch_size": 4})
    plan, results = run_all(ws, cfg, views=["image/orig"])
    assert results[0].ok == 4 and results[0].error == 1
    rows = read_view_rows(ws, "image", "orig").to_pydict()
    assert rows["item_idx"] == [1, 2, 3, 4, 5]
    assert rows["status"][2] == "error" and rows["embedding"][2] is None
    assert "not an image" in rows["reason"][2] or "image" in rows["reason"][2]
    from pipeline.encoders import load_image_encoder

    enc = load_image_encoder(cfg.image_spec())
    for i in (1, 2, 4, 5):
        img = decode_image((tmp_path / "ws" / "images" / f"{i}.jpg").read_bytes())
        alone = enc.forward(enc.preprocess(img)[None])[0]
        np.testing.assert_allclose(rows["embedding"][i - 1], alone, rtol=1e-4, atol=1e-5)


def test_bad_inputs_become_reasoned_rows_never_gaps(tmp_path):
    root = tmp_path / "ws"
    ws = build_catalog(root, 3)
    (root / "images" / "zero.jpg").write_bytes(b"")
    (root / "images" / "note.jpg").write_text("just text")
    data = (root / "images" / "1.jpg").read_bytes()
    (root / "images" / "half.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "secret.jpg").write_bytes(data)
    uris = ["images/1.jpg", "images/zero.jpg", "images/note.jpg", "images/half.jpg",
            "images/none.jpg", "../secret.jpg", "https://example.com/x.jpg", None]
    texts = ["ok text", "", None, "x" * 1_000_000, "caf\u00e9 cr\u00e8me", "a", "b", "c"]
    ws = build_catalog(root, 8, texts=texts, uris=uris)
    cfg = config(shard_size=8, text={"max_length": 32})
    run_all(ws, cfg)
    img = read_view_rows(ws, "image", "orig").to_pydict()
    assert img["item_idx"] == list(range(1, 9))
    assert img["status"] == ["ok", "error", "error", "error", "missing", "error", "error",
                             "missing"]
    reasons = img["reason"]
    assert "0 bytes" in reasons[1] and "not an image" in reasons[2]
    assert "truncated" in reasons[3] or "cannot open" in reasons[3]
    assert "not found" in reasons[4] and "escapes" in reasons[5] and "URL" in reasons[6]
    txt = read_view_rows(ws, "text", "orig").to_pydict()
    assert txt["status"] == ["ok", "missing", "missing", "ok", "ok", "ok", "ok", "ok"]
    assert txt["reason"][1] == "empty text" and txt["reason"][2] == "no text in the catalog"
    assert img["source_sha256"][1] is None and txt["source_sha256"][3] is not None
    m = read_feature_matrix(ws, "image", "orig", 0, 8)
    assert m.mask.tolist() == [False, True] + [False] * 7 and not m.values[2:].any()


def test_sharding_and_batching_do_not_change_any_draw(tmp_path):
    ws = build_catalog(tmp_path / "ws", 5)
    views = {"views": {"crop": {"samples": 2}}}
    a_cfg = config(shard_size=2, image={"batch_size": 3, **views}, text={"views": {}})
    b_cfg = config(shard_size=5, image={"batch_size": 1, **views}, text={"views": {}},
                   loader_workers=0)
    run_all(ws, a_cfg)
    a = read_view_rows(ws, "image", "crop").sort_by([("item_idx", "ascending"),
                                                     ("sample", "ascending")]).to_pydict()
    ws_b = build_catalog(tmp_path / "wsb", 5)
    run_all(ws_b, b_cfg)
    b = read_view_rows(ws_b, "image", "crop").to_pydict()
    assert a["item_idx"] == b["item_idx"] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert a["sample"] == b["sample"] == [0, 1] * 5
    np.testing.assert_allclose(np.array(a["embedding"]), np.array(b["embedding"]), rtol=1e-4,
                               atol=1e-5)
    assert not np.allclose(a["embedding"][0], a["embedding"][1], atol=1e-3)  # two draws differ


def test_rerun_skips_current_parts_and_edits_recompute_only_their_shard(tmp_path):
    ws = build_catalog(tmp_path / "ws", 7)
    cfg = config(text={"views": {"orig": {}, "swap": {}}}, image={"views": {}})
    plan, first = run_all(ws, cfg)
    assert all(r.computed for r in first) and len(first) == 6
    plan2, again = run_all(ws, cfg)
    assert not any(r.computed for r in again) and plan2.parts == plan.parts
    texts = [f"{WORDS[i % len(WORDS)]} item {i}" for i in range(1, 9)]  # item 8 is new
    texts[4] = "an edited description"
    ws = build_catalog(tmp_path / "ws", 8, texts=texts)
    plan3 = plan_run(ws, cfg)
    changed = {(p.view, p.shard) for p in plan3.parts if not part_is_current(ws, p)}
    assert changed == {("orig", 1), ("swap", 1), ("orig", 2), ("swap", 2)}
    results = {(r.view, r.shard): r for r in (compute_part(ws, cfg, p) for p in plan3.parts)}
    assert results[("orig", 0)].computed is False
    assert results[("orig", 1)].reused_items == 2  # items 4 and 6 kept, item 5 re-encoded
    assert results[("orig", 2)].reused_items == 1 and results[("orig", 2)].items == 2
    rows = read_view_rows(ws, "text", "orig").to_pydict()
    assert rows["item_idx"] == list(range(1, 9)) and set(rows["status"]) == {"ok"}


def test_float16_storage_and_manifest(tmp_path):
    ws = build_catalog(tmp_path / "ws", 4)
    cfg = config(storage_dtype="float16")
    plan, _ = run_all(ws, cfg)
    t = read_view_rows(ws, "text", "orig")
    assert t.schema.field("embedding").type.value_type == pa.float16()
    manifest = build_manifest(ws, plan.catalog_sha256)
    entry = manifest.views["image/orig"]
    assert entry.dim == 1280 and entry.dtype == "float16" and set(entry.parts) == {
        "part-00000.parquet", "part-00001.parquet"}
    assert entry.parts["part-00001.parquet"]["ok"] == 1
    assert manifest.catalog_sha256 == plan.catalog_sha256


def test_clean_store_removes_temp_files_and_parts_outside_the_plan(tmp_path):
    ws = build_catalog(tmp_path / "ws", 4)
    cfg = config()
    plan, _ = run_all(ws, cfg)
    vdir = tmp_path / "ws" / "features" / "modality=image" / "view=orig"
    (vdir / ".part-00000.parquet.tmp-abc").write_bytes(b"partial")
    (tmp_path / "ws" / "features" / "._manifest.json.tmp-def").write_bytes(b"{")
    bigger = config(shard_size=4)
    plan4 = plan_run(ws, bigger)
    removed = clean_store(ws, plan4)
    assert sorted(r.rsplit("/", 1)[-1] for r in removed) == [
        "._manifest.json.tmp-def", ".part-00000.parquet.tmp-abc", "part-00001.parquet",
        "part-00001.parquet"]
    assert sorted(p.name for p in vdir.iterdir()) == ["part-00000.parquet"]


def test_store_lock_is_exclusive(tmp_path):
    ws = build_catalog(tmp_path / "ws", 1)
    with StoreLock(ws):
        with pytest.raises(StoreBusy, match="another"):
            with StoreLock(ws):
                pass
    with StoreLock(ws):  # released
        pass


def test_planning_fails_before_work_when_paper_models_are_missing(tmp_path, monkeypatch):
    from pipeline.encoders import EncoderUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    ws = build_catalog(tmp_path / "ws", 2)
    with pytest.raises(EncoderUnavailable) as err:
        plan_run(ws, FeaturesConfig.load("paper"))
    assert "[image] GoogLeNet" in str(err.value) and "[text]" in str(err.value)  # all at once
    assert not (tmp_path / "ws" / "features").exists()
    assert view_dir("image", "orig")[0] == "features"
