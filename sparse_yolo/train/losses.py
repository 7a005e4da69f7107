"""Distillation losses: neck feature mimic and KD on the Detect head's outputs.

All three are zero when the student reproduces the teacher exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mimic_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Feature mimic over the neck outputs (P3, P4, P5).

    Per level, the mean squared error relative to the teacher's mean square, so each stride
    weighs the same whatever its activation scale; averaged over levels.

    Args:
        student: [(B, C_l, H_l, W_l)] neck outputs.
        teacher: the teacher's, same shapes.
    """
    terms = [
        F.mse_loss(s.float(), t.float()) / t.float().pow(2).mean().clamp_min(1e-6)
        for s, t in zip(student, teacher, strict=True)
    ]
    return torch.stack(terms).mean()


def class_kd(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KD on class scores: Bernoulli KL(teacher || student) per class and anchor.

    Summed over classes and anchors and divided by the teacher's expected object count (the
    sum over anchors of its best class probability, at least 1), so the few anchors on
    objects are not drowned by the background: under-confidence on objects costs as much
    in a sparse scene as in a crowded one.

    Args:
        student: (B, nc, A) class logits (``Detect`` raw ``scores``).
        teacher: (B, nc, A) the teacher's.
        temperature: softens both sides (1 = plain sigmoid probabilities).

    Returns:
        KL in nats per expected teacher object.
    """
    s, t = student.float() / temperature, teacher.float() / temperature
    p = t.sigmoid()
    # BCE(s, p) - H(p) = KL(p || sigmoid(s)) for Bernoulli variables.
    kl = F.binary_cross_entropy_with_logits(s, p, reduction="none")
    kl = kl - F.binary_cross_entropy_with_logits(t, p, reduction="none")
    objects = p.amax(1).sum().clamp_min(1.0)
    return kl.sum() / objects * temperature**2


def box_kd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    weight: torch.Tensor,
    reg_max: int = 16,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KD on box distributions: KL(teacher || student) of each side's DFL softmax.

    Args:
        student: (B, 4 * reg_max, A) box logits (``Detect`` raw ``boxes``).
        teacher: (B, 4 * reg_max, A) the teacher's.
        weight: (B, A) anchor weights, e.g. the teacher's best class probability, so that
            background anchors (whose boxes mean nothing) hardly count.
        reg_max: DFL bins per side.
        temperature: softens both distributions.

    Returns:
        Weighted mean over anchors of the KL summed over the four sides (nats).
    """
    b, _, a = student.shape
    s = (student.float() / temperature).view(b, 4, reg_max, a).log_softmax(2)
    t = (teacher.float() / temperature).view(b, 4, reg_max, a).log_softmax(2)
    kl = (t.exp() * (t - s)).sum(2).sum(1)  # (B, A)
    w = weight.float()
    return (kl * w).sum() / w.sum().clamp_min(1e-6) * temperature**2
