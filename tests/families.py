"""Helpers for the model-family tests: random-weight Ultralytics checkpoints saved as
Ultralytics saves them, and Ultralytics' own prediction of a zero-padded tensor."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparse_yolo.model.graph import build_detection_model


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm: statistics measured on random images, then perturbed, and random
    affine parameters. Fully random statistics of unit scale would shrink the signal of a
    random-init network layer by layer until every anchor scores the same (ties)."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        n = m.num_features
        m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
        m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 128, 128, generator=g))
    for m in bns:
        n = m.num_features
        m.momentum = 0.03
        m.running_mean.add_((torch.rand(n, generator=g) - 0.5) * 0.2 * m.running_var.sqrt())
        m.running_var.mul_(torch.rand(n, generator=g) * 0.4 + 0.8)
    return model.eval()


def spread_scores(
    model: nn.Module, sample: torch.Tensor, seed: int = 0, std: float = 1.0, share: float = 0.03
) -> None:
    """Scale the last convs of the Detect head (both branches of an end-to-end head) to the
    features of ``sample`` ((B, 3, H, W) RGB in [0, 1]): class logits spread with ``std``,
    biased so that at least about ``share`` of each image's anchors score above 0.25 (distinct scores, some
    detections); box distances vary around a fraction of a stride (boxes near their
    anchors, of varied shapes)."""
    g = torch.Generator().manual_seed(seed)
    head = model.model[-1]
    cls = [seq[-1] for br in (head.cv3, getattr(head, "one2one_cv3", None)) for seq in br or ()]
    box = [seq[-1] for br in (head.cv2, getattr(head, "one2one_cv2", None)) for seq in br or ()]
    seen: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.__setitem__(m, (i[0], o))) for m in cls + box
    ]
    bins = torch.arange(head.reg_max, dtype=torch.float32)
    with torch.no_grad():
        model.eval()(sample)
        for m in cls + box:
            fan_in = m.weight[0].numel()
            rms = float(seen[m][0].pow(2).mean().sqrt())
            scale = std if m in cls else 0.5
            m.weight.data.normal_(0.0, scale / (rms * fan_in**0.5), generator=g)
            m.bias.data.zero_()
            if m in box:  # DFL bins favouring 0-1 strides; reg_max 1: distances directly
                m.bias.data.copy_((-1.0 * bins).repeat(4) if head.reg_max > 1 else 0.7)
        model(sample)
    for h in hooks:
        h.remove()
    for branch in (head.cv3, getattr(head, "one2one_cv3", None)):
        if branch is None:
            continue
        best = torch.cat([seen[seq[-1]][1].amax(1).flatten(1) for seq in branch], 1)
        # the image that scores lowest still gets its share (features vary a lot by image)
        bias = math.log(0.25 / 0.75) - float(best.quantile(1 - share, dim=1).min())
        for seq in branch:
            seq[-1].bias.data.fill_(bias)


def random_checkpoint(
    path: Path,
    name: str,
    nc: int,
    samples: list[np.ndarray],
    seed: int = 0,
    end2end: bool | None = None,
) -> nn.Module:
    """Build ``name`` (e.g. ``yolo11n.yaml``) with random weights, randomised BatchNorm and
    spread class scores, and save it as Ultralytics saves a checkpoint (fp16 ``model``).

    Args:
        samples: the (H, W, 3) uint8 BGR images the test will run (score calibration).
        end2end: set the head's end-to-end mode (YOLO26) before saving, when not None.

    Returns:
        The float model (eval mode), as saved.
    """
    from sparse_yolo.model.graph import split_model_name

    torch.manual_seed(seed)
    arch, scale = split_model_name(name)
    model = build_detection_model(arch, scale or "n", nc)
    model.yaml["yaml_file"] = name
    randomize_bn(model, seed)
    x = torch.stack([torch.from_numpy(s[:, :, ::-1].copy()) for s in samples])
    x = x.permute(0, 3, 1, 2).float() / 255
    spread_scores(model, x, seed)
    if end2end is not None:
        model.end2end = end2end
    model.names = {i: f"c{i}" for i in range(nc)}
    ckpt = {"epoch": -1, "model": copy.deepcopy(model).half(), "train_args": {}, "date": None}
    torch.save(ckpt, path)
    return model.eval()


def ultralytics_predict(
    path: Path,
    image: np.ndarray,
    dtype: torch.dtype = torch.float32,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
) -> tuple[np.ndarray, int]:
    """Ultralytics' own forward and post-processing of a checkpoint on the zero-padded
    tensor of a (H, W, 3) uint8 BGR image: (N, 6) [x1, y1, x2, y2, score, class], boxes
    clipped to the image as ``Results`` clips them. ``dtype`` float64 takes float32
    rounding (different conv algorithms, BatchNorm folded) out of a comparison.

    One documented difference is applied: the engine drops boxes centred beyond the image's
    right or bottom edge (in the padding, where a window sees no pixels); Ultralytics keeps
    them clipped. Their count is returned so a test can bound it.

    Returns:
        The detections, and how many were dropped by that rule.
    """
    from ultralytics.nn.tasks import load_checkpoint
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import clip_boxes

    model, _ = load_checkpoint(str(path), device="cpu")
    model = model.to(dtype).fuse(verbose=False).eval().to(dtype)  # fused, as it predicts
    stride = int(model.stride.max())
    h, w = image.shape[:2]
    x = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).to(dtype)[None] / 255
    x = torch.nn.functional.pad(x, (0, -w % stride, 0, -h % stride))
    with torch.inference_mode():
        preds = model(x)
        out = non_max_suppression(
            preds, conf, iou, max_det=max_det, end2end=getattr(model, "end2end", False)
        )[0]
        cx, cy = (out[:, 0] + out[:, 2]) / 2, (out[:, 1] + out[:, 3]) / 2
        inside = (cx < w) & (cy < h)
        out = out[inside].clone()
        clip_boxes(out[:, :4], (h, w))
    return out.float().numpy(), int((~inside).sum())


def match(ours: np.ndarray, ref: np.ndarray, atol: float = 1e-3, score_atol: float = 1e-5) -> None:
    """Same detections: one-to-one rows, equal classes, boxes within ``atol`` px."""
    assert len(ours) == len(ref), f"{len(ours)} detections, Ultralytics {len(ref)}"
    cost = np.abs(ours[:, None, :4] - ref[None, :, :4]).max(-1)
    cost += 1e3 * np.abs(ours[:, None, 4] - ref[None, :, 4])  # clipped boxes can coincide
    cost += 1e6 * (ours[:, None, 5] != ref[None, :, 5])
    nearest = cost.argmin(1)
    assert len(set(nearest.tolist())) == len(ref), "detections do not pair one to one"
    np.testing.assert_allclose(ours[:, :4], ref[nearest, :4], atol=atol, rtol=0)
    np.testing.assert_allclose(ours[:, 4], ref[nearest, 4], atol=score_atol, rtol=0)
    np.testing.assert_array_equal(ours[:, 5], ref[nearest, 5])
