"""One timed RecBole SASRec training epoch; run by ``benchmarks/speed.py`` inside RecBole's own
throwaway virtual environment (it imports nothing from this project).

``--anomaly shipped`` leaves torch's anomaly detection as RecBole leaves it: importing its
model zoo (``recbole.model.sequential_recommender.sine``) calls
``torch.autograd.set_detect_anomaly(True)`` globally. ``--anomaly off`` switches it off again
before training (the "patched" figure). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data-path", required=True, help="folder holding <dataset>/<dataset>.inter")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--anomaly", choices=("shipped", "off"), default="shipped")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--checkpoint-dir", default="/tmp/recbole-saved")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config = Config(model="SASRec", dataset=args.dataset, config_dict={
        "data_path": args.data_path, "checkpoint_dir": args.checkpoint_dir,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "hidden_size": args.dim, "inner_size": 4 * args.dim, "n_layers": args.layers,
        "n_heads": args.heads, "hidden_dropout_prob": args.dropout,
        "attn_dropout_prob": args.dropout, "hidden_act": "gelu",
        "MAX_ITEM_LIST_LENGTH": args.max_len, "train_batch_size": args.batch_size,
        "loss_type": "CE", "train_neg_sample_args": None, "epochs": 1,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "use_gpu": args.device != "cpu", "gpu_id": "0", "worker": 0, "show_progress": False,
        "seed": 2020, "reproducibility": True, "log_wandb": False})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _valid, _test = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data.dataset).to(config["device"])
    anomaly_after_import = torch.is_anomaly_enabled()
    if args.anomaly == "off":
        torch.autograd.set_detect_anomaly(False)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    samples = len(train_data.dataset)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    trainer._train_epoch(train_data, epoch_idx=0, show_progress=False)
    if args.device != "cpu":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    out = {"framework": f"recbole {recbole.__version__}", "torch": torch.__version__,
           "anomaly": args.anomaly, "anomaly_enabled_after_import": anomaly_after_import,
           "anomaly_enabled_in_training": torch.is_anomaly_enabled(), "samples": samples,
           "seconds": wall, "cpu_seconds": cpu, "samples_per_s": samples / wall,
           "threads": torch.get_num_threads(), "device": str(config["device"]),
           "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if args.device != "cpu":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
