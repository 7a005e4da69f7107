"""``python -m sparse_yolo``: the same tool as the ``sparse-yolo`` command."""

from sparse_yolo.cli import main

main(prog_name="sparse-yolo")
