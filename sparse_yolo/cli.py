"""``sparse-yolo``: the command-line tool.

Every user-facing failure is a ``SparseYoloError``; the group turns it into a one-line
``Error: <file>: <problem>`` and exit status 1, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from sparse_yolo.commands import batch, compare, detect, train
from sparse_yolo.errors import SparseYoloError


class ToolGroup(click.Group):
    """A click group that reports SparseYoloError (and bad config values) on one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SparseYoloError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=ToolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sparse-yolo")
def main() -> None:
    """Find small objects in very large images at full resolution, sparsely.

    A cheap cell mask marks where objects can be; the YOLOv8 stem runs only on those
    cells at full resolution, and the rest of the network runs on windows around them.

    \b
    Examples:
      sparse-yolo detect frame.jpg -o frame.geojson --stats stats.json
      sparse-yolo detect scene.tif --to-wgs84 --preview preview.png
      sparse-yolo batch 'tiles/*.tif' -o out/ --workers 2 --resume
    """


for _command in (detect.detect, batch.batch, train.train, train.distill, compare.compare):
    main.add_command(_command)
