"""The whole ``macl demo``: the data steps of ``pipeline.demo``, then the product's two halves.

After generating, ingesting and splitting the SYNTHETIC shop, the demo extracts features with
the Prefect flow, audits the store with DuckDB (the audit gates stop the demo like they would
stop a scheduled run), trains ``pop``, ``sasrec`` and ``macl`` and ends with their comparison.
This module sits at the top of the import graph (like ``flows.cli``): it is the one place that
joins the feature pipeline and the trainer, and it imports each lazily inside its step.
"""
from __future__ import annotations

from pipeline.demo import DATA_STEPS, DemoContext, DemoStep

#: the models the demo compares: a popularity floor, ID-only SASRec and the full method
DEMO_MODELS = ("pop", "sasrec", "macl")


class DemoAuditFailed(RuntimeError):
    """The feature store of the demo did not pass its audit gates."""


def _features(ctx: DemoContext) -> str:
    from flows.features import run_features
    from pipeline.features import ViewSummary, format_summary

    summary = run_features(ctx.ws.uri, progress=True)
    ctx.results["features"] = summary
    return format_summary([ViewSummary(**v) for v in summary["views"]], summary["wall_seconds"])


def _audit(ctx: DemoContext) -> str:
    from pipeline.audit import audit_store, expected_from_config, render

    report = audit_store(ctx.ws, min_coverage=1.0, expected=expected_from_config(None),
                         config_label="default")
    ctx.results["audit"] = report
    text = render(report, "table")
    if not report.passed:
        raise DemoAuditFailed(text)
    return text


def _train(ctx: DemoContext) -> str:
    from trainer.config import resolve_config
    from trainer.loop import run_training
    from trainer.runs import compare_runs

    runs = []
    for model in DEMO_MODELS:
        print(f"-- training {model}", flush=True)
        run, _ = run_training(resolve_config(model, None, [f"seed={ctx.config.seed}"]),
                              ctx.ws.uri)
        runs.append(run)
    ctx.results["runs"] = [r.location for r in runs]
    table = compare_runs(runs)
    where = "\n".join(f"  {r.location}/report.md" for r in runs)
    return (f"{table}\n\nselected on validation; test metrics at the selected epoch "
            f"(pessimistic ties).\nreports with plots:\n{where}")


FULL_STEPS = [
    *DATA_STEPS,
    DemoStep("features", "extract image/text features of every view (Prefect flow)", _features),
    DemoStep("audit", "audit the feature store (DuckDB)", _audit),
    DemoStep("train", "train and compare " + ", ".join(DEMO_MODELS), _train),
]
