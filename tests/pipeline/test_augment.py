import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.augment import IMAGE_VIEWS, TEXT_VIEWS, derive_seed, resolve_params
from pipeline.augment.image import ImageDecodeError, ImageView, decode_image
from pipeline.augment.text import (
    FUNCTION_WORDS,
    NeighbourSubstitution,
    TextView,
    describe_text_view,
    wordnet_available,
)
from tests.pipeline.tiny_catalog import draw_image

TEXT = "Soft cotton jersey top with a round neckline, short sleeves and a relaxed fit."


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "a.jpg"
    draw_image(path, 3, size=(40, 56))
    return decode_image(path.read_bytes())


@pytest.fixture(scope="module")
def text_encoder():
    from pipeline.encoders import TextEncoderSpec, load_text_encoder

    return load_text_encoder(TextEncoderSpec(device="cpu"))


def test_derive_seed_is_owned_by_item_view_and_draw():
    base = derive_seed(0, "image", "blur", "sku-1", 0)
    assert base == derive_seed(0, "image", "blur", "sku-1", 0)
    others = {derive_seed(1, "image", "blur", "sku-1", 0),
              derive_seed(0, "text", "blur", "sku-1", 0),
              derive_seed(0, "image", "noise", "sku-1", 0),
              derive_seed(0, "image", "blur", "sku-2", 0),
              derive_seed(0, "image", "blur", "sku-1", 1)}
    assert base not in others and len(others) == 5
    assert 0 <= base < 2 ** 63


def test_unknown_view_parameters_are_refused():
    with pytest.raises(ValueError, match="has no parameter"):
        resolve_params("image", "blur", {"radius": 3})
    with pytest.raises(ValueError, match="unknown text view"):
        resolve_params("text", "translate", {})
    assert resolve_params("image", "noise", {"std_range": [0.1, 0.2]}) == {"std_range": [0.1, 0.2]}


@pytest.mark.parametrize("name", sorted(IMAGE_VIEWS))
def test_image_views_are_pure_functions_of_the_seed(picture, name):
    view = ImageView(name)
    a, b = view.apply(picture, 11), view.apply(picture, 11)
    assert a.shape == picture.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    if IMAGE_VIEWS[name].stochastic:
        assert not np.array_equal(a, view.apply(picture, 12))
        assert not np.array_equal(a, picture)
    elif name == "hflip":
        assert np.array_equal(a, picture[:, ::-1])
    else:
        assert a is picture


def test_image_views_do_not_depend_on_thread_or_order(picture):
    view = ImageView("jitter")
    seeds = list(range(24))
    serial = [view.apply(picture, s) for s in seeds]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda s: view.apply(picture, s), reversed(seeds)))[::-1]
    assert all(np.array_equal(x, y) for x, y in zip(serial, threaded))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_decode_flattens_alpha_and_grey_to_rgb():
    rgba = Image.new("RGBA", (4, 3), (255, 0, 0, 0))
    out = decode_image(_png(rgba))
    assert out.shape == (3, 4, 3) and (out == 255).all()  # transparent -> white, not black
    grey = decode_image(_png(Image.new("L", (5, 2), 7)))
    assert grey.shape == (2, 5, 3) and (grey == 7).all()


@pytest.mark.parametrize("data,needle", [
    (b"this is text, not a picture", "not an image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "image"),
])
def test_decode_refuses_non_images(data, needle):
    with pytest.raises(ImageDecodeError, match=needle):
        decode_image(data)


def test_decode_refuses_truncated_jpeg(tmp_path):
    draw_image(tmp_path / "x.jpg", 5, size=(120, 160))
    data = (tmp_path / "x.jpg").read_bytes()
    with pytest.raises(ImageDecodeError, match="truncated|corrupt|cannot open"):
        decode_image(data[: len(data) // 2])


def test_decode_refuses_decompression_bombs_before_decoding():
    big = _png(Image.new("1", (3000, 3000)))  # a few KB that would expand to 9 Mpx
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(big, max_pixels=1_000_000)


@pytest.mark.parametrize("name", ["swap", "delete"])
def test_random_word_views_are_seeded_per_call(name, text_encoder):
    view = TextView(name, None, text_encoder)
    a = view.apply(TEXT, 5)
    assert a == view.apply(TEXT, 5) and a != TEXT
    assert len({view.apply(TEXT, s) for s in range(8)}) > 1
    words = TEXT.split()
    if name == "swap":
        assert sorted(a.replace(",", "").replace(".", "").split()) == \
            sorted(TEXT.replace(",", "").replace(".", "").split())
    else:
        assert len(a.split()) < len(words)


def test_text_views_do_not_depend_on_threads(text_encoder):
    view = TextView("swap", None, text_encoder)
    serial = [view.apply(TEXT, s) for s in range(20)]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda s: view.apply(TEXT, s), range(20))) == serial


def test_synonym_uses_wordnet_installed_by_setup(text_encoder):
    assert wordnet_available(), "scripts/install_wordnet.py (run by make setup) installs WordNet"
    view = TextView("synonym", {"aug_p": 0.3}, text_encoder)
    assert view.method == "nlpaug.SynonymAug(wordnet, untagged)"
    assert "pos_tagging" in view.info
    from nltk.corpus import wordnet

    out = view.apply("jersey", 3)
    assert out != "jersey" and out == view.apply("jersey", 3)
    lemmas = {lemma.name().replace("_", " ").replace("-", " ").lower()
              for synset in wordnet.synsets("jersey") for lemma in synset.lemmas()}
    assert out.lower() in lemmas  # a WordNet synonym, from any part of speech (untagged)
    untouched = view.apply("the and of with", 1)
    assert untouched == "the and of with"  # function words are never substituted


def test_synonym_falls_back_and_says_so_without_wordnet(monkeypatch, text_encoder):
    import pipeline.augment.text as text_mod

    monkeypatch.setattr(text_mod, "wordnet_available", lambda: False)
    view = text_mod.TextView("synonym", None, text_encoder)
    assert view.method.startswith("embedding_neighbours (fallback: WordNet not installed")
    assert view.apply(TEXT, 1) != TEXT


def test_ctx_sub_without_mlm_head_uses_embedding_neighbours(text_encoder):
    assert not text_encoder.has_mlm_head
    view = TextView("ctx_sub", {"aug_p": 0.3}, text_encoder)
    assert view.method.startswith("embedding_neighbours")
    out = view.apply(TEXT, 7)
    assert out == view.apply(TEXT, 7) and out != TEXT
    vocab = text_encoder.tokenizer.get_vocab()
    changed = [(a, b) for a, b in zip(TEXT.split(), out.split()) if a != b]
    assert changed and all(b.strip(",.").lower() in vocab for _, b in changed)
    assert all(a.strip(",.").lower() not in FUNCTION_WORDS for a, _ in changed)


def test_neighbours_are_near_in_the_embedding_table():
    class Tok:
        all_special_ids = [0]

        def get_vocab(self):
            return {"[PAD]": 0, "red": 1, "crimson": 2, "blue": 3, "azure": 4, "car": 5}

    table = np.array([[0, 0], [1, 0.05], [1, 0.1], [0, 1], [0.05, 1], [-1, -1]], dtype=np.float32)
    sub = NeighbourSubstitution(Tok(), table, aug_p=1.0, aug_min=1, aug_max=5, top_k=1)
    assert sub.neighbours("red") == ["crimson"] and sub.neighbours("Azure") == ["blue"]
    # "car" goes to its nearest neighbour, blue
    assert sub.apply("Red car, BLUE sky!", 0) == "Crimson blue, AZURE sky!"


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcdef XYZ,.!-'\n")), max_size=60),
       st.integers(0, 2 ** 32))
def test_neighbour_substitution_keeps_layout(text, seed):
    class Tok:
        all_special_ids = []

        def get_vocab(self):
            return {w: i for i, w in enumerate(["ab", "cd", "ef", "abc", "fed", "bead"])}

    table = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    sub = NeighbourSubstitution(Tok(), table, aug_p=0.5, aug_min=1, aug_max=3, top_k=2)
    out = sub.apply(text, seed)
    assert out == sub.apply(text, seed)
    strip = lambda s: "".join(c for c in s if not c.isalpha())  # noqa: E731
    assert strip(out) == strip(text)  # only words change; spacing and punctuation stay


def test_ctx_sub_runs_the_masked_lm_when_the_model_has_a_head(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from pipeline.encoders import TextEncoderSpec, load_text_encoder
    from pipeline.encoders.text import has_mlm_head, resolve_text_model

    tok = AutoTokenizer.from_pretrained(resolve_text_model(None))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32)
    BertForMaskedLM(cfg).save_pretrained(tmp_path / "mlm")
    tok.save_pretrained(tmp_path / "mlm")
    assert has_mlm_head(tmp_path / "mlm") and not has_mlm_head(resolve_text_model(None))
    encoder = load_text_encoder(TextEncoderSpec(model=str(tmp_path / "mlm"), device="cpu"))
    view = TextView("ctx_sub", {"aug_p": 0.3, "top_k": 5}, encoder)
    assert view.method == "nlpaug.ContextualWordEmbsAug(masked-LM)"
    assert view.info == describe_text_view("ctx_sub", wordnet=False, mlm_head=True)
    out = view.apply(TEXT, 4)
    assert isinstance(out, str) and out == view.apply(TEXT, 4)  # random weights: junk, but seeded


def test_every_text_view_is_listed():
    assert sorted(TEXT_VIEWS) == ["ctx_sub", "delete", "orig", "swap", "synonym"]
    assert sorted(IMAGE_VIEWS) == ["blur", "crop", "hflip", "jitter", "noise", "orig"]
