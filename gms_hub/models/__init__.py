"""The model and its files: what a GMS is, how it is saved, loaded and named.

- [`gms`](gms.py): `GMS`, the frozen autoencoder around the latent mapping model (`encode`, `decode_mask`, `segment`).
- [`lmm`](lmm.py): `LatentMappingModel`, the paper's network (the only trainable part).
- [`vae`](vae.py): loading the frozen autoencoder (Hub id, folder, single ldm file; KL or tiny).
- [`processing`](processing.py): tensors in and out: intensity rules, the paper's resize rule, the segment loop.
- [`coding`](coding.py): a model's classes and the colour coding of class masks (multi-class GMS).
- [`hub_mixin`](hub_mixin.py), [`serialization`](serialization.py), [`modelcard`](modelcard.py): saved-model files.
- [`reference`](reference.py): the paper's released checkpoints; [`convert`](convert.py) turns one into a folder.
- [`resolver`](resolver.py): `load_model(spec)`, which model a string names.

Import the modules directly (`from gms_hub.models.gms import GMS`) or use the top-level `gms_hub.GMS`.
"""
