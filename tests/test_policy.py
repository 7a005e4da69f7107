"""``backend: auto`` runs the path its cost model predicts cheapest; the table is cached."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers import COST_STUB, SHARED_WEIGHTS, scene, tiny_model

from sparse_yolo.config import DetectorConfig
from sparse_yolo.detector import Detector
from sparse_yolo.engine import calibrate as cal
from sparse_yolo.engine.policy import CostTable, Linear, StemCost, choose, predict
from sparse_yolo.engine.runner import SparseEngine
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.masks import MaskResult

STUB = CostTable.from_dict(json.loads(COST_STUB.read_text()))


def fixed_mask(cells: np.ndarray, cell: int = 16):
    result = MaskResult(cells, cells.astype(np.float32), cell)
    return lambda image, valid=None, frame=None: result


def speckled(shape: tuple[int, int], fraction: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(shape) < fraction


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (np.pad(np.ones((3, 3), bool), ((20, 45), (40, 77))), "windows:gather"),
        (np.ones((68, 120), bool), "every_cell"),
        (speckled((68, 120), 0.4), "every_cell"),
    ],
)
def test_choice_is_the_cheapest_prediction(cells, expected):
    from sparse_yolo.config import WindowConfig
    from sparse_yolo.engine.windows import plan_windows

    windows = plan_windows(cells, 16, WindowConfig())
    choice = choose(STUB, cells, 16, windows, lambda w: len(w), ("gather", "dense"))
    assert f"{choice.path}:{choice.backend}".rstrip(":None") == expected
    assert choice.predicted[expected] == min(choice.predicted.values())
    # the terms add up as docs/engine.md writes them
    px, active = cells.size * 256, int(cells.sum()) * 256
    cells8 = int((windows[:, 2] * windows[:, 3]).sum())
    gather = STUB.stem["gather"](px, active) + STUB.remainder.per_unit * cells8
    gather += STUB.remainder.fixed * len(windows)
    assert choice.predicted["windows:gather"] == pytest.approx(gather)
    assert choice.predicted["dense"] == pytest.approx(STUB.dense(px))


def test_a_cheap_dense_forward_wins():
    cheap = dataclasses.replace(STUB, dense=Linear(0.0, 1e-9))
    cells = np.zeros((68, 120), bool)
    cells[10:12, 10:12] = True
    out = predict(cheap, cells.size * 256, 4 * 256, 64, 1, cells.size * 4, ("gather",))
    assert min(out, key=out.get) == "dense"


def _detector(costs: CostTable, cells: np.ndarray, model=None) -> Detector:
    det = Detector(model or tiny_model(), "auto", device="cpu", **{"post.conf": 0.01})
    det.engine._costs = costs
    det.mask = fixed_mask(cells)
    return det


@pytest.mark.parametrize("path", ["windows:gather", "windows:dense", "every_cell", "dense"])
def test_auto_runs_the_path_the_cost_model_predicts(path):
    """Make one path cheapest in the table: the engine takes it, and reports the predictions."""
    image = scene(256, 320, 8, seed=3)
    cells = np.zeros((16, 20), bool)
    cells[3:6, 4:8] = cells[10:13, 12:16] = True
    expensive = StemCost(1.0, 1.0)
    table = dataclasses.replace(
        STUB,
        dense=Linear(5.0 if path != "dense" else 0.0, 0.0),
        every_px=1.0 if path != "every_cell" else 0.0,
        stem={b: StemCost() if path == f"windows:{b}" else expensive for b in ("gather", "dense")},
        remainder=Linear(0.0, 0.0),
    )
    res = _detector(table, cells).predict_array(image)
    kind, _, backend = path.partition(":")
    assert res.engine.path == kind
    assert res.engine.backend == backend or kind != "windows"
    predicted = res.engine.predicted_ms
    assert min(predicted, key=predicted.get) == path
    assert res.stats.active_fraction == (cells.mean() if kind == "windows" else 1.0)


def test_plain_dense_and_every_cell_paths_agree(shared):
    """Both compute the whole dense network; they differ only in how the frame enters it."""
    import cv2

    from sparse_yolo.model.loading import load_model

    path = sorted((shared / "data" / "visdrone" / "images").glob("*.jpg"))[0]
    image = np.ascontiguousarray(cv2.imread(str(path))[:380, :630])
    cells = np.ones((24, 40), bool)
    model = load_model(SHARED_WEIGHTS)
    runs = {}
    for path in ("every_cell", "dense"):
        table = dataclasses.replace(
            STUB,
            dense=Linear(0.0 if path == "dense" else 9.0, 0.0),
            every_px=0.0 if path == "every_cell" else 9.0,
        )
        runs[path] = _detector(table, cells, model).predict_array(image)
        assert runs[path].engine.path == path
    a, b = runs["every_cell"], runs["dense"]
    assert len(a) > 10 and len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_explicit_backend_never_consults_the_costs():
    engine = SparseEngine(tiny_model(), DetectorConfig(backend="gather"))
    cells = np.ones((4, 4), bool)
    plan = engine.plan(MaskResult(cells, cells.astype(np.float32), 16))
    assert (plan.path, plan.backend, engine._costs) == ("windows", "gather", None)


# ----------------------------------------------------------------------- calibration
@pytest.fixture
def quick_calibration(monkeypatch, tmp_path):
    """Small calibration frames, a fresh cache, no table override."""
    monkeypatch.setitem(cal.FRAME, "cpu", (128, 192))
    monkeypatch.setitem(cal.SMALL, "cpu", (64, 96))
    monkeypatch.setattr(cal, "WINDOWS", ((4, 4), (8, 12)))
    monkeypatch.delenv(cal.COSTS_ENV)
    monkeypatch.setenv(cal.CACHE_ENV, str(tmp_path))
    return tmp_path


def test_calibration_is_measured_once_and_cached(quick_calibration, monkeypatch):
    engine = SparseEngine(tiny_model(), DetectorConfig())
    table = engine.costs  # first use: measured
    assert table.key == cal.cost_key(engine) and "threads=2" in table.key
    assert set(table.stem) == {"gather", "dense"}
    values = [
        table.dense.fixed,
        table.dense.per_unit,
        table.every_px,
        *table.remainder.__dict__.values(),
    ]
    assert all(v >= 0 for v in values) and table.dense(1e6) > 0
    path = cal.table_path(table.key)
    assert path.is_file() and path.is_relative_to(quick_calibration)
    monkeypatch.setattr(cal, "calibrate", lambda *a, **k: pytest.fail("measured again"))
    again = SparseEngine(tiny_model(), DetectorConfig()).costs
    assert again == CostTable.from_dict(json.loads(path.read_text()))
    torch.set_num_threads(1)  # another thread count is another machine, for timing
    assert cal.cost_key(engine) != table.key


def test_a_bad_cost_table_is_a_one_line_error(monkeypatch, tmp_path):
    bad = tmp_path / "costs.json"
    bad.write_text('{"key": "x"}')
    monkeypatch.setenv(cal.COSTS_ENV, str(bad))
    with pytest.raises(SparseYoloError, match="not a cost table"):
        _ = SparseEngine(tiny_model(), DetectorConfig()).costs


def test_calibrate_command_writes_the_table(quick_calibration, tiny_weights):
    from click.testing import CliRunner

    from sparse_yolo.cli import main

    res = CliRunner().invoke(main, ["calibrate", "--weights", str(tiny_weights), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "dense forward, 4K" in res.output and "stem gather" in res.output
    assert len(list((quick_calibration / "costs").glob("*.json"))) == 1
