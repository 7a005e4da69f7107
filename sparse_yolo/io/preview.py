"""The preview image: boxes drawn on a (downscaled) overview, written atomically."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sparse_yolo.atomic import atomic_open
from sparse_yolo.errors import SparseYoloError


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, saturated BGR colour for a class id."""
    hue = (class_id * 47) % 180  # OpenCV hue range is 0..179
    bgr = cv2.cvtColor(np.array([[[hue, 220, 255]]], dtype=np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def write_preview(
    path: str | Path,
    image_bgr: np.ndarray,
    boxes_xyxy: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    names: dict[int, str],
    scale: float = 1.0,
    max_side: int | None = None,
) -> None:
    """Draw boxes on an image and write it (PNG, or JPEG by suffix) atomically.

    Args:
        path: output image, ``.png`` (or ``.jpg``/``.jpeg``).
        image_bgr: ``(h, w, 3)`` uint8 BGR, e.g. ``ImageSource.read_overview()``'s image.
        boxes_xyxy: ``(N, 4)`` xyxy in full-image pixels.
        classes: ``(N,)`` class ids.
        scores: ``(N,)`` confidences.
        names: class id -> name for the labels.
        scale: image pixels per full-image pixel (the overview's ``scale``; 1.0 when
            ``image_bgr`` is the full image).
        max_side: if given, downscale the image further so its long side fits.

    Raises:
        SparseYoloError: unsupported suffix or a failed write.
    """
    path = Path(path)
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise SparseYoloError("preview must be a .png (or .jpg) file", path)
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"image_bgr must be (h, w, 3) uint8, got {image_bgr.shape} {image_bgr.dtype}"
        )
    canvas = image_bgr
    if max_side is not None and max(canvas.shape[:2]) > max_side:
        shrink = max_side / max(canvas.shape[:2])
        size = (max(1, round(canvas.shape[1] * shrink)), max(1, round(canvas.shape[0] * shrink)))
        canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA)
        scale *= canvas.shape[1] / image_bgr.shape[1]
    canvas = _draw_boxes(
        canvas.copy(),
        np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) * scale,
        classes,
        scores,
        names,
    )
    ok, encoded = cv2.imencode(path.suffix.lower(), canvas)
    if not ok:
        raise SparseYoloError("OpenCV could not encode the preview", path)
    with atomic_open(path, binary=True) as fh:
        fh.write(encoded.tobytes())


def _draw_boxes(
    canvas: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    names: dict[int, str],
) -> np.ndarray:
    """Draw ``(N, 4)`` xyxy boxes (canvas pixels) in place, labelled when wide enough."""
    thick = max(1, round(max(canvas.shape[:2]) / 1000))
    for box, cls, score in zip(
        boxes, np.asarray(classes).tolist(), np.asarray(scores).tolist(), strict=True
    ):
        x1, y1, x2, y2 = (round(v) for v in box)
        color = class_color(int(cls))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        if x2 - x1 >= 24:
            label = f"{names.get(int(cls), str(cls))} {score:.2f}"
            cv2.putText(
                canvas,
                label,
                (x1, max(y1 - 3, 10)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35 * thick,
                color,
                thick,
                cv2.LINE_AA,
            )
    return canvas
