"""Training: Ultralytics' trainer on a SparseYOLO, slim-neck distillation, the learned mask.

* :mod:`sparse_yolo.train.trainer` - ``sparse-yolo train`` (``TrainConfig``, ``train``).
* :mod:`sparse_yolo.train.model` - ``SparseDetectionModel``, the Ultralytics-facing wrapper.
* :mod:`sparse_yolo.train.spec` - sparse model YAMLs and weight transfer.
* :mod:`sparse_yolo.train.distill` - ``sparse-yolo distill`` (``DistillConfig``, ``distill``).
* :mod:`sparse_yolo.train.maskfit` - mask recall, threshold calibration, training from labels.
* :mod:`sparse_yolo.train.visdrone` - VisDrone through Ultralytics' own conversion.

Submodules are imported on use: importing this package loads nothing heavy.
"""
