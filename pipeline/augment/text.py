"""Text views with nlpaug 1.1.11, WordNet from a project-local NLTK data dir, and a
token-embedding neighbour substitution for models without a masked-LM head.

nlpaug draws its random numbers from the global ``random``/``numpy`` generators; here every call
gets its own generator seeded per (item, view, draw), installed on the augmenter under a lock,
so results never depend on threads or order. No POS-tagger model is available offline, so
``synonym`` runs untagged: candidates come from every part of speech of a word, and function
words are excluded by a fixed stop-list instead of by their tag.
"""
from __future__ import annotations

import math
import random
import re
import sys
import threading
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.augment.views import resolve_params, view_def

#: Words nlpaug must not substitute; without a POS tagger nothing else marks them.
FUNCTION_WORDS = frozenset("""
a an the this that these those my your his her its our their some any each every no
and or but nor so yet for of in on at by to from with without into onto over under about
above below between through during before after up down out off than as if then
is are was were be been being am do does did have has had will would can could should
may might must shall it they them he she we you i me him us who whom which what there here
not very too also just only all both either neither more most other such own same
""".split())

_WORD = re.compile(r"[A-Za-z]+")


def nltk_data_dir() -> Path:
    """Where scripts/install_wordnet.py puts WordNet: <sys.prefix>/nltk_data."""
    return Path(sys.prefix) / "nltk_data"


def wordnet_available() -> bool:
    """True when NLTK can open WordNet without trying to download it."""
    try:
        import nltk

        root = str(nltk_data_dir())
        if root not in nltk.data.path:
            nltk.data.path.append(root)
        nltk.data.find("corpora/wordnet/lexnames")
        from nltk.corpus import wordnet

        return bool(wordnet.synsets("shirt"))
    except (LookupError, OSError, ImportError):
        return False


def text_view_method(name: str, *, wordnet: bool, mlm_head: bool) -> str:
    """Which algorithm a text view runs, given what is installed and what the model has."""
    view_def("text", name)
    return {
        "orig": "identity",
        "swap": "nlpaug.RandomWordAug(swap)",
        "delete": "nlpaug.RandomWordAug(delete)",
        "synonym": "nlpaug.SynonymAug(wordnet, untagged)" if wordnet
        else "embedding_neighbours (fallback: WordNet not installed)",
        "ctx_sub": "nlpaug.ContextualWordEmbsAug(masked-LM)" if mlm_head
        else "embedding_neighbours (the text model has no masked-LM head)",
    }[name]


def describe_text_view(name: str, *, wordnet: bool, mlm_head: bool) -> dict[str, Any]:
    """Provenance of a text view (also part of its cache key)."""
    method = text_view_method(name, wordnet=wordnet, mlm_head=mlm_head)
    info: dict[str, Any] = {"library": f"nlpaug {version('nlpaug')}", "method": method}
    if name == "synonym" and wordnet:
        info["pos_tagging"] = "none: no tagger model offline; synonyms from all parts of speech"
        info["wordnet"] = "WordNet 3.0 (Debian wordnet-base)"
    if method.startswith("embedding_neighbours"):
        info["library"] = "macl"
    return info


class TextView:
    """One text view with resolved parameters; ``apply(text, seed)`` is thread-safe.

    ``encoder`` is the loaded text encoder (a ``pipeline.encoders.TextEncoder``): its tokenizer
    and input embeddings drive the neighbour substitution, its model dir the masked-LM path.
    """

    def __init__(self, name: str, params: dict[str, Any] | None, encoder: Any) -> None:
        self.name = name
        self.params = resolve_params("text", name, params)
        self.wordnet = name == "synonym" and wordnet_available()
        self.info = describe_text_view(name, wordnet=self.wordnet, mlm_head=encoder.has_mlm_head)
        self.method = self.info["method"]
        self._lock = threading.Lock()
        self._apply = self._build(encoder)

    def apply(self, text: str, seed: int) -> str:
        return self._apply(text, seed)

    def _build(self, encoder: Any) -> Callable[[str, int], str]:
        p = self.params
        if self.method == "identity":
            return lambda text, seed: text
        if self.method.startswith("embedding_neighbours"):
            sub = NeighbourSubstitution(encoder.tokenizer, encoder.input_embeddings(),
                                        aug_p=p["aug_p"], aug_min=p["aug_min"],
                                        aug_max=p["aug_max"], top_k=p.get("top_k", 10))
            return sub.apply
        import nlpaug.augmenter.word as naw

        words = {"aug_p": p["aug_p"], "aug_min": p["aug_min"], "aug_max": p["aug_max"]}
        if self.name in ("swap", "delete"):
            aug = naw.RandomWordAug(action=self.name, **words)
        elif self.name == "synonym":
            aug = naw.SynonymAug(aug_src="wordnet", stopwords=sorted(FUNCTION_WORDS), **words)
            aug.model.pos_tag = _untagged
        else:
            aug = naw.ContextualWordEmbsAug(
                model_path=str(encoder.model_dir), model_type=encoder.model_type,
                action="substitute", top_k=p["top_k"], device=encoder.device.type,
                stopwords=sorted(FUNCTION_WORDS), use_custom_api=False, **words)
        return lambda text, seed: self._nlpaug(aug, text, seed)

    def _nlpaug(self, aug: Any, text: str, seed: int) -> str:
        rng = random.Random(seed)
        with self._lock:  # nlpaug keeps its generator on the shared augmenter
            aug.sample = lambda x, num=None: (rng.sample(x, num) if isinstance(x, list)
                                              else rng.randint(1, x - 2))
            aug.prob = rng.random
            out = aug.augment(text)
        return out[0] if isinstance(out, list) else out


def _untagged(tokens: list[str]) -> list[tuple[str, None]]:
    return [(t, None) for t in tokens]


class NeighbourSubstitution:
    """Replace random words by a near neighbour in a model's input token-embedding table.

    Only whole-word, alphabetic vocabulary entries take part; neighbours are ranked by cosine
    similarity and one of the ``top_k`` nearest is drawn. Capitalisation is kept.
    """

    def __init__(self, tokenizer: Any, embeddings: np.ndarray, *, aug_p: float, aug_min: int,
                 aug_max: int, top_k: int) -> None:
        vocab: dict[str, int] = tokenizer.get_vocab()
        special = set(getattr(tokenizer, "all_special_ids", []))
        words = {w: i for w, i in vocab.items()
                 if w.isalpha() and w.isascii() and len(w) > 1 and i not in special}
        self.lowercase = not any(w[0].isupper() for w in words)  # an uncased vocabulary
        self.word_ids = words
        self.cand_ids = np.array(sorted(words.values()), dtype=np.int64)
        self.id_to_word = {i: w for w, i in words.items()}
        table = np.asarray(embeddings, dtype=np.float32)[self.cand_ids]
        self.table = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
        self.row_of = {int(i): r for r, i in enumerate(self.cand_ids)}
        self.aug_p, self.aug_min, self.aug_max, self.top_k = aug_p, aug_min, aug_max, top_k
        self._cache: dict[int, list[str]] = {}
        self._lock = threading.Lock()

    def token(self, word: str) -> int | None:
        """The vocabulary id of a whole word, or None when it is not a candidate."""
        return self.word_ids.get(word.lower() if self.lowercase else word)

    def neighbours(self, word: str) -> list[str]:
        token = self.token(word)
        if token is None:
            return []
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None:
            return hit
        sims = self.table @ self.table[self.row_of[token]]
        order = np.argsort(-sims, kind="stable")
        base = self.id_to_word[token].lower()
        out: list[str] = []
        for r in order:
            cand = self.id_to_word[int(self.cand_ids[r])]
            if cand.lower() == base or cand.lower() in FUNCTION_WORDS:
                continue
            out.append(cand)
            if len(out) == self.top_k:
                break
        with self._lock:
            self._cache[token] = out
        return out

    def apply(self, text: str, seed: int) -> str:
        rng = random.Random(seed)
        spans = [m for m in _WORD.finditer(text)]
        eligible = [m for m in spans if m.group().lower() not in FUNCTION_WORDS
                    and self.token(m.group()) is not None]
        if not eligible:
            return text
        count = min(max(math.ceil(self.aug_p * len(spans)), self.aug_min), self.aug_max,
                    len(eligible))
        chosen = sorted(rng.sample(eligible, count), key=lambda m: m.start())
        pieces, last = [], 0
        for m in chosen:
            word = m.group()
            new = rng.choice(self.neighbours(word))
            pieces += [text[last:m.start()], _match_case(word, new)]
            last = m.end()
        pieces.append(text[last:])
        return "".join(pieces)


def _match_case(original: str, new: str) -> str:
    if original.isupper() and len(original) > 1:
        return new.upper()
    if original[:1].isupper():
        return new[:1].upper() + new[1:]
    return new
