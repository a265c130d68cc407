"""Evaluation: the paper's metrics and protocol, calibration, and the folder a run writes.

- [`metrics`](metrics.py): DSC / IoU exactly as the paper computes them, and per class.
- [`calibration`](calibration.py): ECE, Brier, error AUROC, Spearman, reliability diagrams.
- [`protocol`](protocol.py): the protocol over a dataset split (batched, sharded) and its summary.
- [`report`](report.py): `evaluate_to_folder`: `metrics.json`, `per_image.csv`, `reliability.png`, masks.
"""
