"""Window planning: every active cell covered with its context, few shapes, bounded time."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from sparse_yolo.config import WindowConfig
from sparse_yolo.engine.windows import (
    FULL_COVER,
    _align,
    _area,
    group_by_shape,
    merge_boxes,
    plan_windows,
)

CELL = 16


def covered(windows: np.ndarray, cells: np.ndarray, cell: int, margin: int = 0) -> bool:
    """Whether every active cell, grown by ``margin`` stride-8 cells, lies in one window."""
    r = cell // 8
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cells.astype(np.uint8), connectivity=8)
    grid = np.array(cells.shape) * r
    for x, y, w, h in stats[1:, :4] * r:
        lo = np.maximum([y - margin, x - margin], 0)
        hi = np.minimum([y + h + margin, x + w + margin], grid)
        inside = (windows[:, :2] <= lo).all(1) & (windows[:, :2] + windows[:, 2:] >= hi).all(1)
        if not inside.any():
            return False
    return True


def greedy_reference(boxes: np.ndarray, slack: float) -> np.ndarray:
    """The exact greedy merge (cheapest pair first, n x n costs per merge): cubic, tests only."""
    boxes = boxes.copy()
    while len(boxes) > 1:
        lo = np.minimum(boxes[:, None, :2], boxes[None, :, :2])
        hi = np.maximum(boxes[:, None, 2:], boxes[None, :, 2:])
        union = _area(np.concatenate([lo, hi], -1))
        areas = _area(boxes)
        cost = union - slack * (areas[:, None] + areas[None, :])
        np.fill_diagonal(cost, np.iinfo(np.int64).max)
        i, j = np.unravel_index(np.argmin(cost), cost.shape)
        if cost[i, j] > 0:
            break
        boxes[i] = np.concatenate([lo[i, j], hi[i, j]])
        boxes = np.delete(boxes, j, 0)
    return boxes


def component_boxes(cells: np.ndarray, margin: int = 2) -> np.ndarray:
    """Aligned (y0, x0, y1, x1) stride-8 boxes of the components, as the planner makes them."""
    r = CELL // 8
    _, _, stats, _ = cv2.connectedComponentsWithStats(cells.astype(np.uint8), connectivity=8)
    x, y, w, h = (stats[1:, i].astype(np.int64) * r for i in range(4))
    boxes = np.stack([y, x, y + h, x + w], 1) + np.array([-1, -1, 1, 1]) * margin
    return _align(boxes, cells.shape[0] * r, cells.shape[1] * r)


def random_components(shape: tuple[int, int], n: int, seed: int, max_side: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cells = np.zeros(shape, bool)
    for y, x, h, w in zip(
        rng.integers(0, shape[0], n),
        rng.integers(0, shape[1], n),
        rng.integers(1, max_side + 1, n),
        rng.integers(1, max_side + 1, n),
        strict=True,
    ):
        cells[y : y + h, x : x + w] = True
    return cells


def test_windows_cover_active_cells_aligned_and_cheap():
    cells = np.zeros((40, 60), bool)
    cells[5:8, 5:9] = True
    cells[5:8, 10:14] = True  # close neighbour: merging is cheaper than two windows
    cells[30:33, 50:55] = True  # far away: its own window
    win = plan_windows(cells, CELL, WindowConfig(margin=4))
    assert len(win) == 2
    assert (win % 4 == 0).all()  # stride-32 aligned, sizes multiples of 4 stride-8 cells
    cover = np.zeros((80, 120), bool)
    for y0, x0, h, w in win:
        cover[y0 : y0 + h, x0 : x0 + w] = True
    active8 = cells.repeat(2, 0).repeat(2, 1)
    assert cover[active8].all()
    assert (win[:, 0] + win[:, 2] <= 80).all() and (win[:, 1] + win[:, 3] <= 120).all()
    assert plan_windows(np.zeros((4, 4), bool), CELL, WindowConfig()).shape == (0, 4)
    assert plan_windows(np.ones((4, 4), bool), CELL, WindowConfig()).tolist() == [[0, 0, 8, 8]]


def test_many_small_windows_share_few_shapes():
    rng = np.random.default_rng(0)
    cells = np.zeros((200, 200), bool)
    for y, x in rng.integers(0, 195, (60, 2)):
        cells[y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = True
    win = plan_windows(cells, CELL, WindowConfig(margin=4))
    shapes = {tuple(s) for s in win[:, 2:].tolist()}
    assert len(win) > 40 and len(shapes) <= 12  # a ladder of 3 edge sizes here, not 57 shapes
    assert (win[:, :2] >= 0).all() and (win[:, :2] + win[:, 2:] <= 400).all()


def _contains(outer, inner):
    return (outer[:2] <= inner[:2]).all() and (outer[:2] + outer[2:] >= inner[:2] + inner[2:]).all()


def test_windows_grow_to_shared_shapes_when_a_forward_costs_more():
    """group_by_shape(forward_cells=...): the CUDA batching. Fewer shapes, every window kept
    inside a grown one on the stride-32 lattice and inside the grid; 0 keeps exact shapes."""
    rng = np.random.default_rng(1)
    cells = np.zeros((136, 240), bool)  # a 4K frame's 16 px cells
    for y, x in rng.integers(0, 130, (12, 2)) * [1, 2]:
        cells[y : y + rng.integers(1, 7), x : x + rng.integers(1, 7)] = True
    win = plan_windows(cells, CELL, WindowConfig())
    grid = (272, 480)
    exact = group_by_shape(win)
    assert [g.tolist() for g in group_by_shape(win, grid, 0)] == [g.tolist() for g in exact]
    assert len(exact) >= 3
    shared = group_by_shape(win, grid, 64 * 1024)
    grown = torch.cat(shared).numpy()
    assert len(shared) < len(exact) and len(grown) == len(win)
    assert all(len({tuple(b[2:]) for b in g.tolist()}) == 1 for g in shared)
    assert (grown[:, :2] % 4 == 0).all() and (grown[:, :2] >= 0).all()
    assert (grown[:, :2] + grown[:, 2:] <= grid).all()
    for w in win:  # each planned window lies in a grown window of its own
        assert any(_contains(g, w) for g in grown)
    extra = (grown[:, 2] * grown[:, 3]).sum() - (win[:, 2] * win[:, 3]).sum()
    assert 0 < extra <= 64 * 1024 * len(win)
    with pytest.raises(ValueError, match="grid size"):
        group_by_shape(win, None, 1024)


@pytest.mark.parametrize("slack", [1.0, 1.3])
def test_round_merge_is_as_tight_as_the_exact_greedy(slack):
    """Merging in rounds keeps the windowed area of the cheapest-pair-first greedy."""
    rng = np.random.default_rng(0)
    ours = reference = 0
    for seed in range(30):
        cells = random_components((60, 100), int(rng.integers(5, 60)), seed, max_side=5)
        boxes = component_boxes(cells)
        merged, ref = merge_boxes(boxes, slack), greedy_reference(boxes, slack)
        assert _area(merged).sum() <= 1.1 * _area(ref).sum()
        if slack == 1.0:  # no merge is dearer than the boxes it replaces
            assert _area(merged).sum() <= _area(boxes).sum()
        ours, reference = ours + _area(merged).sum(), reference + _area(ref).sum()
    assert ours <= 1.02 * reference


@pytest.mark.parametrize(
    ("shape", "cell", "n"),
    [((136, 240), 16, 5000), ((272, 480), 8, 5000), ((512, 512), 16, 5000)],
)
def test_plans_5000_components_in_bounded_time_and_covers_every_cell(shape, cell, n):
    """4K grids (16 and 8 px cells: the early exit) and an 8K one (the merge rounds)."""
    cells = random_components(shape, n, seed=1, max_side=1)
    n_components = cv2.connectedComponents(cells.astype(np.uint8), connectivity=8)[0] - 1
    assert n_components > 2000
    plan_windows(cells, cell, WindowConfig())  # warm numpy and OpenCV
    t0 = time.perf_counter()
    windows = plan_windows(cells, cell, WindowConfig())
    seconds = time.perf_counter() - t0
    assert seconds < 0.5  # the cubic merge took tens of seconds for 1,300 components
    assert covered(windows, cells, cell, margin=2)
    grid = np.array(shape) * cell // 8
    assert (windows[:, :2] >= 0).all() and (windows[:, :2] + windows[:, 2:] <= grid).all()


def test_windows_over_most_of_the_frame_become_one_without_merging(monkeypatch):
    """Boxes covering more than FULL_COVER of the frame: one window, merge_boxes never runs."""
    import sparse_yolo.engine.windows as windows_mod

    cells = np.zeros((64, 64), bool)
    cells[::3, ::3] = True  # 484 specks, margins overlap everywhere
    monkeypatch.setattr(windows_mod, "merge_boxes", lambda *a: pytest.fail("merged"))
    assert plan_windows(cells, CELL, WindowConfig()).tolist() == [[0, 0, 128, 128]]
    sparse = np.zeros((64, 64), bool)
    sparse[5, 5] = sparse[50, 40] = True
    assert windows_mod.cover_fraction(component_boxes(sparse), (128, 128)) < FULL_COVER
    with pytest.raises(pytest.fail.Exception):
        plan_windows(sparse, CELL, WindowConfig())


def test_lanes_deal_the_work_evenly_and_skip_a_dominant_item():
    from sparse_yolo.engine.lanes import plan_lanes, run_in_lanes  # noqa: PLC0415

    assert plan_lanes([10, 9, 8, 7], 2) == [[0, 3], [1, 2]]  # 17 vs 17
    assert plan_lanes([100, 1, 1], 2) is None  # one item is most of the work: no lanes
    assert plan_lanes([5, 5], 1) is None and plan_lanes([5], 2) is None
    items = [torch.full((n,), float(n)) for n in (7, 3, 5, 2, 6)]
    got = run_in_lanes(lambda t: t.sum() * 2, items, [len(t) for t in items], 2)
    assert [float(g) for g in got] == [2.0 * n * n for n in (7, 3, 5, 2, 6)]  # input order


def _lanes_in_child(queue) -> None:
    from sparse_yolo.engine.lanes import run_in_lanes  # noqa: PLC0415

    items = [torch.ones(n) for n in (3, 3, 2)]
    queue.put([float(x) for x in run_in_lanes(torch.sum, items, [3, 3, 2], 2)])


def test_lanes_run_in_a_process_forked_after_the_parent_used_them():
    """A forked batch worker inherits the parent's pool object but not its threads."""
    import multiprocessing as mp  # noqa: PLC0415

    from sparse_yolo.engine.lanes import run_in_lanes  # noqa: PLC0415

    items = [torch.ones(n) for n in (3, 3, 2)]
    assert [float(x) for x in run_in_lanes(torch.sum, items, [3, 3, 2], 2)] == [3.0, 3.0, 2.0]
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_lanes_in_child, args=(queue,))
    child.start()
    assert queue.get(timeout=60) == [3.0, 3.0, 2.0]
    child.join(timeout=60)
