"""Ways to run a model: batch prediction, uncertainty, exact fast paths, ONNX export and runtime.

- [`predict`](predict.py): the batch prediction CLI (`python -m gms_hub.predict`); [`predictor`](predictor.py): its
  `Predictor` (batching, writing); [`jobs`](jobs.py): its inputs as jobs and their CSV rows; [`resume`](resume.py),
  [`sharding`](sharding.py), [`sources`](sources.py): resumable runs, processes, DataLoader workers and datasets.
- [`uncertainty`](uncertainty.py): posterior sampling and test-time augmentation; predictive entropy.
- [`fast`](fast.py): `optimize`, exact rewrites of the decoder; optional compile and autocast.
- [`export`](export.py): ONNX export (`python -m gms_hub.export`); [`onnx_runtime`](onnx_runtime.py): `ONNXGMS`.
"""
