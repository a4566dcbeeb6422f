"""The contrastive losses against their formulas written out on small tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from medlens.train.losses import ContrastiveLoss


def _features(seed=0, n=3, d=4):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    return img, txt


def test_siglip_loss_matches_the_pairwise_sigmoid_formula_on_3x3():
    img, txt = _features()
    t, b = math.log(10.0), -10.0
    logits = math.exp(t) * img @ txt.T + b
    # Zhai et al. 2023: -1/|B| sum_ij log sigmoid(z_ij * logit_ij), z = +1 on the diagonal, -1 elsewhere
    expected = 0.0
    for i in range(3):
        for j in range(3):
            z = 1.0 if i == j else -1.0
            expected -= math.log(1.0 / (1.0 + math.exp(-z * logits[i, j].item())))
    expected /= 3
    out = ContrastiveLoss("siglip")(img, txt, torch.tensor(t).exp(), torch.tensor(b))
    assert out["contrastive_loss"].item() == pytest.approx(expected, rel=1e-5)


def test_seed_002_logsumexp_formula_is_not_what_siglip_computes():
    img, txt = _features(1)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    logits = scale * img @ txt.T + bias
    # seed 002: -log(sigmoid(positive - logsumexp(negatives))), a softmax-style loss
    neg = logits.masked_fill(torch.eye(3, dtype=torch.bool), float("-inf"))
    seed_formula = -F.logsigmoid(logits.diag() - torch.logsumexp(neg, dim=1)).mean()
    siglip = ContrastiveLoss("siglip")(img, txt, scale, bias)["contrastive_loss"]
    assert abs(seed_formula.item() - siglip.item()) > 0.1


def test_clip_loss_is_symmetric_cross_entropy():
    img, txt = _features(2, n=5)
    scale = torch.tensor(1 / 0.07)
    logits = scale * img @ txt.T
    target = torch.arange(5)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    out = ContrastiveLoss("clip")(img, txt, scale)
    assert out["contrastive_loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_siglip_without_bias_and_unknown_kind_are_rejected():
    img, txt = _features()
    with pytest.raises(ValueError, match="logit_bias"):
        ContrastiveLoss("siglip")(img, txt, torch.tensor(10.0))
    with pytest.raises(ValueError, match="unknown contrastive loss"):
        ContrastiveLoss("triplet")


@pytest.fixture(scope="module")
def two_process_losses(tmp_path_factory):
    from helpers.two_process import fork

    out = tmp_path_factory.mktemp("two_process_losses")
    fork(out)
    return out


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_two_gloo_processes_give_the_single_process_loss_and_gradients(two_process_losses, kind):
    """Each process holds half of a global batch; open_clip's gathering makes it the single-process batch."""
    from helpers.two_process import global_features

    img, txt = (x.clone().requires_grad_(True) for x in global_features())
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-5.0, requires_grad=True)
    loss = ContrastiveLoss(kind)(img, txt, scale, bias)["contrastive_loss"]
    loss.backward()
    ranks = [torch.load(two_process_losses / f"{kind}_rank{r}.pt") for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    # a rank's loss covers its own rows against the whole batch; the mean over ranks is the global loss
    assert sum(r["loss"] for r in ranks) / 2 == pytest.approx(loss.item(), rel=1e-6)
    assert abs(ranks[0]["loss"] - ranks[1]["loss"]) > 1e-4  # the halves really differ
    # gathering with gradients returns every rank's gradient to the rows it came from; data-parallel
    # training then averages over ranks, which gives the single-process gradient
    assert torch.allclose(torch.cat([r["img_grad"] for r in ranks]) / 2, img.grad, atol=1e-6)
    assert torch.allclose(torch.cat([r["txt_grad"] for r in ranks]) / 2, txt.grad, atol=1e-6)
    assert (ranks[0]["scale_grad"] + ranks[1]["scale_grad"]) / 2 == pytest.approx(scale.grad.item(), rel=1e-5)
    if kind == "siglip":
        assert (ranks[0]["bias_grad"] + ranks[1]["bias_grad"]) / 2 == pytest.approx(
            bias.grad.item(), rel=1e-5
        )
