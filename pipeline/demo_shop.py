"""A SYNTHETIC demo shop, deterministic by seed: rendered product images, noisy product text,
and sessions from a latent-intent model.

Why it looks like this: the README demo cannot use real data, and a demo of multimodal session
recommendation only means something when the images and texts carry signal the IDs lack. So
every item is drawn from attributes (product type -> silhouette, colour, pattern, background)
that both its picture and its title/description express (with noise: synonyms, omissions,
jitter), and shoppers follow latent intents over those same attributes. Popularity is Zipf-like,
so many items are rarely seen; what they look like and how they are described is then the best
clue to which sessions they belong in.

The output is a raw source folder in the ``table`` ingest layout (events.csv, items.csv,
images/), plus attributes.csv (the ground truth, not ingested) and README.txt, so the demo goes
through the real ingest path. Everything is labelled SYNTHETIC.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: product type -> (synonyms used in titles, materials, base price)
PRODUCTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], float]] = {
    "mug": (("mug", "cup", "coffee mug"), ("ceramic", "stoneware", "porcelain"), 12.0),
    "t-shirt": (("t-shirt", "tee", "shirt"), ("cotton", "organic cotton", "linen blend"), 19.0),
    "lamp": (("lamp", "table lamp", "desk light"), ("metal", "brass", "glass"), 45.0),
    "bag": (("bag", "tote", "handbag"), ("canvas", "leather", "nylon"), 35.0),
    "sneaker": (("sneaker", "trainer", "running shoe"), ("mesh", "suede", "leather"), 60.0),
    "vase": (("vase", "flower vase", "bud vase"), ("ceramic", "glass", "terracotta"), 25.0),
    "hat": (("hat", "cap", "bucket hat"), ("wool", "cotton", "straw"), 18.0),
    "bottle": (("bottle", "water bottle", "flask"), ("steel", "glass", "plastic-free"), 22.0),
    "clock": (("clock", "wall clock", "timepiece"), ("wood", "metal", "plastic"), 30.0),
    "pillow": (("pillow", "cushion", "throw pillow"), ("velvet", "cotton", "linen"), 28.0),
}
#: colour -> (RGB, synonyms)
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((200, 40, 40), ("red", "crimson", "cherry")),
    "orange": ((235, 130, 30), ("orange", "tangerine", "amber")),
    "yellow": ((235, 205, 40), ("yellow", "mustard", "lemon")),
    "green": ((50, 150, 70), ("green", "forest green", "emerald")),
    "teal": ((30, 140, 140), ("teal", "petrol", "turquoise")),
    "blue": ((40, 80, 200), ("blue", "cobalt", "navy")),
    "purple": ((120, 60, 160), ("purple", "violet", "plum")),
    "pink": ((230, 120, 170), ("pink", "rose", "blush")),
    "brown": ((120, 80, 45), ("brown", "chocolate", "tan")),
    "black": ((35, 35, 35), ("black", "charcoal", "jet black")),
}
PATTERNS: dict[str, tuple[str, ...]] = {
    "solid": ("plain", "solid", "classic"),
    "stripes": ("striped", "pinstripe", "with stripes"),
    "dots": ("polka-dot", "dotted", "spotted"),
    "checks": ("checked", "gingham", "check-pattern"),
    "zigzag": ("zigzag", "chevron", "wavy"),
}
BACKGROUNDS = {
    "white": (250, 250, 250),
    "grey": (215, 215, 218),
    "beige": (238, 228, 205),
    "sky": (210, 228, 245),
}
FILLERS = (
    "Ships in recycled packaging.",
    "A customer favourite.",
    "Limited run.",
    "Easy to care for.",
    "Makes a thoughtful gift.",
    "Designed in our studio.",
    "Part of the new season range.",
    "",
)
BRAND = "SYNTHETIC Demo Shop"


@dataclass(frozen=True)
class ShopConfig:
    """Size and shape of the synthetic shop; the same config and seed give the same bytes."""

    size: int = 600
    seed: int = 0
    sessions_per_item: float = 6.0
    days: int = 60
    image_size: int = 128
    zipf_exponent: float = 1.05

    def __post_init__(self) -> None:
        if self.size < 20:
            raise ValueError(f"size must be at least 20 items, got {self.size}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 px, got {self.image_size}")


@dataclass
class ShopSummary:
    folder: str
    items: int
    sessions: int
    events: int
    intents: int
    items_seen_under_5: int


def _attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "product": rng.choice(list(PRODUCTS), size=n),
        "colour": rng.choice(list(COLOURS), size=n),
        "pattern": rng.choice(list(PATTERNS), size=n, p=[0.3, 0.2, 0.2, 0.15, 0.15]),
        "background": rng.choice(list(BACKGROUNDS), size=n),
    }


def _texts(
    rng: np.random.Generator, attrs: dict[str, np.ndarray], i: int
) -> tuple[str, str, float]:
    product, colour, pattern = attrs["product"][i], attrs["colour"][i], attrs["pattern"][i]
    names, materials, base = PRODUCTS[product]
    noun = names[rng.integers(len(names))]
    colour_word = COLOURS[colour][1][rng.integers(3)]
    pattern_word = PATTERNS[pattern][rng.integers(3)]
    material = materials[rng.integers(len(materials))]
    words = [
        colour_word if rng.random() > 0.1 else None,
        pattern_word if pattern != "solid" or rng.random() < 0.3 else None,
        noun,
    ]
    if pattern_word.startswith("with "):
        words = [words[0], noun, pattern_word]
    title = " ".join(w for w in words if w).capitalize()
    sentences = [
        f"A {pattern_word} {material} {noun} in {colour_word}."
        if rng.random() > 0.15
        else f"A {material} {noun}.",
        FILLERS[rng.integers(len(FILLERS))],
        "SYNTHETIC demo item.",
    ]
    price = round(base * float(rng.lognormal(0.0, 0.25)), 2)
    return title, " ".join(s for s in sentences if s), price


def _shape_mask(product: str, size: int, rng: np.random.Generator) -> Image.Image:
    """The product's silhouette, jittered in scale and position."""
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    s = size * float(rng.uniform(0.78, 0.95))
    ox = (size - s) / 2 + float(rng.uniform(-0.05, 0.05)) * size
    oy = (size - s) / 2 + float(rng.uniform(-0.05, 0.05)) * size

    def P(x: float, y: float) -> tuple[float, float]:
        return ox + x * s, oy + y * s

    def box(x0, y0, x1, y1):
        return [P(x0, y0), P(x1, y1)]

    if product == "mug":
        d.rectangle(box(0.2, 0.25, 0.7, 0.85), fill=255)
        d.ellipse(box(0.6, 0.38, 0.88, 0.7), fill=255)
        d.ellipse(box(0.68, 0.46, 0.8, 0.62), fill=0)
    elif product == "t-shirt":
        d.polygon(
            [
                P(0.3, 0.15),
                P(0.42, 0.2),
                P(0.58, 0.2),
                P(0.7, 0.15),
                P(0.92, 0.32),
                P(0.8, 0.45),
                P(0.72, 0.4),
                P(0.72, 0.88),
                P(0.28, 0.88),
                P(0.28, 0.4),
                P(0.2, 0.45),
                P(0.08, 0.32),
            ],
            fill=255,
        )
    elif product == "lamp":
        d.polygon([P(0.3, 0.12), P(0.7, 0.12), P(0.85, 0.45), P(0.15, 0.45)], fill=255)
        d.rectangle(box(0.47, 0.45, 0.53, 0.82), fill=255)
        d.ellipse(box(0.28, 0.78, 0.72, 0.9), fill=255)
    elif product == "bag":
        d.rounded_rectangle(box(0.15, 0.38, 0.85, 0.88), radius=s * 0.06, fill=255)
        d.arc(box(0.3, 0.12, 0.7, 0.55), 180, 360, fill=255, width=max(2, int(s * 0.06)))
    elif product == "sneaker":
        d.polygon(
            [
                P(0.08, 0.55),
                P(0.35, 0.5),
                P(0.5, 0.35),
                P(0.62, 0.38),
                P(0.7, 0.5),
                P(0.92, 0.6),
                P(0.92, 0.75),
                P(0.08, 0.75),
            ],
            fill=255,
        )
    elif product == "vase":
        d.polygon(
            [
                P(0.42, 0.1),
                P(0.58, 0.1),
                P(0.56, 0.25),
                P(0.75, 0.45),
                P(0.72, 0.75),
                P(0.6, 0.9),
                P(0.4, 0.9),
                P(0.28, 0.75),
                P(0.25, 0.45),
                P(0.44, 0.25),
            ],
            fill=255,
        )
    elif product == "hat":
        d.ellipse(box(0.08, 0.55, 0.92, 0.78), fill=255)
        d.chord(box(0.25, 0.2, 0.75, 0.95), 180, 360, fill=255)
    elif product == "bottle":
        d.rounded_rectangle(box(0.32, 0.35, 0.68, 0.92), radius=s * 0.05, fill=255)
        d.polygon([P(0.32, 0.38), P(0.43, 0.22), P(0.57, 0.22), P(0.68, 0.38)], fill=255)
        d.rectangle(box(0.43, 0.08, 0.57, 0.24), fill=255)
    elif product == "clock":
        d.ellipse(box(0.12, 0.12, 0.88, 0.88), fill=255)
    else:  # pillow
        d.polygon(
            [
                P(0.1, 0.15),
                P(0.5, 0.22),
                P(0.9, 0.15),
                P(0.83, 0.5),
                P(0.9, 0.85),
                P(0.5, 0.78),
                P(0.1, 0.85),
                P(0.17, 0.5),
            ],
            fill=255,
        )
    return mask


def _pattern_fill(
    pattern: str, rgb: tuple[int, int, int], size: int, rng: np.random.Generator
) -> Image.Image:
    base = tuple(int(np.clip(c + rng.integers(-14, 15), 0, 255)) for c in rgb)
    light = tuple(int(c + (255 - c) * 0.55) for c in base)
    img = Image.new("RGB", (size, size), base)
    d = ImageDraw.Draw(img)
    step = int(size * float(rng.uniform(0.09, 0.14)))
    if pattern == "stripes":
        for x in range(-size, 2 * size, step * 2):
            d.polygon(
                [(x, 0), (x + step, 0), (x + step + size // 3, size), (x + size // 3, size)],
                fill=light,
            )
    elif pattern == "dots":
        r = max(2, step // 3)
        for y in range(step // 2, size, step):
            for x in range(step // 2 + (y // step % 2) * step // 2, size, step):
                d.ellipse([x - r, y - r, x + r, y + r], fill=light)
    elif pattern == "checks":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if (x // step + y // step) % 2 == 0:
                    d.rectangle([x, y, x + step - 1, y + step - 1], fill=light)
    elif pattern == "zigzag":
        for y in range(0, size + step, step):
            pts = [
                (x, y + (step // 2 if (x // step) % 2 else 0)) for x in range(0, size + step, step)
            ]
            d.line(pts, fill=light, width=max(2, step // 3))
    return img


def render_image(attrs: dict[str, np.ndarray], i: int, size: int, seed: int) -> bytes:
    """One item's PNG: silhouette by product type, filled with its colour and pattern."""
    rng = np.random.default_rng([seed, 7, i])
    bg = tuple(
        int(np.clip(c + rng.integers(-6, 7), 0, 255)) for c in BACKGROUNDS[attrs["background"][i]]
    )
    img = Image.new("RGB", (size, size), bg)
    mask = _shape_mask(attrs["product"][i], size, rng)
    fill = _pattern_fill(attrs["pattern"][i], COLOURS[attrs["colour"][i]][0], size, rng)
    img.paste(fill, (0, 0), mask)
    if attrs["product"][i] == "clock":
        d = ImageDraw.Draw(img)
        c = size / 2
        d.line([(c, c), (c, c - size * 0.28)], fill=(20, 20, 20), width=max(2, size // 40))
        d.line([(c, c), (c + size * 0.2, c)], fill=(20, 20, 20), width=max(2, size // 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _sessions(rng: np.random.Generator, attrs: dict[str, np.ndarray], config: ShopConfig):
    """Latent-intent shoppers: an intent favours product types, colours and a pattern."""
    n = config.size
    products, colours, patterns = list(PRODUCTS), list(COLOURS), list(PATTERNS)
    n_intents = max(6, n // 25)
    pop = 1.0 / np.arange(1, n + 1) ** config.zipf_exponent
    pop = pop[rng.permutation(n)]
    prod_idx = np.array([products.index(p) for p in attrs["product"]])
    col_idx = np.array([colours.index(c) for c in attrs["colour"]])
    pat_idx = np.array([patterns.index(p) for p in attrs["pattern"]])
    weights = np.empty((n_intents, n))
    for k in range(n_intents):
        want_p = rng.choice(len(products), size=rng.integers(1, 3), replace=False)
        want_c = rng.choice(len(colours), size=2, replace=False)
        want_pat = rng.integers(len(patterns))
        score = (
            2.2 * np.isin(prod_idx, want_p)
            + 1.4 * np.isin(col_idx, want_c)
            + 0.7 * (pat_idx == want_pat)
        )
        weights[k] = pop**0.7 * np.exp(score)
    intent_cdf = np.cumsum(weights, axis=1)
    intent_cdf /= intent_cdf[:, -1:]
    same_type = np.zeros((n_intents, len(products), n))
    for c in range(len(products)):
        w = weights * (prod_idx == c)
        same_type[:, c] = np.cumsum(w, axis=1) / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    pop_cdf = np.cumsum(pop) / pop.sum()
    intent_share = rng.dirichlet(np.full(n_intents, 2.0))

    n_sessions = int(round(n * config.sessions_per_item))
    n_users = max(10, n // 2)
    user_pop = 1.0 / np.arange(1, n_users + 1) ** 0.8
    users = rng.choice(n_users, size=n_sessions, p=user_pop / user_pop.sum())
    starts = np.sort(rng.uniform(0, config.days * 86_400, size=n_sessions))
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    rows = []
    for s in range(n_sessions):
        k = rng.choice(n_intents, p=intent_share)
        length = 1 + rng.poisson(3.0)
        t = starts[s]
        prev = -1
        for _ in range(length):
            r = rng.random()
            if prev >= 0 and r < 0.02:
                item = prev  # an occasional repeat click, collapsed at split time
            elif prev >= 0 and r < 0.35:
                item = int(np.searchsorted(same_type[k, prod_idx[prev]], rng.random()))
            elif r < 0.92:
                item = int(np.searchsorted(intent_cdf[k], rng.random()))
            else:
                item = int(np.searchsorted(pop_cdf, rng.random()))
            item = min(item, n - 1)
            when = t0 + dt.timedelta(seconds=float(round(t)))
            rows.append(
                (
                    f"s{s + 1:06d}",
                    f"u{users[s] + 1:05d}",
                    _item_id(item),
                    when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                )
            )
            t += float(rng.uniform(20, 240))
            prev = item
    return rows, n_intents, n_sessions


def _item_id(i: int) -> str:
    return f"demo-{i + 1:05d}"


def generate_shop(
    folder: str | Path, config: ShopConfig = ShopConfig(), progress: bool = True
) -> ShopSummary:
    """Write the shop's raw files into ``folder`` (created; existing files are overwritten)."""
    from tqdm import tqdm

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    attrs = _attributes(rng, config.size)
    text_rng = np.random.default_rng([config.seed, 3])
    items = []
    for i in range(config.size):
        title, description, price = _texts(text_rng, attrs, i)
        items.append(
            (
                _item_id(i),
                title,
                description,
                attrs["product"][i],
                BRAND,
                f"{price:.2f}",
                f"images/{_item_id(i)}.png",
            )
        )
    for i in tqdm(
        range(config.size), desc="render images", unit="img", disable=not progress, leave=False
    ):
        path = folder / "images" / f"{_item_id(i)}.png"
        data = render_image(attrs, i, config.image_size, config.seed)
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
    rows, n_intents, n_sessions = _sessions(np.random.default_rng([config.seed, 11]), attrs, config)

    _write_csv(
        folder / "items.csv",
        ["item_id", "title", "description", "category", "brand", "price", "image"],
        items,
    )
    _write_csv(folder / "events.csv", ["session_id", "user_id", "item_id", "timestamp"], rows)
    _write_csv(
        folder / "attributes.csv",
        ["item_id", "product", "colour", "pattern", "background"],
        [
            (
                _item_id(i),
                attrs["product"][i],
                attrs["colour"][i],
                attrs["pattern"][i],
                attrs["background"][i],
            )
            for i in range(config.size)
        ],
    )
    counts = np.bincount([int(r[2][5:]) - 1 for r in rows], minlength=config.size)
    (folder / "README.txt").write_text(
        "SYNTHETIC DATA - generated by `macl demo`; not real products, shoppers or sales.\n"
        f"config: {json.dumps(asdict(config), sort_keys=True)}\n"
        "events.csv + items.csv + images/ are the `table` ingest layout; attributes.csv is the\n"
        "generator's ground truth (product type, colour, pattern, background), not ingested.\n",
        encoding="utf-8",
    )
    return ShopSummary(
        str(folder), config.size, n_sessions, len(rows), n_intents, int((counts < 5).sum())
    )


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
