"""The training loop: epochs of shuffled batches, validation after each, early stopping, the test
number read at the selected epoch, checkpoints that resume to the same final metrics.

Resume is exact because every source of change is in ``last.pt``: weights, optimizer,
scheduler, scaler, the global RNG (dropout, negative sampling, view picks), the epoch and step
(each epoch's order is a permutation seeded by (seed, epoch), so it is rebuilt, not stored),
early-stopping state, the metric history and the running sums of the interrupted epoch.
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from trainer import checkpoint as ckpt
from trainer.config import RunConfig
from trainer.data import make_batch
from trainer.distributed import DistContext
from trainer.evaluate import EvalResult, evaluate
from trainer.models import Recommender
from trainer.runs import BEST, LAST, MANIFEST_NAME, SELECT_ON_TEST_LABEL, RunDir, build_manifest
from trainer.report import LOG_BINS, LOG_HI, LOG_LO
from trainer.runtime import RunData, amp_dtype, load_data, make_model, pick_device, seed_everything



@dataclass
class Progress:
    """Loop state saved in every checkpoint (JSON)."""

    epoch: int = 0  # the epoch in progress (or next to run)
    step: int = 0  # the next step within it
    best_metric: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    running: dict[str, Any] = field(default_factory=dict)  # sums of the interrupted epoch


class EpochStats:
    """Loss sums and adaptive-weight histograms of one epoch (JSON round-trippable)."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        s = state or {}
        self.steps = s.get("steps", 0)
        self.samples = s.get("samples", 0)
        self.seconds = s.get("seconds", 0.0)
        self.loss = dict(s.get("loss", {}))
        self.weights = {k: dict(v) for k, v in s.get("weights", {}).items()}

    def add(self, out, n: int, seconds: float) -> None:
        self.steps += 1
        self.samples += n
        self.seconds += seconds
        self.loss["total"] = self.loss.get("total", 0.0) + float(out.total.detach())
        for k, v in out.parts.items():
            self.loss[k] = self.loss.get(k, 0.0) + float(v)
        for k, w in out.weights.items():
            w = w.float().cpu()
            acc = self.weights.setdefault(k, {"n": 0, "sum": 0.0, "sumsq": 0.0, "near": 0,
                                              "hist": [0.0] * LOG_BINS})
            lw = torch.log10(w.clamp_min(1e-12)).clamp(LOG_LO, LOG_HI)
            hist = torch.histc(lw, LOG_BINS, LOG_LO, LOG_HI)
            acc["hist"] = [a + float(b) for a, b in zip(acc["hist"], hist)]
            acc["n"] += int(w.numel())
            acc["sum"] += float(w.sum())
            acc["sumsq"] += float((w * w).sum())
            acc["near"] += int(((w >= 0.5) & (w <= 2.0)).sum())

    def state(self) -> dict[str, Any]:
        return {"steps": self.steps, "samples": self.samples, "seconds": self.seconds,
                "loss": self.loss, "weights": self.weights}

    def record(self) -> dict[str, Any]:
        steps = max(self.steps, 1)
        out = {"loss": {k: v / steps for k, v in self.loss.items()}, "samples": self.samples,
               "seconds": self.seconds,
               "samples_per_s": self.samples / self.seconds if self.seconds else 0.0}
        weights = {}
        for k, acc in self.weights.items():
            n = max(acc["n"], 1)
            mean = acc["sum"] / n
            weights[k] = {"n": acc["n"], "mean": mean,
                          "std": math.sqrt(max(acc["sumsq"] / n - mean * mean, 0.0)),
                          "share_0.5_2": acc["near"] / n, "log10_hist": acc["hist"],
                          "quantiles": _hist_quantiles(acc["hist"])}
        if weights:
            out["weights"] = weights
        return out


def _hist_quantiles(hist: list[float]) -> dict[str, float]:
    counts = np.asarray(hist)
    if counts.sum() == 0:
        return {}
    cum = np.cumsum(counts) / counts.sum()
    width = (LOG_HI - LOG_LO) / LOG_BINS
    return {f"p{q}": float(10 ** (LOG_LO + width * (np.searchsorted(cum, q / 100) + 0.5)))
            for q in (5, 25, 50, 75, 95)}


def _optimizer(cfg: RunConfig, model: Recommender, steps_per_epoch: int):
    # fused: one kernel per step for all parameters (CPU and CUDA)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                           fused=True)
    t = cfg.train
    total = max(t.epochs * steps_per_epoch, 1)
    if t.scheduler == "none" and t.warmup_steps == 0:
        return opt, None

    def factor(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if t.scheduler == "cosine":
            frac = (step - t.warmup_steps) / max(total - t.warmup_steps, 1)
            return 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        return 1.0

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


class Trainer:
    def __init__(self, cfg: RunConfig, workspace: str, run: RunDir, ctx: DistContext) -> None:
        self.cfg, self.run, self.ctx = cfg, run, ctx
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.seed)
        self.device = pick_device(cfg.train.device, ctx)
        self.amp = amp_dtype(cfg.train.amp, self.device)
        self.progress_bars = cfg.train.progress and ctx.is_main
        self.data: RunData = load_data(cfg, workspace, progress=self.progress_bars)
        self.model = make_model(cfg, self.data, self.device)
        B = cfg.train.batch_size
        full = math.ceil(len(self.data.train) / B)
        self.steps_per_epoch = min(full, cfg.train.max_steps_per_epoch) \
            if cfg.train.max_steps_per_epoch else full
        self.opt = self.sched = None
        if self.model.trainable:
            self.opt, self.sched = _optimizer(cfg, self.model, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.state = Progress()

    # ---- persistence -------------------------------------------------------------------------
    def _save(self, name: str) -> None:
        if not self.ctx.is_main:
            return
        data = ckpt.to_bytes(
            model=self.model.state_dict(), progress=asdict(self.state),
            optimizer=self.opt.state_dict() if self.opt else None,
            scheduler=self.sched.state_dict() if self.sched else None,
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            rng=ckpt.rng_state(), config_yaml=self.cfg.to_yaml())
        self.run.write_bytes(name, data)

    def resume(self) -> None:
        payload = ckpt.from_bytes(self.run.read_bytes(LAST), self.run.ws.display(LAST))
        self.model.load_state_dict(payload["model"])
        if self.opt is not None and payload["optimizer"]:
            self.opt.load_state_dict(payload["optimizer"])
        if self.sched is not None and payload["scheduler"]:
            self.sched.load_state_dict(payload["scheduler"])
        if payload["scaler"]:
            self.scaler.load_state_dict(payload["scaler"])
        ckpt.set_rng_state(payload["rng"])
        self.state = Progress(**payload["progress"])
        if self.ctx.is_main:
            self.run.write_metrics(self.state.history)

    def write_manifest(self, run_id: str) -> None:
        if not self.ctx.is_main:
            return
        bank = self.data.bank
        extra = {"variant": self.cfg.model, "select_on_test": self.cfg.train.select_on_test,
                 "device": str(self.device), "amp": str(self.amp), "world_size": self.ctx.world,
                 "n_items": self.data.catalog.n_items,
                 "cases": {"train": len(self.data.train), "test": len(self.data.test),
                           "valid": len(self.data.valid) if self.data.valid else 0},
                 "features": None if bank is None else {
                     "tables": bank.pool_names(), "coverage": bank.coverage(),
                     "memory_mapped": bank.mapped, "bytes": bank.nbytes()}}
        self.run.write_manifest(build_manifest(run_id, self.cfg, self.data.ws, self.data.protocol,
                                               None if bank is None else bank.store_sha256, extra))

    # ---- evaluation ----------------------------------------------------------------------------
    def evaluate(self, part: str, desc: str | None = None) -> EvalResult:
        cases = getattr(self.data, part)
        e = self.cfg.eval
        return evaluate(self.model, cases, ks=e.ks, max_len=self.cfg.data.max_len,
                        batch_size=e.batch_size, device=self.device, tie_policy=e.tie_policy, full_ranks=e.full_ranks,
                        slices=self.data.slices, ctx=self.ctx, progress=self.progress_bars,
                        desc=desc or part)

    # ---- training ------------------------------------------------------------------------------
    def fit(self) -> None:
        if not self.model.trainable:
            self.state.finished = True
            self._save(BEST)
            self._save(LAST)
            return
        wrapped = self.model
        if self.ctx.active:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        t = self.cfg.train
        while not self.state.finished and self.state.epoch < t.epochs:
            self._run_epoch(wrapped)
        if not self.state.finished:
            self.state.finished = True
            self._save(LAST)

    def _run_epoch(self, wrapped) -> None:
        from tqdm.auto import tqdm

        cfg, st = self.cfg, self.state
        B = cfg.train.batch_size
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + st.epoch)
        perm = torch.randperm(len(self.data.train), generator=gen).numpy()
        stats = EpochStats(st.running)
        all_pos = cfg.loss.rec_positions == "all"
        self.model.train()
        bar = tqdm(total=self.steps_per_epoch, initial=st.step, desc=f"epoch {st.epoch}",
                   unit="batch", leave=False, disable=not self.progress_bars)
        every = cfg.train.checkpoint_every_steps
        for step in range(st.step, self.steps_per_epoch):
            t0 = time.perf_counter()
            rows = self.ctx.shard(perm[step * B:(step + 1) * B])
            batch = make_batch(self.data.train, rows, cfg.data.max_len, all_pos).to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                out = wrapped(batch)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(out.total).backward()
            if cfg.train.grad_clip > 0:
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            if self.sched is not None:
                self.sched.step()
            stats.add(out, len(rows), time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss['total'] / stats.steps:.4f}", refresh=False)
            st.step = step + 1
            if every and st.step % every == 0 and st.step < self.steps_per_epoch:
                st.running = stats.state()
                self._save(LAST)
        bar.close()
        self._end_epoch(stats)

    def _end_epoch(self, stats: EpochStats) -> None:
        cfg, st = self.cfg, self.state
        record = {"epoch": st.epoch, "train": stats.record(),
                  "lr": self.opt.param_groups[0]["lr"]}
        if self.data.valid is not None:
            record["valid"] = self.evaluate("valid", f"valid {st.epoch}").metrics
        on_test = cfg.train.select_on_test
        if on_test:
            record["test"] = self.evaluate("test", f"test {st.epoch}").metrics
            record["label"] = SELECT_ON_TEST_LABEL
        value = record["test" if on_test else "valid"][cfg.train.select_metric]
        record["selected_on"] = "test" if on_test else "valid"
        improved = value > st.best_metric
        if improved:
            st.best_metric, st.best_epoch, st.bad_epochs = value, st.epoch, 0
        else:
            st.bad_epochs += 1
        record["best_epoch"] = st.best_epoch
        st.history.append(record)
        st.epoch += 1
        st.step = 0
        st.running = {}
        if st.bad_epochs >= cfg.train.patience:
            st.finished = True
        if self.ctx.is_main:
            self.run.write_metrics(st.history)
            if improved:
                self._save(BEST)
        self._save(LAST)
        self.ctx.barrier()  # no rank reads best.pt before rank 0 has written it
        if self.progress_bars:
            shown = {k: round(v, 4) for k, v in record.get("valid", record.get("test", {})).items()
                     if k.endswith("@20")}
            from tqdm.auto import tqdm

            tqdm.write(f"epoch {record['epoch']}: loss {record['train']['loss'].get('total', 0):.4f}"
                       f"  {'test' if on_test else 'valid'} {shown}"
                       f"{'  *best*' if improved else ''}")

    # ---- final numbers -------------------------------------------------------------------------
    def finish(self, run_id: str) -> dict[str, Any]:
        """Reload the selected epoch, evaluate valid and test there, write summary and report."""
        if self.model.trainable and self.run.exists(BEST):
            payload = ckpt.from_bytes(self.run.read_bytes(BEST), self.run.ws.display(BEST))
            self.model.load_state_dict(payload["model"])
        summary: dict[str, Any] = {
            "run_id": run_id, "model": self.cfg.model, "protocol": self.data.protocol,
            "best_epoch": self.state.best_epoch, "epochs_run": len(self.state.history),
            "select_on_test": self.cfg.train.select_on_test,
            "selected_on": "test" if self.cfg.train.select_on_test else "valid",
            "select_metric": self.cfg.train.select_metric,
            "tie_policy": self.cfg.eval.tie_policy, "paper_code": self.cfg.arch.paper_code,
        }
        if self.cfg.train.select_on_test:
            summary["label"] = SELECT_ON_TEST_LABEL
        results = {}
        for part in ("valid", "test"):
            if getattr(self.data, part) is None:
                continue
            res = self.evaluate(part, f"{part} (selected epoch)")
            results[part] = res
            summary[part] = res.to_json()
        train_recs = [h["train"] for h in self.state.history]
        if train_recs:
            secs = sum(r["seconds"] for r in train_recs)
            summary["train_samples_per_s"] = sum(r["samples"] for r in train_recs) / secs \
                if secs else 0.0
        if self.ctx.is_main:
            self.run.write_summary(summary)
            self._write_ranks(results["test"])
            from trainer.report import write_report

            write_report(self.run, self.cfg, summary, self.state.history)
        return summary

    def _write_ranks(self, res: EvalResult) -> None:
        """Per-case test ranks, for paired bootstrap comparisons between runs."""
        test = self.data.test
        table = pa.table({"row": pa.array(np.arange(len(test)), pa.int64()),
                          "session_id": test.session_ids,
                          "target": pa.array(test.targets, pa.int64()),
                          "rank": pa.array(res.ranks.astype(np.int64), pa.int64())})
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.run.write_bytes("test_ranks.parquet", buf.getvalue())


def run_training(cfg: RunConfig | None, workspace: str | None, *, runs_dir: str | None = None,
                 run_id: str | None = None, resume: str | None = None) -> tuple[RunDir, dict]:
    """Train (or resume) one run; returns its folder and summary. Under torchrun every rank
    calls this; rank 0 writes the files."""
    from trainer.distributed import close_distributed, init_distributed
    from trainer.runs import default_runs_dir, join, new_run_id

    ctx = init_distributed()
    try:
        if resume is not None:
            run = RunDir.open(resume, workspace)
            cfg = run.read_config()
            if run.exists(MANIFEST_NAME):
                manifest = run.read_manifest()  # an explicit --workspace wins (URI options)
                workspace, run_id = workspace or manifest.workspace, manifest.run_id
            elif workspace is None:
                from schemas.errors import ContractError

                raise ContractError(run.location, "was killed before its manifest was written; "
                                    "pass --workspace to resume it")
            else:
                run_id = run.location.rstrip("/").rsplit("/", 1)[-1]
        else:
            if cfg is None or workspace is None:
                raise ValueError("a new run needs a config and a workspace")
            run_id = ctx.broadcast_text(run_id or new_run_id(cfg.model))
            location = join(runs_dir or default_runs_dir(workspace), run_id)
            if ctx.is_main:
                run = RunDir.create(location)
                if run.exists(LAST):
                    from schemas.errors import ContractError

                    raise ContractError(location, "run folder already holds a run; use --resume")
                run.write_config(cfg)
            ctx.barrier()
            run = RunDir.open(location)
        trainer = Trainer(cfg, workspace, run, ctx)
        if not run.exists(MANIFEST_NAME):
            trainer.write_manifest(run_id)
        if resume is not None and run.exists(LAST):
            trainer.resume()
        trainer.fit()
        summary = trainer.finish(run_id)
        return run, summary
    finally:
        close_distributed(ctx)
