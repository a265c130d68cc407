"""A stand-in for a multi-class GMS in CLI tests: the contract's `num_classes`, `id2label` and `segment`, with
label maps computed from the pixels by a rule the tests can recompute, and a record of every call."""

from __future__ import annotations

import csv
from typing import List

import numpy as np
import torch

from gms_hub.models.processing import to_float_rgb


def brightness_labels(frame, value_range, num_classes: int) -> np.ndarray:
    """Label k where the mean brightness lies in the k-th of num_classes + 1 equal bins."""
    gray = to_float_rgb(frame, value_range).mean(axis=-1)  # (H, W)
    return np.minimum((gray * (num_classes + 1)).astype(np.uint8), num_classes)


class StandInMultiClass:
    """Per the shared contract: uint8 (H, W) label maps, (K+1, H, W) probabilities, (H, W) uncertainty."""

    def __init__(self, num_classes: int = 2, id2label=None):
        self.num_classes = num_classes
        self.id2label = id2label or {0: "background", **{k: f"organ{k}" for k in range(1, num_classes + 1)}}
        self.device = torch.device("cpu")
        self.calls: List[int] = []  # frames per segment() call

    def segment(self, images, threshold=None, return_probabilities=False, value_range=None, batch_size=8,
                num_samples=0, tta=False, return_uncertainty=False, generator=None):
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        self.calls.append(len(items))
        masks = [brightness_labels(item, value_range, self.num_classes) for item in items]
        probs = [np.stack([(m == k).astype(np.float32) for k in range(self.num_classes + 1)]) for m in masks]
        uncertainty = [np.full(m.shape, 0.25, np.float32) for m in masks]
        outputs = [masks] + ([probs] if return_probabilities else []) + ([uncertainty] if return_uncertainty else [])
        outputs = [o[0] for o in outputs] if single else outputs
        return tuple(outputs) if len(outputs) > 1 else outputs[0]


def run_predict(*args) -> int:
    """The predict CLI in this process (`gms_hub.inference.predict.main`), every argument as a string."""
    from gms_hub.inference import predict

    return predict.main([str(a) for a in args])


def read_csv(path) -> List[dict]:
    """The rows of a CSV the CLI wrote, as dicts."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def use_stand_in(monkeypatch, id2label: dict) -> StandInMultiClass:
    """A `StandInMultiClass` with the classes of `id2label` (0 = background), which the predict CLI loads whatever
    `--model` names."""
    from gms_hub.inference import predict

    model = StandInMultiClass(num_classes=len(id2label) - 1, id2label=id2label)
    monkeypatch.setattr(predict, "load_model", lambda spec, device: model)
    return model
