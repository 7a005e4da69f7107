"""Pipeline configuration: the YAML file, its precedence under CLI options, and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import scene

from sparse_yolo.cli import main
from sparse_yolo.commands.options import build_detector
from sparse_yolo.config import DetectorConfig, load_config

DEFAULT_YAML = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def test_default_yaml_is_exactly_the_dataclass_defaults():
    """configs/default.yaml documents the defaults: it must not drift from the code."""
    assert load_config(DEFAULT_YAML) == DetectorConfig()
    assert load_config(None) == DetectorConfig()


def test_load_config_reads_sections_and_keeps_other_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("backend: gather\nmask:\n  name: all\n  context: 3\npost:\n  conf: 0.4\n")
    cfg = load_config(path)
    assert (cfg.backend, cfg.mask.name, cfg.mask.context, cfg.post.conf) == (
        "gather",
        "all",
        3,
        0.4,
    )
    assert cfg.mask.cell == DetectorConfig().mask.cell and cfg.tiling == DetectorConfig().tiling


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("masks:\n  name: all\n", "unknown config keys ['masks']"),
        ("mask:\n  nme: all\n", "unknown mask keys ['nme']"),
        ("backend: fast\n", "unknown backend 'fast'; known: auto, gather, spconv, dense"),
        ("mask:\n  cell: 12\n", "mask cell must be 8, 16 or 32 px"),
        ("- 1\n- 2\n", "expected a mapping at the top level"),
    ],
)
def test_load_config_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


def test_cli_options_override_the_config_file(tmp_path, tiny_weights):
    path = tmp_path / "c.yaml"
    path.write_text("mask:\n  name: all\n  context: 2\npost:\n  conf: 0.4\n  iou: 0.6\n")
    det = build_detector(
        {"config_path": path, "weights": tiny_weights, "conf": 0.1, "device": "cpu"}
    )
    cfg = det.config
    assert cfg.post.conf == 0.1  # the command line wins
    assert (cfg.post.iou, cfg.mask.name, cfg.mask.context) == (0.6, "all", 2)  # the file's
    assert cfg.tiling == DetectorConfig().tiling


def test_detect_with_config_file_end_to_end(tmp_path, tiny_weights):
    """--config reaches the run: the stats say which mask ran and that every cell was computed."""
    import cv2  # noqa: PLC0415

    image = tmp_path / "f.png"
    cv2.imwrite(str(image), scene(128, 160))
    path = tmp_path / "c.yaml"
    path.write_text("mask:\n  name: all\nbackend: dense\n")
    stats = tmp_path / "s.json"
    args = ["detect", str(image), "-o", str(tmp_path / "o.geojson"), "--config", str(path)]
    args += ["--weights", str(tiny_weights), "--stats", str(stats), "--device", "cpu"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    s = json.loads(stats.read_text())
    assert s["mask"] == "all" and s["active_fraction"] == 1.0 and s["backend"] == "dense"


def test_bad_config_file_is_one_line_error(tmp_path, tiny_weights):
    path = tmp_path / "c.yaml"
    path.write_text("mask:\n  cell: 12\n")
    image = tmp_path / "f.png"
    image.write_bytes(b"")
    res = CliRunner().invoke(
        main, ["detect", str(image), "--config", str(path), "--weights", str(tiny_weights)]
    )
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"Error: {path}: bad config (mask cell must be 8, 16 or 32 px, got 12)"
    ]
