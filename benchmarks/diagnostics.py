"""Evidence for why MACL does or does not win on a dataset, computed from its files.

* **Feature retrieval**: recommend the items whose frozen feature vector (orig view) is nearest
  (cosine) to the last input item's, full ranking with the evaluator's pessimistic ties. If this
  barely beats chance, the features carry little next-item signal for the fusion to use.
* **View similarity**: mean cosine between an item's orig vector and its augmented views
  (the contrastive positives) against the mean cosine between two random items (typical
  negatives). Positives almost identical to the anchor make the item-level task trivial;
  negatives nearly as close as positives make it hard to learn anything useful.
* **Coverage**: share of test targets (and long-tail targets) with an ``ok`` feature row.
* **Adaptive weights**: spread of the learned weights at each MACL run's selected epoch (from
  ``metrics.jsonl``): near-uniform weights mean ``macl`` reduces to ``macl_noadp``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from schemas.fs import Workspace
from schemas.store import list_views, read_feature_matrix


def _normalised(values: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(values, dtype=np.float32))
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def feature_retrieval(ws_path: Path, protocol: str, k: int = 20) -> dict[str, dict[str, float]]:
    """Test HR@k / MRR@k of nearest-feature retrieval from the last input item, per modality
    (and both modalities' cosines averaged where an item has both)."""
    from trainer.data import read_cases, read_catalog
    from trainer.evaluate import metrics_from_ranks, target_ranks

    ws = Workspace.open(str(ws_path))
    n = read_catalog(ws, []).n_items
    test = read_cases(ws, protocol, "test", n)
    last = torch.from_numpy(test.window(np.arange(len(test)), 1)[:, 0])
    target = torch.from_numpy(test.targets)
    mods = sorted({m for m, v in list_views(ws) if v == "orig"})
    if not mods:
        return {}
    sims, oks = {}, {}
    out: dict[str, dict[str, float]] = {}
    for m in mods:
        fm = read_feature_matrix(ws, m, "orig", 0, n)
        x = _normalised(fm.values)
        ok = torch.from_numpy(fm.mask)
        s = x[last] @ x.T  # (cases, n_items + 1)
        s[:, ~ok] = -2.0  # items without the modality cannot be retrieved by it
        s[~ok[last]] = 0.0  # a last item without the modality scores nothing: all ties
        s[:, 0] = -float("inf")
        sims[m], oks[m] = s, ok
        out[m] = _ranked(s, target, k, target_ranks, metrics_from_ranks)
        out[m]["cases with the last item covered"] = float(ok[last].float().mean())
        out[m]["targets covered"] = float(ok[target].float().mean())
    if len(mods) > 1:
        num = torch.zeros_like(sims[mods[0]])
        den = torch.zeros_like(num)
        for m in mods:
            valid = (oks[m][last][:, None] & oks[m][None, :]).float()
            num += sims[m].clamp_min(-1.0) * valid
            den += valid
        both = torch.where(den > 0, num / den.clamp_min(1.0), torch.full_like(num, -2.0))
        both[:, 0] = -float("inf")
        both_key = "+".join(mods)
        out[both_key] = _ranked(both, target, k, target_ranks, metrics_from_ranks)
        any_ok = torch.stack([oks[m] for m in mods]).any(0)  # covered by at least one modality
        out[both_key]["cases with the last item covered"] = float(any_ok[last].float().mean())
        out[both_key]["targets covered"] = float(any_ok[target].float().mean())
    return out


def _ranked(scores, target, k, target_ranks, metrics_from_ranks) -> dict[str, float]:
    ranks = target_ranks(scores, target, "pessimistic", k)
    m = metrics_from_ranks(ranks, [k])
    return {f"hr@{k}": m[f"hr@{k}"], f"mrr@{k}": m[f"mrr@{k}"]}


def view_similarity(ws_path: Path, pairs: int = 20_000, seed: int = 0
                    ) -> list[dict[str, float | str]]:
    """Per augmented view: mean cos(orig, view) of the same item vs cos(orig, orig) of random
    item pairs."""
    ws = Workspace.open(str(ws_path))
    from schemas.io import read_items

    n = read_items(ws).num_rows
    rng = np.random.default_rng(seed)
    rows = []
    origs = {}
    for m, v in list_views(ws):
        if v == "orig":
            fm = read_feature_matrix(ws, m, v, 0, n)
            origs[m] = (_normalised(fm.values), torch.from_numpy(fm.mask))
    for m, (x, ok) in sorted(origs.items()):
        idx = torch.nonzero(ok).squeeze(1).numpy()
        a, b = rng.choice(idx, pairs), rng.choice(idx, pairs)
        keep = a != b
        random_cos = float((x[a[keep]] * x[b[keep]]).sum(1).mean())
        for mm, v in list_views(ws):
            if mm != m or v == "orig":
                continue
            fv = read_feature_matrix(ws, m, v, 0, n)
            y = _normalised(fv.values)
            both = ok & torch.from_numpy(fv.mask)
            cos = (x[both] * y[both]).sum(1)
            rows.append({"modality": m, "view": v, "items": int(both.sum()),
                         "cos(orig, view)": float(cos.mean()),
                         "p5 cos(orig, view)": float(cos.quantile(0.05)),
                         "cos(random pair)": random_cos})
    return rows


def adaptive_weights(run: Path) -> dict[str, dict[str, float]]:
    """Weight spread and contrastive losses at the run's selected epoch."""
    summary = json.loads((run / "summary.json").read_text())
    best = summary["best_epoch"]
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["epoch"] == best:
            out = {k: {"std": w["std"], "share_0.5_2": w["share_0.5_2"],
                       "p5": w.get("quantiles", {}).get("p5", float("nan")),
                       "p95": w.get("quantiles", {}).get("p95", float("nan"))}
                   for k, w in rec["train"].get("weights", {}).items()}
            out["loss"] = dict(rec["train"]["loss"])
            return out
    return {}
