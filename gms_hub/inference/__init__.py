"""Ways to run a model: batch prediction, uncertainty, exact fast paths, ONNX export and runtime.

- [`predict`](predict.py): the batch prediction CLI (`python -m gms_hub.predict`).
- [`uncertainty`](uncertainty.py): posterior sampling and test-time augmentation; predictive entropy.
- [`fast`](fast.py): `optimize`, exact rewrites of the decoder; optional compile and autocast.
- [`export`](export.py): ONNX export (`python -m gms_hub.export`); [`onnx_runtime`](onnx_runtime.py): `ONNXGMS`.
"""
