"""Contrastive losses: open_clip's ``ClipLoss`` and ``SigLipLoss`` behind one interface that returns a dict.

* ``clip``: symmetric InfoNCE over the image-text similarity matrix scaled by a learnable
  temperature (Radford et al. 2021); seed 000's "InfoNCE, learnable temperature 0.07".
* ``siglip``: the pairwise sigmoid loss of Zhai et al. 2023 (arXiv:2303.15343),
  ``-1/|B| sum_ij log sigmoid(z_ij (t x_i.y_j + b))`` with ``z_ij = 1`` on the diagonal and -1 elsewhere,
  learnable ``t`` (init log 10) and ``b`` (init -10). Seed 002 prints
  ``-log(sigmoid(positive - negatives))`` with a logsumexp over negatives: that is a softmax-style
  loss, not SigLIP's; medlens uses the real one (open_clip's implementation).

With several processes, features are gathered across ranks (ClipLoss ``local_loss`` +
``gather_with_grad``; SigLipLoss exchanges text features between neighbours), so every process's
batch uses the whole global batch as negatives.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ContrastiveLoss"]


class ContrastiveLoss(nn.Module):
    """``forward(image_features, text_features, logit_scale, logit_bias=None) -> {"contrastive_loss": t}``.

    Args:
        kind: ``"clip"`` or ``"siglip"``.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, kind: str = "clip", rank: int = 0, world_size: int = 1):
        super().__init__()
        from open_clip.loss import ClipLoss, SigLipLoss

        self.kind = kind
        if kind == "clip":
            self.loss = ClipLoss(
                local_loss=world_size > 1,
                gather_with_grad=world_size > 1,
                cache_labels=True,
                rank=rank,
                world_size=world_size,
            )
        elif kind == "siglip":
            self.loss = SigLipLoss(cache_labels=True, rank=rank, world_size=world_size)
        else:
            raise ValueError(f"unknown contrastive loss '{kind}'; expected 'clip' or 'siglip'")

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if self.kind == "siglip":
            if logit_bias is None:
                raise ValueError(
                    "the siglip loss needs the model's logit_bias (init_logit_bias in its config)"
                )
            return {"contrastive_loss": self.loss(image_features, text_features, logit_scale, logit_bias)}
        return {"contrastive_loss": self.loss(image_features, text_features, logit_scale)}
