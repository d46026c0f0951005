"""report.md and its PNG plots: losses, validation metrics by epoch, the adaptive weights'
distribution over training (are they uniform?), HR@K by item-popularity bucket."""
from __future__ import annotations

import io
from typing import Any

import numpy as np

from trainer.config import RunConfig
from trainer.runs import SELECT_ON_TEST_LABEL, RunDir, summary_table

#: histogram of log10(adaptive weight x n_anchors) per epoch: uniform weights sit at 0;
#: 0.02-wide bins resolve +-5% around uniform, the range covers 1/100 .. 100x
LOG_LO, LOG_HI, LOG_BINS = -2.0, 2.0, 200


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plots(cfg: RunConfig, summary: dict[str, Any], history: list[dict]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    epochs = [h["epoch"] for h in history]
    if history:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in ("total", "rec", "item", "sess"):
            vals = [h["train"]["loss"].get(key) for h in history]
            if any(v is not None for v in vals):
                ax.plot(epochs, [np.nan if v is None else v for v in vals], marker="o", label=key)
        ax.set_xlabel("epoch"), ax.set_ylabel("mean loss per step"), ax.legend()
        ax.set_title("training losses")
        out["losses.png"] = _png(fig)

        part = "test" if cfg.train.select_on_test else "valid"
        if all(part in h for h in history):
            fig, ax = plt.subplots(figsize=(6, 3.5))
            for key in history[0][part]:
                if key.endswith(f"@{max(cfg.eval.ks)}"):
                    ax.plot(epochs, [h[part][key] for h in history], marker="o", label=key)
            ax.axvline(summary["best_epoch"], color="grey", ls="--", label="selected epoch")
            ax.set_xlabel("epoch"), ax.legend()
            ax.set_title(f"{part} metrics by epoch" + (" [SELECTED ON TEST]" if part == "test"
                                                        else ""))
            out["valid_metrics.png"] = _png(fig)

        names = sorted({k for h in history for k in h["train"].get("weights", {})})
        if names:
            fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 3.5), squeeze=False)
            for ax, name in zip(axes[0], names):
                rows = [(h["epoch"], h["train"]["weights"][name]) for h in history
                        if name in h["train"].get("weights", {})]
                hist = np.array([w["log10_hist"] for _, w in rows], dtype=float)
                hist = hist / np.maximum(hist.sum(1, keepdims=True), 1)
                ax.imshow(hist.T, aspect="auto", origin="lower", cmap="viridis",
                          extent=[rows[0][0] - 0.5, rows[-1][0] + 0.5, LOG_LO, LOG_HI])
                used = np.flatnonzero(hist.sum(0) > 0)
                edges = np.linspace(LOG_LO, LOG_HI, LOG_BINS + 1)
                lo, hi = (edges[used[0]], edges[used[-1] + 1]) if used.size else (-0.1, 0.1)
                pad = max(0.1, 0.1 * (hi - lo))
                ax.set_ylim(max(LOG_LO, lo - pad), min(LOG_HI, hi + pad))
                ax.axhline(0.0, color="white", ls="--", lw=0.8)
                ax.set_xlabel("epoch"), ax.set_ylabel("log10(weight x n_anchors)")
                near = rows[-1][1]["share_0.5_2"]
                ax.set_title(f"{name} weights (uniform = 0); last epoch {near:.0%} in [0.5, 2]")
            out["adaptive_weights.png"] = _png(fig)

    buckets = (summary.get("test") or {}).get("buckets") or []
    if buckets:
        k = max(cfg.eval.ks)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar([f"{b['label']}\n(n={b['n']})" for b in buckets], [b[f"hr@{k}"] for b in buckets])
        ax.set_xlabel("target's train events (popularity bucket)"), ax.set_ylabel(f"HR@{k}")
        ax.set_title(f"test HR@{k} by target popularity")
        ax.tick_params(axis="x", labelsize=7)
        out["hr_by_popularity.png"] = _png(fig)
    return out


def _weights_text(history: list[dict]) -> list[str]:
    lines = []
    if not history:
        return lines
    last = history[-1]["train"].get("weights", {})
    for name, w in sorted(last.items()):
        q = w.get("quantiles", {})
        verdict = "close to uniform" if w["share_0.5_2"] >= 0.9 else "far from uniform"
        lines.append(f"- `{name}`: mean {w['mean']:.3f}, std {w['std']:.3f}, "
                     f"{w['share_0.5_2']:.1%} of weights within [0.5, 2] of uniform, quantiles "
                     + ", ".join(f"{k} {v:.3g}" for k, v in q.items()) + f" — {verdict}.")
    return lines


def write_report(run: RunDir, cfg: RunConfig, summary: dict[str, Any],
                 history: list[dict]) -> None:
    plots = _plots(cfg, summary, history)
    for name, data in plots.items():
        run.write_bytes(name, data)
    lines = [f"# Run {summary['run_id']} ({summary['model']})", ""]
    if summary.get("select_on_test"):
        lines += [f"> **{SELECT_ON_TEST_LABEL}**: the epoch was chosen on the test split, as the "
                  "paper reports; these test numbers are optimistic.", ""]
    if summary["best_epoch"] >= 0:
        lines.append(f"- protocol `{summary['protocol']}`, selected epoch {summary['best_epoch']} "
                     f"of {summary['epochs_run']} run, chosen on **{summary['selected_on']}** by "
                     f"`{summary['select_metric']}`")
    else:
        lines.append(f"- protocol `{summary['protocol']}`, fitted from the train split (no epochs)")
    lines += [
              f"- tie policy `{summary['tie_policy']}`" + (", `paper_code` formulation"
                                                          if summary.get("paper_code") else ""),
              f"- config sha256 `{cfg.sha256()[:16]}` (see config.resolved.yaml)"]
    if "train_samples_per_s" in summary:
        lines.append(f"- training throughput {summary['train_samples_per_s']:.0f} samples/s")
    lines += ["", "## Metrics at the selected epoch", "", "```",
              summary_table(summary, cfg.eval.ks), "```", ""]
    captions = {"losses.png": "Training losses", "valid_metrics.png": "Selection metrics by epoch",
                "adaptive_weights.png": "Adaptive weights over training (histogram per epoch)",
                "hr_by_popularity.png": "Test HR by target popularity"}
    for name, caption in captions.items():
        if name in plots:
            lines += [f"## {caption}", "", f"![{caption}]({name})", ""]
            if name == "adaptive_weights.png":
                lines += ["Are the adaptive weights uniform? Weights are scaled so uniform = 1:", "",
                          *_weights_text(history), ""]
    buckets = (summary.get("test") or {}).get("buckets") or []
    if buckets:
        k = max(cfg.eval.ks)
        lines += ["| popularity bucket (train events) | test cases | HR@%d |" % k, "|---|---|---|"]
        lines += [f"| {b['label']} | {b['n']} | {b[f'hr@{k}']:.4f} |" for b in buckets]
        lines.append("")
    run.write_bytes("report.md", "\n".join(lines).encode())
