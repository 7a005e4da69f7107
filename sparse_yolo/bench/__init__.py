"""The benchmark harness: baseline runners, FLOP counting, memory metering, synthetic scenes.

Used by ``sparse-yolo compare`` and the scripts in ``tools/``; the inference path never
imports it.
"""
