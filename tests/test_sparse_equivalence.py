"""Every backend computes the same function of the same parameters (atol 1e-4, 2 threads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import blob_cells, randomize_bn, tiny_model

from sparse_yolo.sparse.active import ActiveLevel, ActivePyramid, cells_to_stride
from sparse_yolo.sparse.backends import (
    BACKENDS,
    make_backend,
    pointwise_cat,
    spconv_available,
)
from sparse_yolo.sparse.stem import flat_response, run_stem

SPARSE = ["gather"] + (["spconv"] if spconv_available() else [])


def _stem_outputs(model, image, cells, cell, names):
    out = {}
    with torch.no_grad():
        for name in names:
            backend = make_backend(name)
            feats = run_stem(
                model.stem, backend, image, ActivePyramid(torch.from_numpy(cells), cell)
            )[-1]
            out[name] = (backend, feats)
    return out


@pytest.mark.parametrize("backend", SPARSE)
@pytest.mark.parametrize(
    ("cell", "fraction", "seed", "size"),
    [
        (16, 0.1, 0, (250, 300)),
        (8, 0.3, 1, (192, 256)),
        (32, 0.5, 2, (320, 288)),
        (16, 1.0, 3, (64, 96)),
    ],
)
def test_stem_matches_dense_reference(backend, cell, fraction, seed, size):
    model = tiny_model(seed=seed)
    rng = np.random.default_rng(seed)
    h, w = size
    image = torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    hc, wc = -(-h // 32) * 32 // cell, -(-w // 32) * 32 // cell
    cells = blob_cells((hc, wc), fraction, seed)
    outs = _stem_outputs(model, image, cells, cell, ["dense", backend])
    ref_backend, ref = outs["dense"]
    sp_backend, sp = outs[backend]
    dense_grid = ref_backend.grid(ref)
    torch.testing.assert_close(sp_backend.grid(sp), dense_grid, atol=1e-4, rtol=1e-4)
    # The stride-8 active set is exactly the downsampled cell mask, not a dilated set.
    mask8 = torch.from_numpy(cells).repeat_interleave(cell // 8, 0).repeat_interleave(cell // 8, 1)
    assert torch.equal(sp.level.mask, mask8)
    assert dense_grid[0, :, ~mask8].abs().sum() == 0  # no bias/BN/SiLU leak outside
    assert dense_grid[0, :, mask8].abs().max() > 0.01  # and something real inside


@pytest.mark.parametrize("backend", [*SPARSE, "dense"])
def test_windows_densify_the_stride8_grid(backend):
    model = tiny_model()
    rng = np.random.default_rng(5)
    image = torch.from_numpy(rng.integers(0, 256, (128, 192, 3), dtype=np.uint8))
    cells = blob_cells((8, 12), 0.3, 5)
    ((be, feats),) = _stem_outputs(model, image, cells, 16, [backend]).values()
    boxes = torch.tensor([[0, 0, 8, 12], [4, 8, 8, 12], [8, 4, 8, 12]])
    with torch.no_grad():
        win = be.windows(feats, boxes)
        grid = be.grid(feats)[0]
    assert win.shape == (3, grid.shape[0], 8, 12)
    for (y0, x0, h, w), crop in zip(boxes.tolist(), win, strict=True):
        torch.testing.assert_close(crop, grid[:, y0 : y0 + h, x0 : x0 + w])
    # A fill vector lands on exactly the inactive sites; active sites are untouched.
    fill = torch.linspace(-1, 1, grid.shape[0])
    with torch.no_grad():
        filled = be.windows(feats, boxes, fill)
    active = torch.from_numpy(np.kron(cells, np.ones((2, 2), bool)))
    for (y0, x0, h, w), crop in zip(boxes.tolist(), filled, strict=True):
        on = active[y0 : y0 + h, x0 : x0 + w]
        assert 0 < on.sum() < on.numel()
        torch.testing.assert_close(crop[:, on], grid[:, y0 : y0 + h, x0 : x0 + w][:, on])
        torch.testing.assert_close(crop[:, ~on], fill[:, None].expand(-1, int((~on).sum())))
    # A fill map (a camera's background, channels-last) gives each inactive site its own.
    c, gh, gw = grid.shape
    hwc = torch.arange(gh * gw * c, dtype=torch.float32).view(gh, gw, c) / (gh * gw * c)
    background = hwc.permute(2, 0, 1)
    with torch.no_grad():
        mapped = be.windows(feats, boxes, background)
    for (y0, x0, h, w), crop in zip(boxes.tolist(), mapped, strict=True):
        on = active[y0 : y0 + h, x0 : x0 + w]
        torch.testing.assert_close(crop[:, on], grid[:, y0 : y0 + h, x0 : x0 + w][:, on])
        torch.testing.assert_close(crop[:, ~on], background[:, y0 : y0 + h, x0 : x0 + w][:, ~on])


def test_every_backend_is_registered_and_unknown_names_rejected():
    assert set(BACKENDS) == {"gather", "spconv", "dense"}
    with pytest.raises(ValueError, match="known: auto, gather"):
        make_backend("cuda-magic")
    # auto: the gather kernel on CPU; on CUDA the masked dense stem (measured faster there)
    assert make_backend("auto", "cpu").name == "gather"
    assert make_backend("auto", "cuda").name == "dense"


def test_gather_refuses_autograd():
    model = tiny_model()
    image = torch.zeros((64, 64, 3), dtype=torch.uint8)
    pyramid = ActivePyramid(torch.ones(4, 4, dtype=torch.bool), 16)
    with pytest.raises(RuntimeError, match="inference-only"):
        run_stem(model.stem, make_backend("gather"), image, pyramid)


@pytest.mark.parametrize("scale", ["n", "m"])
def test_flat_response_is_the_interior_of_a_large_flat_image(scale):
    """The background fill is what the stem computes deep inside a uniform image."""
    from sparse_yolo.config import ModelConfig
    from sparse_yolo.model.yolo import SparseYOLO
    from sparse_yolo.sparse.stem import flat_response

    model = randomize_bn(SparseYOLO(ModelConfig(scale=scale, nc=2)))
    colour = torch.tensor([[0.2, 0.5, 0.7]])
    with torch.no_grad():
        x = colour[:, :, None, None].expand(1, 3, 640, 640).contiguous()
        for layer in model.stem:
            x = layer(x)
        fill = flat_response(model.stem, colour)[-1]
    assert x.abs().max() > 0.5  # features of real magnitude, so the tolerance means something
    torch.testing.assert_close(fill, x[:, :, 40, 40], atol=1e-5, rtol=1e-5)
    model.train()  # training-mode BatchNorm must not see (or learn from) the flat patch
    before = model.stem[0].bn.running_mean.clone()
    flat_response(model.stem, colour)
    assert torch.equal(model.stem[0].bn.running_mean, before)


@pytest.mark.parametrize("cell", [8, 16, 32])
def test_a_level_built_from_cells_is_the_level_of_its_site_mask(cell):
    """Sites in the same row-major order and the same index as from the upsampled mask, at
    every stride, on empty, scattered, half and full cell masks."""
    rng = np.random.default_rng(cell)
    for stride in (s for s in (1, 2, 4, 8) if cell % s == 0):
        for share in (0.0, 0.05, 0.5, 1.0):
            cells = torch.from_numpy(rng.random((7, 11)) < share)
            got = ActiveLevel.from_cells(cells, cell, stride)
            want = ActiveLevel.from_mask(cells_to_stride(cells, cell, stride), stride)
            assert got.shape == want.shape == (7 * cell // stride, 11 * cell // stride)
            assert torch.equal(got.coords, want.coords)
            assert torch.equal(got.index, want.index)
            assert torch.equal(got.mask, cells_to_stride(cells, cell, stride))


def test_gather_is_exact_across_im2col_chunks(monkeypatch):
    """Many small chunks (the 4K case) compute what one chunk computes."""
    import sparse_yolo.sparse.backends as backends

    model = tiny_model(seed=4)
    rng = np.random.default_rng(4)
    image = torch.from_numpy(rng.integers(0, 256, (192, 256, 3), dtype=np.uint8))
    cells = blob_cells((12, 16), 0.4, 4)
    ((_, whole),) = _stem_outputs(model, image, cells, 16, ["gather"]).values()
    monkeypatch.setattr(backends, "_CHUNK_BYTES", 4096)  # a few dozen rows per chunk
    ((be, chunked),) = _stem_outputs(model, image, cells, 16, ["gather"]).values()
    assert whole.level.n > 100
    torch.testing.assert_close(be.grid(chunked), be.grid(whole), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", [*SPARSE, "dense"])
def test_half_stem_follows_the_float_stem(backend):
    """fp16 (``half: true``, meant for CUDA; CPU runs it too) casts the uint8 frame and the
    fill to the weights' dtype on every path, and stays within fp16 rounding of float32."""
    model = tiny_model(seed=4)
    rng = np.random.default_rng(4)
    image = torch.from_numpy(rng.integers(0, 256, (192, 256, 3), dtype=np.uint8))
    cells = blob_cells((12, 16), 0.3, 4)
    ref_backend, ref = _stem_outputs(model, image, cells, 16, [backend])[backend]
    half = tiny_model(seed=4).half()
    be, out = _stem_outputs(half, image, cells, 16, [backend])[backend]
    got, want = be.grid(out), ref_backend.grid(ref)
    assert got.dtype == torch.float16
    scale = want.abs().max()
    assert scale > 0.1 and (got.float() - want).abs().max() < 5e-3 * scale
    fill = flat_response(half.stem, torch.tensor([[0.3, 0.5, 0.7]], dtype=torch.float16))[-1]
    ref_fill = flat_response(model.stem, torch.tensor([[0.3, 0.5, 0.7]]))[-1]
    assert fill.dtype == torch.float16
    torch.testing.assert_close(
        fill.float(), ref_fill, atol=5e-3 * float(ref_fill.abs().max()), rtol=0
    )


@pytest.mark.parametrize("backend", [*SPARSE, "dense"])
def test_stem_with_every_cell_equals_ultralytics_modules(backend):
    """All cells active, each backend's inference stem (uint8 frame in, C2f's last conv fed
    the parts without a concatenation) equals the plain Ultralytics modules on the float
    image: the reference the sparse path is measured against."""
    model = randomize_bn(tiny_model(seed=5), 5).fused().eval()
    rng = np.random.default_rng(5)
    image = torch.from_numpy(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    be = make_backend(backend)
    with torch.inference_mode():
        pyramid = ActivePyramid(torch.ones(6, 8).bool(), 16)
        out = be.grid(run_stem(model.stem, be, image, pyramid)[-1])
        ref = model.dense_stem(image.permute(2, 0, 1).flip(0)[None].float() / 255)[-1]
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_pointwise_cat_reads_column_slices_without_a_copy():
    """The 1x1 conv over parts equals the module on their concatenation, for what split
    hands over: column slices of a wider (rows, C) table, next to a separate part."""
    cv2 = randomize_bn(tiny_model(seed=6), 6).eval().stem[2].cv2
    cin = cv2.conv.in_channels
    k1, k2 = cin // 3, 2 * cin // 3
    table = torch.randn(50, cin + 7)
    parts = [table[:, :k1], table[:, k1:k2], torch.randn(50, cin - k2)]
    assert not parts[0].is_contiguous() and not parts[1].is_contiguous()
    with torch.no_grad():
        want = cv2(torch.cat(parts, 1)[:, :, None, None])[:, :, 0, 0]
        got = torch.nn.functional.silu(pointwise_cat(cv2, parts))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _stem_of(module: torch.nn.Module, c: int = 16):
    """A two-layer stem: the image Conv (3x3 stride 2), then ``module`` on its output."""
    from ultralytics.nn.modules import Conv

    from sparse_yolo.sparse.stem import Stem

    layers = [Conv(3, c, 3, 2), module]
    for i, m in enumerate(layers):
        m.i, m.f = i, -1
    return randomize_bn(Stem(layers, (1,)), 7)


def _module_cases():
    from ultralytics.nn.modules import C3, Bottleneck, C2f, C3k2, Conv
    from ultralytics.nn.modules.block import C3k

    for shortcut in (True, False):
        yield f"Bottleneck-{shortcut}", lambda s=shortcut: Bottleneck(16, 16, s)
        yield f"C2f-{shortcut}", lambda s=shortcut: C2f(16, 32, 2, s)
        yield f"C3-{shortcut}", lambda s=shortcut: C3(16, 32, 2, s)
        yield f"C3k-{shortcut}", lambda s=shortcut: C3k(16, 32, 2, s)
        for c3k in (False, True):
            yield (
                f"C3k2-c3k{c3k}-{shortcut}",
                lambda s=shortcut, k=c3k: C3k2(16, 32, 2, k, 0.5, False, 1, s),
            )
    yield "Conv-1x1", lambda: Conv(16, 24, 1, 1)
    yield "Conv-3x3", lambda: Conv(16, 24, 3, 1)
    yield "Conv-3x3-s2", lambda: Conv(16, 24, 3, 2)


@pytest.mark.parametrize("backend", SPARSE)
@pytest.mark.parametrize(
    ("kind", "make"), list(_module_cases()), ids=[k for k, _ in _module_cases()]
)
def test_each_stem_module_type_matches_dense_reference(backend, kind, make):
    """Every module type with a sparse form, with and without shortcut: the sparse backend
    equals the dense reference on a random blob mask (2 threads, atol 1e-4), and with every
    cell active both equal the module's own forward."""
    torch.manual_seed(0)
    stem = _stem_of(make())
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    cells = torch.from_numpy(blob_cells((6, 8), 0.4, 1))
    with torch.no_grad():
        dense, sparse = make_backend("dense"), make_backend(backend)
        ref = dense.grid(run_stem(stem, dense, image, ActivePyramid(cells, 16))[0])
        out = sparse.grid(run_stem(stem, sparse, image, ActivePyramid(cells, 16))[0])
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        assert ref.abs().max() > 0.01
        full = ActivePyramid(torch.ones(6, 8, dtype=torch.bool), 16)
        out = sparse.grid(run_stem(stem, sparse, image, full)[0])
        own = stem[1](stem[0](image.permute(2, 0, 1).flip(0)[None].float() / 255))
        torch.testing.assert_close(out, own, atol=1e-4, rtol=1e-4)


def test_a_stem_module_without_sparse_form_is_refused_by_name_but_runs_dense_on_all_cells():
    from ultralytics.nn.modules import GhostConv

    from sparse_yolo.errors import SparseYoloError

    stem = _stem_of(GhostConv(16, 16, 3, 1))
    image = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (64, 64, 3), np.uint8))
    some = ActivePyramid(torch.tensor([[True, False], [False, True]]), 32)
    with torch.no_grad(), pytest.raises(SparseYoloError, match=r"stem layer 1 \(GhostConv"):
        run_stem(stem, make_backend("gather"), image, some)
    with torch.no_grad(), pytest.raises(SparseYoloError, match="--backend dense --mask all"):
        run_stem(stem, make_backend("dense"), image, some)
    from ultralytics.nn.modules import C3k2

    attn = _stem_of(C3k2(16, 32, 1, False, 0.5, True))  # YOLO26's attention C3k2
    with torch.no_grad(), pytest.raises(SparseYoloError, match=r"\(C3k2: PSABlock\)"):
        run_stem(attn, make_backend("gather"), image, some)
    full = ActivePyramid(torch.ones(2, 2, dtype=torch.bool), 32)
    with torch.no_grad():
        out = make_backend("dense").grid(run_stem(stem, make_backend("dense"), image, full)[0])
        own = stem[1](stem[0](image.permute(2, 0, 1).flip(0)[None].float() / 255))
    torch.testing.assert_close(out, own, atol=1e-4, rtol=1e-4)
