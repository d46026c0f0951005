import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.augment.image import decode_image
from pipeline.encoders import (
    EncoderUnavailable,
    ImageEncoderSpec,
    TextEncoderSpec,
    describe_image_encoder,
    describe_text_encoder,
    load_image_encoder,
    load_text_encoder,
    weights_sha256,
)
from tests.pipeline.tiny_catalog import draw_image

GRACE_HOPPER = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def lite0():
    return load_image_encoder(ImageEncoderSpec(device="cpu"))


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder(TextEncoderSpec(device="cpu"))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    root = tmp_path_factory.mktemp("pics")
    out = []
    for i, size in enumerate([(40, 56), (90, 60), (33, 33), (120, 80), (64, 48)]):
        draw_image(root / f"{i}.jpg", i + 1, size=size)
        out.append(decode_image((root / f"{i}.jpg").read_bytes()))
    return out


def _imagenet_top5(lite0, rgb):
    logits = lite0.model._fc(torch.from_numpy(lite0.forward(lite0.preprocess(rgb)[None])))
    from torchvision.models import ResNet18_Weights

    names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    return [names[i] for i in logits.topk(5).indices[0].tolist()]


def test_lite0_preprocessing_classifies_a_photo_sensibly(lite0):
    """The Lite0 weights with their own (TF reference) preprocessing recognise the uniform."""
    assert lite0.dim == 1280 and lite0.info["preprocessing"]["mean"] == [127.0] * 3
    assert "military uniform" in _imagenet_top5(lite0, decode_image(GRACE_HOPPER.read_bytes()))


@pytest.mark.data
def test_lite0_classifies_hm_products_sensibly(lite0, shared_data):
    import csv

    wanted = {"T-shirt": {"jersey", "sweatshirt"}, "Trousers": {"jean", "suit"},
              "Sunglasses": {"sunglass", "sunglasses"}, "Bra": {"brassiere"}}
    hits = total = 0
    with open(shared_data / "hm" / "articles.csv", newline="") as f:
        for row in csv.DictReader(f):
            kind = row["product_type_name"]
            path = shared_data / "hm" / "images" / f"{row['article_id']}.jpg"
            if kind in wanted and path.exists() and total < 24:
                total += 1
                hits += bool(wanted[kind] & set(_imagenet_top5(lite0, decode_image(
                    path.read_bytes()))))
    assert total == 24 and hits >= 18


def test_image_embedding_does_not_depend_on_its_batch(lite0, pictures):
    batch = torch.stack([lite0.preprocess(p) for p in pictures])
    together = lite0.forward(batch)
    assert together.shape == (5, 1280) and np.isfinite(together).all()
    for i, p in enumerate(pictures):
        alone = lite0.forward(lite0.preprocess(p)[None])[0]
        np.testing.assert_allclose(together[i], alone, rtol=1e-4, atol=1e-5)
    shuffled = lite0.forward(batch[[4, 2, 0, 3, 1]])
    np.testing.assert_allclose(shuffled, together[[4, 2, 0, 3, 1]], rtol=1e-4, atol=1e-5)
    assert not np.allclose(together[0], together[1], atol=1e-3)


def test_text_embedding_does_not_depend_on_padding(minilm):
    short = "red dress"
    long = "a long description of a knitted jumper in a soft wool blend with ribbing " * 3
    alone = minilm.forward([short])[0]
    padded = minilm.forward([short, long, "jeans"])[0]
    np.testing.assert_allclose(padded, alone, rtol=1e-4, atol=1e-5)
    # Without the attention mask the padded copy would differ: the test can fail.
    enc = minilm.tokenizer([short, long], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = minilm.model(input_ids=enc["input_ids"]).last_hidden_state[0]
    unmasked = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
    assert np.abs(unmasked - alone).max() > 1e-2


def test_default_text_encoder_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    texts = ["Soft cotton jersey top.", "Trousers in woven fabric with a high waist and zip fly."]
    st = SentenceTransformer(str(minilm.model_dir), device="cpu")
    np.testing.assert_allclose(minilm.forward(texts), st.encode(texts), rtol=1e-4, atol=1e-5)
    assert minilm.info["pooling"] == "mean" and minilm.info["normalize"] is True


@pytest.mark.parametrize("pooling", ["cls", "pooler"])
def test_other_poolings(pooling, minilm):
    enc = load_text_encoder(TextEncoderSpec(pooling=pooling, normalize=False, device="cpu"))
    out = enc.forward(["red dress", "blue jeans with pockets"])
    assert out.shape == (2, 384) and enc.info["pooling"] == pooling
    assert not np.allclose(out[0], minilm.forward(["red dress"])[0], atol=1e-3)


def test_provenance_names_weights_and_preprocessing(lite0, minilm):
    img = describe_image_encoder(ImageEncoderSpec(device="cpu"))
    assert img["name"] == "efficientnet-lite0" and len(img["weights_sha256"]) == 64
    txt = describe_text_encoder(TextEncoderSpec(device="cpu"))
    assert txt["name"] == "sentence-transformers/all-MiniLM-L6-v2" and txt["dim"] == 384
    assert txt["mlm_head"] is False and txt["dtype"] == "float32"


def test_weights_hash_is_cached_not_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("MACL_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    first = weights_sha256([f])
    stat = f.stat()
    f.write_bytes(b"b" * 1000)  # same size; restore the mtime: the cache key is unchanged
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights_sha256([f]) == first  # served from the cache, not rehashed
    assert (tmp_path / "cache" / "weights-sha256.json").exists()
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert weights_sha256([f]) != first


def test_googlenet_from_a_user_weights_file(tmp_path):
    from torchvision.models import GoogLeNet

    torch.manual_seed(0)
    path = tmp_path / "googlenet.pth"
    torch.save(GoogLeNet(aux_logits=True, init_weights=True).state_dict(), path)
    enc = load_image_encoder(ImageEncoderSpec(name="googlenet", weights=str(path), device="cpu"))
    x = torch.stack([enc.preprocess(np.full((50, 40, 3), v, np.uint8)) for v in (10, 200)])
    out = enc.forward(x)
    assert out.shape == (2, 1024) and enc.info["weights_sha256"] == weights_sha256([path])
    assert enc.info["preprocessing"]["resize"] == [256]
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(EncoderUnavailable, match="not a torchvision GoogLeNet checkpoint"):
        load_image_encoder(ImageEncoderSpec(name="googlenet", weights=str(tmp_path / "other.pth"),
                                            device="cpu"))


def test_paper_models_fail_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(EncoderUnavailable) as img:
        describe_image_encoder(ImageEncoderSpec(name="googlenet", device="cpu"))
    assert "googlenet-1378be20.pth" in str(img.value) and "weights:" in str(img.value)
    with pytest.raises(EncoderUnavailable) as txt:
        describe_text_encoder(TextEncoderSpec(model="bert-base-uncased", device="cpu"))
    assert "bert-base-uncased" in str(txt.value) and "HF_HUB_OFFLINE=0" in str(txt.value)
    with pytest.raises(EncoderUnavailable, match="does not exist"):
        describe_image_encoder(ImageEncoderSpec(name="googlenet", weights=str(tmp_path / "no.pth")))


@pytest.mark.gpu
def test_cuda_bf16_autocast_agrees_with_cpu(pictures):
    cpu = load_image_encoder(ImageEncoderSpec(device="cpu"))
    gpu = load_image_encoder(ImageEncoderSpec(device="cuda"))
    assert gpu.info["dtype"] == "bfloat16"
    x = torch.stack([cpu.preprocess(p) for p in pictures])
    a, b = cpu.forward(x), gpu.forward(x)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.98
    texts = ["red dress", "blue jeans with five pockets"]
    t_cpu = load_text_encoder(TextEncoderSpec(device="cpu")).forward(texts)
    t_gpu = load_text_encoder(TextEncoderSpec(device="cuda")).forward(texts)
    assert ((t_cpu * t_gpu).sum(1)).min() > 0.98  # both L2-normalised
