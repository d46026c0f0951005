"""The model contract, fusion masks, gradients, and what each variant's loss is made of."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.config import resolve_config
from trainer.data import make_batch
from trainer.models.augment import augment_ids
from trainer.models.contrast import info_nce, paper_code_contrast
from trainer.runtime import load_data, make_model
from tests.trainer.synthetic import TINY


def build(shop, model, extra=()):
    cfg = resolve_config(model, None, TINY + list(extra))
    torch.manual_seed(0)
    data = load_data(cfg, shop)
    return cfg, data, make_model(cfg, data, torch.device("cpu"))


def batch_of(data, n=32):
    return make_batch(data.train, np.arange(n), 8)


def loss_with_seed(model, batch, seed=1):
    torch.manual_seed(seed)
    return model.loss(batch)


def test_gradients_reach_the_adaptive_mlps_and_the_gates(shop):
    _, data, model = build(shop, "macl", ["arch.dropout=0.0"])
    loss_with_seed(model, batch_of(data)).total.backward()
    for name in ("item_weights.net.0.weight", "sess_weights.net.0.weight",
                 "items.gate.image.weight", "items.gate.text.weight",
                 "items.proj.image.weight", "items.proj.text.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_gradients_reach_paper_code_gates_and_weights(shop):
    _, data, model = build(shop, "macl", ["arch.paper_code=true", "arch.dropout=0.0",
                                         "arch.attn_dropout=0.0"])
    loss_with_seed(model, batch_of(data)).total.backward()
    params = dict(model.named_parameters())
    for name in ("items.gate_t.image.weight", "items.gate_v.text.weight",
                 "item_weights.net.1.weight", "sess_weights.net.1.weight"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name


@pytest.mark.parametrize("extra", [[], ["arch.paper_code=true"]])
def test_masked_features_change_nothing_downstream(shop, extra):
    _, data, model = build(shop, "macl", extra)
    batch = batch_of(data)
    before = loss_with_seed(model, batch)
    fused_before = model.items.table().detach().clone()
    for m in ("image", "text"):  # scribble over every row that has no ok feature
        values, mask = data.bank.values[m], data.bank.masks[m]
        values[~mask] = torch.randn_like(values[~mask].float()).to(values.dtype) * 100
    after = loss_with_seed(model, batch)
    assert torch.equal(model.items.table(), fused_before)
    assert torch.equal(before.total, after.total)
    # and the check can fail: an ok row does change the outcome
    values, mask = data.bank.values["text"], data.bank.masks["text"]
    values[0, mask[0].nonzero()[0, 0]] += 5
    assert not torch.equal(loss_with_seed(model, batch).total, before.total)


def test_items_without_a_modality_get_the_same_fused_vector_as_with_it_removed(shop):
    _, data, model = build(shop, "sasrec_mm")
    text_mask = data.bank.masks["text"][0]
    missing = torch.nonzero(~text_mask[1:]).squeeze(1) + 1
    fused = model.items.fused(missing)
    e_id = model.items.id_emb(missing)
    proj = model.items.proj["image"](data.bank.values["image"][0, missing].float())
    gate = torch.sigmoid(model.items.gate["image"](torch.cat([e_id, proj], -1)))
    img_ok = data.bank.masks["image"][0, missing].unsqueeze(-1).float()
    assert torch.allclose(fused, e_id + img_ok * gate * proj, atol=1e-6)


def test_each_variant_loss_has_its_parts(shop):
    parts = {}
    for model_name in ("sasrec", "sasrec_mm", "macl", "macl_noadp", "macl_com"):
        cfg, data, model = build(shop, model_name)
        out = loss_with_seed(model, batch_of(data))
        parts[model_name] = set(out.parts)
        expected = out.parts["rec"] + cfg.loss.alpha * out.parts.get("item", 0) + \
            cfg.loss.beta * out.parts.get("sess", 0)
        assert torch.allclose(out.total.detach(), torch.as_tensor(expected), atol=1e-6)
        if model_name == "macl_noadp":
            assert all(torch.equal(w, torch.ones_like(w)) for w in out.weights.values())
        if model_name == "macl":
            assert out.weights["item"].std() > 0  # read from the MLP, not constant
            assert out.weights["item"].mean() == pytest.approx(1.0, abs=1e-5)
    assert parts == {"sasrec": {"rec"}, "sasrec_mm": {"rec"}, "macl": {"rec", "item", "sess"},
                     "macl_noadp": {"rec", "item", "sess"}, "macl_com": {"rec", "sess"}}


def test_fusion_changes_the_item_table_and_sasrec_ignores_features(shop):
    _, _, plain = build(shop, "sasrec")
    _, _, fused = build(shop, "sasrec_mm")
    assert not hasattr(plain.items, "gate") or len(plain.items.gate) == 0
    assert torch.equal(plain.items.table(), plain.items.id_emb.weight[:-1])
    assert not torch.allclose(fused.items.table(), fused.items.id_emb.weight[:-1])


@pytest.mark.parametrize("model_name", ["sasrec", "macl", "pop", "spop", "sknn"])
def test_score_all_covers_the_catalog_with_padding_excluded(shop, model_name):
    _, data, model = build(shop, model_name)
    with model.scoring():
        scores = model.score_all(batch_of(data, 5))
    assert scores.shape == (5, data.catalog.n_items + 1)
    assert torch.isinf(scores[:, 0]).all() and (scores[:, 0] < 0).all()
    assert torch.isfinite(scores[:, 1:]).all()


def test_rec_options_differ_as_intended(shop):
    losses = {}
    for extra in ([], ["loss.rec_positions=all"], ["loss.rec_softmax=sampled",
                                                   "loss.sampled_negatives=5"]):
        _, data, model = build(shop, "sasrec", extra)
        batch = make_batch(data.train, np.arange(32), 8, all_positions=True)
        losses[tuple(extra)] = float(loss_with_seed(model, batch).total.detach())
    full = losses[()]
    assert full == pytest.approx(math.log(40), rel=0.05)  # untrained: ~uniform over 40 items
    assert losses[("loss.rec_softmax=sampled", "loss.sampled_negatives=5")] < full - 1.0
    assert len(set(losses.values())) == 3


def test_info_nce_and_paper_code_loss_hand_computed():
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[2.0, 0.0]])
    n = torch.tensor([[[0.0, 3.0]]])
    w = torch.ones(1)
    # -log(e^1 / (e^1 + e^0)) with tau = 1
    assert float(info_nce(a, p, n, 1.0, w)) == pytest.approx(math.log(1 + math.exp(-1)))
    # tau = 0.5: -log(e^2 / (e^2 + e^0))
    assert float(info_nce(a, p, n, 0.5, w)) == pytest.approx(math.log(1 + math.exp(-2)))
    # the official form: log10(sum_j exp(cos(a, n_j))) - w * log10(exp(cos(a, p)))
    assert float(paper_code_contrast(a, p, n, w)) == pytest.approx(0 - 1 / math.log(10))
    two_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    two_p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    neg = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    weights = torch.tensor([0.25, 0.75])  # on the positive term only
    want = (1 + 1) / math.log(10) - (0.25 * 1 + 0.75 * 0) / math.log(10)
    assert float(paper_code_contrast(two_a, two_p, neg, weights)) == pytest.approx(want)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(1, 50), min_size=1, max_size=10), min_size=1, max_size=8),
       st.integers(0, 10_000))
def test_id_augmentations_crop_mask_or_reorder(seqs, seed):
    L = 10
    items = torch.tensor([[0] * (L - len(s)) + s for s in seqs])
    torch.manual_seed(seed)
    out = augment_ids(items, 99, crop=0.6, mask=0.3, reorder=0.3)
    for row, src in zip(out.tolist(), seqs):
        valid = [x for x in row if x]
        assert row[:L - len(valid)] == [0] * (L - len(valid))  # still left-padded
        is_crop = len(valid) < len(src) and any(src[i:i + len(valid)] == valid
                                                for i in range(len(src)))
        is_mask = len(valid) == len(src) and all(v in (s, 99) for v, s in zip(valid, src))
        is_reorder = sorted(valid) == sorted(src) and len(valid) == len(src)
        is_full_crop = valid == src  # crop of a 1-item session keeps it
        assert is_crop or is_mask or is_reorder or is_full_crop


def test_byte_dropout_keeps_the_expectation_and_masks_the_gradient():
    from trainer.models.ops import dropout

    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    y = dropout(x, 0.2, True)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(1 - 51 / 256, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * keep)/dx = keep
    assert torch.equal(dropout(x, 0.2, False), x)


@pytest.mark.parametrize("extra", [["loss.negatives=hard", "loss.hard_pool=16"],
                                   ["loss.item_anchors=all"],
                                   ["loss.rec_softmax=sampled", "loss.sampled_negatives=7"],
                                   ["data.attributes=[category]"],
                                   ["arch.paper_code=true", "loss.rec_positions=all"]])
def test_macl_options_give_finite_losses_with_gradients(shop, extra):
    _, data, model = build(shop, "macl", extra)
    batch = make_batch(data.train, np.arange(32), 8, all_positions=True)
    out = loss_with_seed(model, batch)
    assert torch.isfinite(out.total) and {"rec", "item", "sess"} <= set(out.parts)
    out.total.backward()
    assert model.items.id_emb.weight.grad.abs().sum() > 0
    if "data.attributes=[category]" in extra:
        assert model.items.attr_emb["category"].weight.grad.abs().sum() > 0
