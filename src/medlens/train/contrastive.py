"""The contrastive step and validation of ``train_encoder``: open_clip features, accumulation with every
micro-batch a negative of every other, validation loss and zero-shot AUC.

Gradient accumulation follows open_clip's ``--accum-freq``: features of all micro-batches are computed
first without gradients, then each micro-batch is recomputed with gradients against that cache.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from medlens.config import ZeroShotConfig

__all__ = ["features", "train_step", "validate"]


def features(model, images, texts):
    out = model(images, texts)
    return out["image_features"], out["text_features"], out["logit_scale"], out.get("logit_bias")


def train_step(model, loss_fn, micro_batches, accelerator) -> float:
    """Forward/backward of one optimizer step over its micro-batches; returns the loss."""
    if len(micro_batches) == 1:
        with accelerator.autocast():
            img, txt, scale, bias = features(model, *micro_batches[0])
            loss = loss_fn(img, txt, scale, bias)["contrastive_loss"]
        accelerator.backward(loss)
        return loss.item()
    with torch.no_grad(), accelerator.autocast():  # 1) features of every micro-batch, as negatives
        cached = [features(model, *mb)[:2] for mb in micro_batches]
    for j, mb in enumerate(micro_batches):  # 2) each micro-batch again, with gradients, against the cache
        last = j == len(micro_batches) - 1
        with accelerator.autocast(), accelerator.no_sync(model) if not last else contextlib.nullcontext():
            img, txt, scale, bias = features(model, *mb)
            images = torch.cat([img if i == j else c[0] for i, c in enumerate(cached)])
            texts = torch.cat([txt if i == j else c[1] for i, c in enumerate(cached)])
            # the temperature (and bias) get their gradient once, not once per micro-batch as in open_clip
            if not last:
                scale, bias = scale.detach(), None if bias is None else bias.detach()
            loss = loss_fn(images, texts, scale, bias)["contrastive_loss"]
            accelerator.backward(loss)
    return loss.item()


def apply_update(model, unwrapped, optimizer, accelerator, max_grad_norm: float | None) -> None:
    """The optimizer step after :func:`train_step`: clip the gradients, step, clear them, clamp the
    temperature (CLIP's clamp: the logit scale may not exceed 100)."""
    if max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        unwrapped.logit_scale.clamp_(0, math.log(100))


@torch.no_grad()
def validate(
    model,
    loader,
    loss_fn,
    accelerator,
    targets: np.ndarray,
    zero_shot: ZeroShotConfig | None,
    tokenizer,
    eval_labels: list[str],
) -> dict[str, float]:
    """Validation loss (mean over batches) and zero-shot mean AUC over ``eval_labels`` (no CIs: a training signal).

    Runs on one process: ``model`` is the unwrapped model and ``loss_fn`` a single-process loss (a
    DDP forward or a gathering loss on one rank alone would wait forever for the others).
    """
    from sklearn.metrics import roc_auc_score

    from medlens.evaluate.zero_shot import zero_shot_logits

    model.eval()
    losses, feats = [], []
    for images, texts in loader:
        with accelerator.autocast():
            img, txt, scale, bias = features(
                model, images.to(accelerator.device), texts.to(accelerator.device)
            )
            if img.shape[0] > 1:  # a single pair has no negatives: its loss says nothing
                losses.append(loss_fn(img, txt, scale, bias)["contrastive_loss"].item())
        feats.append(img.float().cpu().numpy())
    metrics = {"val/loss": float(np.mean(losses)) if losses else float("nan")}
    if zero_shot is not None and eval_labels:

        def encode_text(prompts: list[str]) -> np.ndarray:
            tokens = tokenizer(prompts).to(accelerator.device)
            return model.encode_text(tokens, normalize=True).float().cpu().numpy()

        logits = zero_shot_logits(np.concatenate(feats), encode_text, eval_labels, zero_shot.templates)
        log_odds = logits[..., 0] - logits[..., 1]
        metrics["val/zero_shot_auc"] = float(
            np.mean([roc_auc_score(targets[:, j], log_odds[:, j]) for j in range(len(eval_labels))])
        )
    model.train()
    return metrics
