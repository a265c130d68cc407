"""Multi-class GMS (num_classes > 1): config round trips (folder and local Hub server), segment outputs, the class
limit, the loss, the transforms and the fast path. The binary path is covered, unchanged, by the other tests."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gms_hub import GMS

try:
    from tests.hub_server import HubServer, hub_env, run_python
except ImportError:  # tests/ is not a package
    from hub_server import HubServer, hub_env, run_python

from conftest import TINY_GMS_KWARGS, make_tiny_vae

ID2LABEL = {0: "background", 1: "benign", 2: "malignant"}


def _model(seed: int = 0, **kwargs) -> GMS:
    torch.manual_seed(seed)
    return GMS(vae=make_tiny_vae(), num_classes=2, id2label=ID2LABEL, **TINY_GMS_KWARGS, **kwargs).eval()


def _pixels(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1  # (B, 3, 64, 64)


def test_forward_gives_class_probabilities_that_sum_to_one():
    probs = _model()(_pixels()).mask_probs
    assert probs.shape == (2, 3, 64, 64)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2, 64, 64), atol=1e-5)


def test_save_and_load_keeps_classes_with_int_keys(tmp_path, tiny_vae_dir):
    torch.manual_seed(0)
    model = GMS(vae=str(tiny_vae_dir), vae_subfolder=None, num_classes=2, id2label={"0": "background", "1": "benign",
                "2": "malignant"}, **TINY_GMS_KWARGS).eval()
    model.save_pretrained(tmp_path / "m", model_card_kwargs={"metrics": {"test": {
        "dsc_mean": 0.5, "dsc_std": 0.1, "iou_mean": 0.4, "iou_std": 0.1, "n": 3,
        "per_class": {"benign": {"dsc_mean": 0.6, "dsc_std": 0.1, "iou_mean": 0.5, "iou_std": 0.1, "n": 3},
                      "malignant": {"dsc_mean": 0.4, "dsc_std": 0.1, "iou_mean": 0.3, "iou_std": 0.1, "n": 2}}}}})
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["num_classes"] == 2 and saved["id2label"] == {"0": "background", "1": "benign", "2": "malignant"}
    card = (tmp_path / "m" / "README.md").read_text()
    assert "| 2 | malignant |" in card and "| malignant | 40.00 ± 10.00 |" in card
    loaded = GMS.from_pretrained(tmp_path / "m")
    assert loaded.num_classes == 2 and loaded.id2label == ID2LABEL
    x = _pixels()
    with torch.no_grad():
        assert torch.equal(loaded(x).mask_probs, model(x).mask_probs)


def test_binary_default_classes():
    model = GMS(vae=make_tiny_vae(), **TINY_GMS_KWARGS)
    assert model.num_classes == 1 and model.id2label == {0: "background", 1: "foreground"}
    assert model.config["id2label"] == {"0": "background", "1": "foreground"}


def test_more_classes_than_the_code_is_an_error_stating_the_limit():
    with pytest.raises(ValueError, match="at most 7 foreground classes"):
        GMS(vae=make_tiny_vae(), num_classes=8, **TINY_GMS_KWARGS)
    with pytest.raises(ValueError, match="num_classes=3 needs 4 entries"):
        GMS(vae=make_tiny_vae(), num_classes=3, id2label=ID2LABEL, **TINY_GMS_KWARGS)


def test_segment_label_maps_probabilities_and_uncertainty():
    model = _model()
    images = [np.random.default_rng(0).integers(0, 256, (30, 41), dtype=np.uint8),
              Image.new("RGB", (50, 20), (90, 30, 200))]
    labels, probs, uncertainty = model.segment(images, return_probabilities=True, return_uncertainty=True)
    for label, prob, unc, (h, w) in zip(labels, probs, uncertainty, [(30, 41), (20, 50)]):
        assert label.dtype == np.uint8 and label.shape == (h, w) and label.max() <= 2
        assert prob.dtype == np.float32 and prob.shape == (3, h, w)
        np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)
        np.testing.assert_array_equal(label, prob.argmax(axis=0))
        assert unc.dtype == np.float32 and unc.shape == (h, w) and 0.0 <= unc.min() and unc.max() <= 1.0
    # the uncertainty is the entropy of the class distribution / log 3 (checked at the model's own size)
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _, prob, unc = model.segment(image, return_probabilities=True, return_uncertainty=True)
    p = prob.astype(np.float64)
    np.testing.assert_allclose(unc, -(p * np.log(np.clip(p, 1e-30, 1))).sum(0) / np.log(3), atol=1e-4)
    single = model.segment(image, num_samples=2, tta=True, generator=torch.Generator().manual_seed(0))
    assert single.dtype == np.uint8 and single.shape == (64, 64)


def test_optimize_keeps_three_channels_for_multiclass():
    from gms_hub.inference.fast import optimize

    model, x = _model(), _pixels()
    with torch.no_grad():
        before = model(x).mask_probs
        optimize(model, channels_last=False)
        after = model(x).mask_probs
    assert model.fast_settings.fold_mask_mean is False and model.fast_settings.fast_upsample is True
    assert after.shape == (2, 3, 64, 64) and torch.allclose(after, before, atol=1e-4)


def test_loss_reaches_zero_dice_only_for_the_right_classes():
    from gms_hub.models.coding import encode_class_mask
    from gms_hub.training.losses import gms_loss, mask_latents

    model = _model()
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, 8:30, 8:30], masks[:, :, 36:60, 36:60] = 1, 2  # class indices as float
    out = gms_loss(model, _pixels(), masks)
    assert out.loss.requires_grad and out.dice.item() > 0
    expected = model.encode(encode_class_mask(masks[:, 0].long(), 2))
    assert torch.equal(mask_latents(model, masks.long()), expected)
    with pytest.raises(ValueError, match="fractional"):
        mask_latents(model, masks * 0.5)


def test_transforms_keep_class_indices(tmp_path):
    from gms_hub.data import EvalTransform, TrainTransform, augment_batch

    mask = np.zeros((40, 52), dtype=np.uint8)
    mask[5:20, 5:20], mask[22:38, 30:50] = 1, 2
    row = {"image": Image.new("RGB", (52, 40), (10, 20, 30)), "mask": Image.fromarray(mask, mode="L"), "name": "a"}
    train = TrainTransform(32, seed=0, num_classes=2)(row)
    assert set(train["masks"].unique().tolist()) == {0.0, 1.0, 2.0}
    evaluated = EvalTransform(32, num_classes=2)(row)
    assert set(evaluated["masks"].unique().tolist()) == {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(evaluated["orig_mask"], mask)
    _, augmented = augment_batch(torch.zeros(4, 3, 32, 32), evaluated["masks"][None].repeat(4, 1, 1, 1),
                                 generator=torch.Generator().manual_seed(0))
    assert set(augmented.unique().tolist()) <= {0.0, 1.0, 2.0}
    with pytest.raises(ValueError, match="num_classes=2 allows class indices 0..2"):
        EvalTransform(32, num_classes=2)({**row, "mask": Image.fromarray(mask * 100, mode="L")})


PUSH = """
import sys, torch
sys.path.insert(0, "tests")
from conftest import make_tiny_vae, TINY_GMS_KWARGS
from gms_hub import GMS
torch.manual_seed(0)
model = GMS(vae=make_tiny_vae(), num_classes=3, id2label={0: "background", 1: "a", 2: "b", 3: "c"}, **TINY_GMS_KWARGS)
model.push_to_hub("me/gms-multiclass", include_vae=True)
x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
with torch.no_grad():
    torch.save({"x": x, "probs": model(x).mask_probs}, r"{expected}")
"""

LOAD = """
import torch
from gms_hub import GMS
expected = torch.load(r"{expected}")
model = GMS.from_pretrained("me/gms-multiclass")
assert model.num_classes == 3 and model.id2label == {0: "background", 1: "a", 2: "b", 3: "c"}, model.id2label
with torch.no_grad():
    assert torch.equal(model(expected["x"]).mask_probs, expected["probs"])
print("loaded")
"""


def test_multiclass_model_round_trips_through_the_local_hub(tmp_path):
    server = HubServer(tmp_path / "hub_root").start()
    try:
        expected = tmp_path / "expected.pt"
        run_python(PUSH.replace("{expected}", str(expected)), hub_env(server.url, tmp_path / "hf_home"), timeout=240)
        result = run_python(LOAD.replace("{expected}", str(expected)), hub_env(server.url, tmp_path / "client"),
                            timeout=240)
        assert "loaded" in result.stdout
    finally:
        server.stop()
