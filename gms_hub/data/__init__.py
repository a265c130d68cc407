"""Datasets in the `gms_hub` schema: the paper's five benchmarks and a synthetic one, loading and transforms.

Every dataset has splits ``train``, ``validation``, ``test`` and columns ``image`` (RGB or L), ``mask``
(L, 0/255; class indices 0..K for multi-class data, whose names `load_id2label` reads), ``name`` plus
metadata. Convert raw downloads with ``python -m gms_hub.data.prepare``.
"""

from .hub import DatasetCardInfo, push_dataset_folder, write_dataset_folder
from .loading import load_gms_dataset, load_id2label
from .splits import carve_validation, load_split_lists
from .transforms import EvalTransform, TrainTransform, augment_batch, collate_batch

__all__ = [
    "DatasetCardInfo",
    "EvalTransform",
    "TrainTransform",
    "augment_batch",
    "carve_validation",
    "collate_batch",
    "load_gms_dataset",
    "load_id2label",
    "load_split_lists",
    "push_dataset_folder",
    "write_dataset_folder",
]
