"""The candidate-only Detect inference equals Ultralytics' decode of every anchor."""

from __future__ import annotations

import pytest
import torch
from helpers import scene, tiny_model
from ultralytics.utils.ops import xywh2xyxy

from sparse_yolo.model import head as head_mod
from sparse_yolo.model.head import candidate_detections


def _windows(model, n: int = 2) -> torch.Tensor:
    """(n, C3, 16, 24) stride-8 stem features of real-looking images (two windows)."""
    imgs = [torch.from_numpy(scene(128, 192, 8, seed=s)) for s in range(n)]
    x = torch.stack([i.flip(-1).permute(2, 0, 1).float() / 255 for i in imgs])
    for layer in model.stem:
        x = layer(x)
    return x


def _reference(model, p3: torch.Tensor, conf: float) -> torch.Tensor:
    """Ultralytics: decode every anchor, keep those whose best class score passes conf."""
    preds = model.forward_p3(p3)[0]  # (B, 4 + nc, A), xywh
    rows = []
    for b, p in enumerate(preds):
        p = p.t()
        score, cls = p[:, 4:].max(1)
        keep = score > conf
        win = torch.full_like(score[keep], b)
        rows.append(
            torch.cat([xywh2xyxy(p[keep, :4]), score[keep, None], cls[keep, None], win[:, None]], 1)
        )
    return torch.cat(rows)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("share", [0.99, 0.5])  # share of anchors below conf
@pytest.mark.parametrize("box_path", ["gather", "dense"])
def test_candidates_equal_ultralytics_decode(fused, share, box_path, monkeypatch):
    monkeypatch.setattr(head_mod, "DENSE_BOX_SHARE", 1.0 if box_path == "gather" else 0.0)
    model = tiny_model().eval()
    model = model.fused() if fused else model
    with torch.inference_mode():
        p3 = _windows(model)
        scores = model.forward_p3(p3)[0][:, 4:].amax(1)
        conf = float(scores.flatten().quantile(share))
        ours = candidate_detections(model.head, _neck(model, p3), conf)
        ref = _reference(model, p3, conf)
    assert 5 < len(ref) == len(ours)
    # rows match one to one (the order of the two decodes differs)
    dist = torch.cdist(ours.double(), ref.double())
    nearest = dist.argmin(1)
    assert dist.min(1).values.max() < 1e-3
    assert len(set(nearest.tolist())) == len(ref)


def test_box_branch_paths_agree(monkeypatch):
    """Gathered at candidate sites or run dense, the box branch gives the same rows."""
    model = tiny_model().eval()
    with torch.inference_mode():
        p3 = _windows(model)
        feats = _neck(model, p3)
        conf = float(model.forward_p3(p3)[0][:, 4:].amax(1).flatten().quantile(0.97))
        monkeypatch.setattr(head_mod, "DENSE_BOX_SHARE", 1.0)
        gathered = candidate_detections(model.head, feats, conf)
        monkeypatch.setattr(head_mod, "DENSE_BOX_SHARE", 0.0)
        dense = candidate_detections(model.head, feats, conf)
    assert len(gathered) > 5
    torch.testing.assert_close(gathered, dense, atol=1e-4, rtol=1e-4)


def _neck(model, p3):
    return model.features(p3)
