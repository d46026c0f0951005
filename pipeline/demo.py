"""The ``macl demo`` job as numbered steps over one workspace.

Each step is a plain function of a shared context that returns the text it prints; the data
steps here generate the SYNTHETIC shop, ingest it through the ``table`` adapter (images copied
into the workspace so it can move) and split it. Later stages of the project (features, audit,
training) append their own steps to the same list, so the demo runs the whole product.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from schemas.fs import Workspace

#: the demo's split: the paper's recipe, with the item filter relaxed so the shop's rarely seen
#: items (the ones image and text should help with) stay in the data
DEMO_SPLIT = {
    "protocol": "macl",
    "min_item_count": 2,
    "max_len": 20,
    "order": "time",
    "test_fraction": 0.1,
    "valid_fraction": 0.1,
}
SOURCE_DIR = ("raw", "demo_shop")


@dataclass
class DemoConfig:
    workspace: str = "demo_workspace"
    size: int = 600
    seed: int = 0


@dataclass
class DemoContext:
    """What steps share: the config, the workspace and each step's result by step name."""

    config: DemoConfig
    ws: Workspace
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def source_dir(self) -> Path:
        return Path(self.ws.path(*SOURCE_DIR))


@dataclass(frozen=True)
class DemoStep:
    name: str
    title: str
    run: Callable[[DemoContext], str]


def _generate(ctx: DemoContext) -> str:
    from pipeline.demo_shop import ShopConfig, generate_shop

    if not ctx.ws.is_local:
        raise ValueError("the demo generates its shop on local disk: give a local --workspace")
    summary = generate_shop(ctx.source_dir, ShopConfig(size=ctx.config.size, seed=ctx.config.seed))
    ctx.results["generate"] = summary
    return (
        f"SYNTHETIC shop in {summary.folder}: {summary.items:,} items, {summary.sessions:,} "
        f"sessions, {summary.events:,} events from {summary.intents} latent intents; "
        f"{summary.items_seen_under_5:,} items seen fewer than 5 times"
    )


def _ingest(ctx: DemoContext) -> str:
    from pipeline.ingest import ingest

    summary = ingest(
        "table",
        ctx.source_dir,
        ctx.ws,
        copy_images=True,
        text_columns=["title", "description"],
        info={
            "synthetic": True,
            "generator": "pipeline.demo_shop",
            "seed": ctx.config.seed,
            "size": ctx.config.size,
        },
    )
    ctx.results["ingest"] = summary
    return summary.render()


def _split(ctx: DemoContext) -> str:
    from pipeline.splits import SplitConfig, run_split

    result = run_split(ctx.ws, SplitConfig.from_dict(DEMO_SPLIT))
    ctx.results["split"] = result
    return result.render(ctx.ws.display())


DATA_STEPS = [
    DemoStep("generate", "generate the SYNTHETIC demo shop", _generate),
    DemoStep("ingest", "ingest it (table adapter)", _ingest),
    DemoStep("split", "split it (protocol macl)", _split),
]


def run_demo(
    config: DemoConfig, steps: list[DemoStep] | None = None, out: TextIO | None = None
) -> DemoContext:
    """Run ``steps`` (default: the data steps) in order, printing a numbered header for each."""
    out = out or sys.stdout
    steps = DATA_STEPS if steps is None else steps
    ctx = DemoContext(config, Workspace.open(config.workspace))
    for number, step in enumerate(steps, 1):
        print(f"\n[{number}/{len(steps)}] {step.title}", file=out, flush=True)
        start = time.perf_counter()
        text = step.run(ctx)
        print(text, file=out)
        print(f"({step.name}: {time.perf_counter() - start:.1f} s)", file=out, flush=True)
    return ctx
