"""Tiny catalogs with PIL-drawn images for feature-pipeline tests (no shared data needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa
from PIL import Image, ImageDraw

from schemas.fs import Workspace
from schemas.io import write_items

WORDS = ("soft cotton jersey top with a round neckline and short sleeves", "trousers in woven "
         "fabric with a high waist and zip fly", "knitted jumper in a wool blend with ribbing",
         "denim shorts with a regular waist and pockets", "sleeveless dress in airy viscose")


def draw_image(path: Path, i: int, size: tuple[int, int] = (48, 64)) -> None:
    """A distinct little picture per i (colours and shapes vary)."""
    img = Image.new("RGB", size, ((37 * i) % 256, (91 * i) % 256, (53 * i + 80) % 256))
    d = ImageDraw.Draw(img)
    d.ellipse((4 + i % 7, 6, size[0] - 6, size[1] // 2 + i % 11), fill=((200 + i) % 256, 40, 90))
    d.rectangle((2, size[1] - 18, 10 + (5 * i) % 30, size[1] - 4),
                fill=(20, (160 + 7 * i) % 256, 30))
    img.save(path, quality=90)


def build_catalog(root: Path, n: int, *, texts: Sequence[str | None] | None = None,
                  uris: Sequence[str | None] | None = None) -> Workspace:
    """A workspace with n items, images/<i>.jpg drawn by PIL, text from WORDS."""
    ws = Workspace.open(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        if not (root / "images" / f"{i}.jpg").exists():
            draw_image(root / "images" / f"{i}.jpg", i)
    texts = list(texts) if texts is not None else [f"{WORDS[i % len(WORDS)]} item {i}"
                                                  for i in range(1, n + 1)]
    uris = list(uris) if uris is not None else [f"images/{i}.jpg" for i in range(1, n + 1)]
    table = pa.table({"item_id": [f"sku-{i:03d}" for i in range(1, n + 1)],
                      "item_idx": list(range(1, n + 1)), "title": [None] * n,
                      "text": pa.array(texts, pa.string()),
                      "image_uri": pa.array(uris, pa.string())})
    write_items(ws, table, {"image_roots": []})
    return ws
