"""The per-image engine: window planning, the execution path ``auto`` picks, and the run.

* :mod:`~sparse_yolo.engine.windows`: dense windows that cover the active cells.
* :mod:`~sparse_yolo.engine.policy`: the cost model that picks sparse windows, every cell or
  plain dense per frame.
* :mod:`~sparse_yolo.engine.calibrate`: the per-device cost table behind it, cached.
* :mod:`~sparse_yolo.engine.runner`: :class:`SparseEngine`, which runs one or more frames.
"""

from sparse_yolo.engine.runner import SparseEngine, Timer

__all__ = ["SparseEngine", "Timer"]
