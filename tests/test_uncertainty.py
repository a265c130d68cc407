import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gms_hub.inference.uncertainty import (
    DIHEDRAL_TRANSFORMS, apply_transform, invert_transform, num_passes, predict_probabilities, predictive_entropy,
)


def _pixels(batch=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1  # (B, 3, S, S) in [-1, 1]


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


class _PixelwiseStandIn(torch.nn.Module):
    """A 'GMS' whose prediction is a pixel-wise function of the image: equivariant to every flip and turn.

    The posterior mean is the image itself (std 0), the LMM is the identity, the decoder a sigmoid of the
    channel mean; with real inverse mapping, TTA must then give exactly the plain prediction."""

    scaling_factor = 0.5

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # device / dtype
        self.lmm = lambda latents: {"out": latents}

    device = property(lambda self: self.anchor.device)
    dtype = property(lambda self: self.anchor.dtype)

    def encode_posterior(self, pixel_values):
        return SimpleNamespace(mean=pixel_values * 3.0, std=torch.zeros_like(pixel_values))

    def decode_mask(self, latents):
        return torch.sigmoid(latents / self.scaling_factor).mean(dim=1, keepdim=True)  # (B, 1, S, S)

    def forward(self, pixel_values):
        return SimpleNamespace(mask_probs=self.decode_mask(self.lmm(self.encode_posterior(pixel_values).mean
                                                                    * self.scaling_factor)["out"]))


# ------------------------------------------------------------------------------------------ the D4 transforms


def test_the_eight_transforms_are_distinct_and_inverted():
    x = torch.arange(25.0).reshape(1, 5, 5)
    images = {tuple(apply_transform(x, t).flatten().tolist()) for t in DIHEDRAL_TRANSFORMS}
    assert len(images) == 8 and DIHEDRAL_TRANSFORMS[0] == (0, False)
    # the paper augmentation's draws (hflip, vflip, quarter turns) generate exactly these 8
    generated = {tuple(torch.rot90(x.flip(-1) if h else x, k, (-2, -1)).flip(-2).flatten().tolist()) if v else
                 tuple(torch.rot90(x.flip(-1) if h else x, k, (-2, -1)).flatten().tolist())
                 for h in (0, 1) for v in (0, 1) for k in range(4)}
    assert generated == images
    for t in DIHEDRAL_TRANSFORMS:
        assert torch.equal(invert_transform(apply_transform(x, t), t), x)


def test_num_passes():
    assert [num_passes(0), num_passes(4), num_passes(0, True), num_passes(3, True)] == [1, 4, 8, 24]


# ------------------------------------------------------------------------------------------ predict_probabilities


def test_default_is_bit_identical_to_forward(tiny_gms):
    pixel_values = _pixels(3)
    with torch.no_grad():
        expected = tiny_gms(pixel_values).mask_probs
    assert torch.equal(predict_probabilities(tiny_gms, pixel_values), expected)


def test_one_sample_is_the_sampled_posterior_of_encode(tiny_gms):
    pixel_values = _pixels(1)
    with torch.no_grad():
        latents = tiny_gms.encode(pixel_values, sample_posterior=True, generator=_seeded(5))
        expected = tiny_gms.decode_mask(tiny_gms.lmm(latents)["out"])
    got = predict_probabilities(tiny_gms, pixel_values, num_samples=1, generator=_seeded(5))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("num_samples,tta", [(3, False), (0, True), (2, True)])
def test_shapes_ranges_and_seed_determinism(tiny_gms, num_samples, tta):
    pixel_values = _pixels(2)
    first = predict_probabilities(tiny_gms, pixel_values, num_samples=num_samples, tta=tta, generator=_seeded(1))
    again = predict_probabilities(tiny_gms, pixel_values, num_samples=num_samples, tta=tta, generator=_seeded(1))
    assert first.shape == (2, 1, 64, 64) and first.dtype == torch.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert torch.equal(first, again)
    plain = predict_probabilities(tiny_gms, pixel_values)
    assert not torch.allclose(first, plain, atol=1e-4)  # the extra passes change the average


def test_different_seeds_give_different_maps(tiny_gms):
    pixel_values = _pixels(1)
    a = predict_probabilities(tiny_gms, pixel_values, num_samples=2, generator=_seeded(1))
    b = predict_probabilities(tiny_gms, pixel_values, num_samples=2, generator=_seeded(2))
    assert (a - b).abs().max() > 1e-3


def test_chunking_does_not_change_the_result(tiny_gms):
    pixel_values = _pixels(2)
    kwargs = dict(num_samples=3, tta=True)
    one = predict_probabilities(tiny_gms, pixel_values, batch_size=1, generator=_seeded(3), **kwargs)
    many = predict_probabilities(tiny_gms, pixel_values, batch_size=10, generator=_seeded(3), **kwargs)
    assert torch.allclose(one, many, atol=1e-5)
    # noise is drawn image by image: the second image alone, after the first image's draws, gives the same map
    g = _seeded(3)
    predict_probabilities(tiny_gms, pixel_values[:1], generator=g, **kwargs)
    second = predict_probabilities(tiny_gms, pixel_values[1:], generator=g, **kwargs)
    assert torch.allclose(second, many[1:], atol=1e-5)


def test_tta_maps_each_prediction_back():
    model = _PixelwiseStandIn()
    pixel_values = _pixels(2, size=16)  # random, so no flip or turn leaves it unchanged
    plain = predict_probabilities(model, pixel_values)
    averaged = predict_probabilities(model, pixel_values, tta=True, batch_size=3)
    assert torch.allclose(averaged, plain, atol=1e-6)
    # without the inverse mapping the average would be that of the transformed predictions: far from `plain`
    unmapped = torch.stack([apply_transform(plain, t) for t in DIHEDRAL_TRANSFORMS]).mean(0)
    assert (unmapped - plain).abs().max() > 0.05


def test_passes_are_what_the_decoder_returns(tiny_gms, monkeypatch):
    """Uncertainty is 0 where every pass agrees and 1 where half the passes say 0 and half say 1."""
    calls = []

    def alternating_decode(latents):  # (c, 4, h, w) -> (c, 1, 8h, 8w): left half 1, right half 0/1 by pass
        out = torch.zeros(latents.shape[0], 1, latents.shape[-2] * 8, latents.shape[-1] * 8)
        out[..., : out.shape[-1] // 2] = 1.0
        for i in range(latents.shape[0]):
            out[i, ..., out.shape[-1] // 2 :] = float(len(calls) % 2)
            calls.append(i)
        return out

    monkeypatch.setattr(tiny_gms, "decode_mask", alternating_decode)
    probs = predict_probabilities(tiny_gms, _pixels(1), num_samples=4, generator=_seeded(0), batch_size=3)
    assert len(calls) == 4
    uncertainty = predictive_entropy(probs)
    assert torch.equal(probs[..., :32], torch.ones_like(probs[..., :32]))
    assert torch.equal(uncertainty[..., :32], torch.zeros_like(uncertainty[..., :32]))
    assert torch.allclose(probs[..., 32:], torch.full_like(probs[..., 32:], 0.5))
    assert torch.allclose(uncertainty[..., 32:], torch.ones_like(uncertainty[..., 32:]))


def test_argument_checks(tiny_gms):
    with pytest.raises(ValueError, match="square"):
        predict_probabilities(tiny_gms, torch.zeros(1, 3, 64, 32), tta=True)
    with pytest.raises(ValueError, match="num_samples"):
        predict_probabilities(tiny_gms, _pixels(1), num_samples=-1)
    with pytest.raises(ValueError, match="batch_size"):
        predict_probabilities(tiny_gms, _pixels(1), num_samples=2, batch_size=0)


# ------------------------------------------------------------------------------------------ predictive_entropy


def test_binary_entropy_matches_the_formula():
    p = torch.tensor([0.0, 0.1, 0.5, 0.7, 1.0])
    expected = [0.0] + [-(q * math.log(q) + (1 - q) * math.log(1 - q)) / math.log(2) for q in (0.1, 0.5, 0.7)] + [0.0]
    got = predictive_entropy(p)
    assert got.dtype == torch.float32 and torch.allclose(got, torch.tensor(expected), atol=1e-6)
    assert got[0].item() == 0.0 and not torch.signbit(got).any()
    as_numpy = predictive_entropy(p.numpy())
    assert isinstance(as_numpy, np.ndarray) and np.allclose(as_numpy, expected, atol=1e-6)


def test_multiclass_entropy_is_normalised_by_log_classes():
    probs = torch.zeros(4, 2, 2)  # K = 3 foreground classes + background
    probs[:, 0, 0] = 0.25  # uniform -> 1
    probs[2, 0, 1] = 1.0  # certain -> 0
    probs[:2, 1, :] = 0.5  # two classes split -> log 2 / log 4
    got = predictive_entropy(probs, num_classes=3)
    assert got.shape == (2, 2)
    assert torch.allclose(got, torch.tensor([[1.0, 0.0], [0.5, 0.5]]), atol=1e-6)
    with pytest.raises(ValueError, match="class probabilities"):
        predictive_entropy(torch.zeros(3, 2, 2), num_classes=3)


# ------------------------------------------------------------------------------------------ GMS.segment


def _images():
    r = np.random.default_rng(0)
    return [r.integers(0, 256, (40, 52, 3), dtype=np.uint8), r.integers(0, 256, (30, 20), dtype=np.uint8)]


def test_segment_defaults_are_unchanged(tiny_gms):
    images = _images()
    masks, probs = tiny_gms.segment(images, return_probabilities=True)
    explicit_masks, explicit_probs = tiny_gms.segment(images, return_probabilities=True, num_samples=0, tta=False)
    assert all(np.array_equal(a, b) for a, b in zip(masks, explicit_masks))
    assert all(np.array_equal(a, b) for a, b in zip(probs, explicit_probs))
    # and equal to the forward pass they came from
    from gms_hub.models.processing import preprocess, resize_probabilities

    pixel_values, sizes = preprocess(images, tiny_gms.image_size, None)
    with torch.no_grad():
        forward = tiny_gms(pixel_values).mask_probs
    assert all(np.array_equal(p, resize_probabilities(f, s).numpy()) for p, f, s in zip(probs, forward, sizes))


def test_segment_return_order_and_structure(tiny_gms):
    images = _images()
    kwargs = dict(num_samples=2, tta=True, generator=_seeded(0))
    masks, probs, uncertainty = tiny_gms.segment(images, return_probabilities=True, return_uncertainty=True, **kwargs)
    assert [u.shape for u in uncertainty] == [(40, 52), (30, 20)] == [m.shape for m in masks]
    assert all(u.dtype == np.float32 and 0.0 <= u.min() and u.max() <= 1.0 for u in uncertainty)
    assert all(np.array_equal(m, p > 0.5) for m, p in zip(masks, probs))
    # uncertainty is the normalised entropy of the averaged probability (before the bilinear resize)
    assert all(abs(float(u.max()) - float(predictive_entropy(p).max())) < 0.05 for u, p in zip(uncertainty, probs))
    mask, single_uncertainty = tiny_gms.segment(images[0], return_uncertainty=True, **dict(kwargs,
                                                                                            generator=_seeded(0)))
    assert isinstance(mask, np.ndarray) and mask.shape == single_uncertainty.shape == (40, 52)
    assert np.allclose(single_uncertainty, uncertainty[0], atol=1e-5)  # same seed, same first image
    only_masks = tiny_gms.segment(images, **dict(kwargs, generator=_seeded(0)))
    assert isinstance(only_masks, list) and all(np.array_equal(a, b) for a, b in zip(only_masks, masks))


def test_segment_uncertainty_is_the_resized_entropy_of_the_model_resolution_probability(tiny_gms):
    from gms_hub.models.processing import preprocess, resize_probabilities

    image = _images()[0]
    mask, uncertainty = tiny_gms.segment(image, return_uncertainty=True)
    assert np.array_equal(mask, tiny_gms.segment(image))
    pixel_values, sizes = preprocess([image], tiny_gms.image_size, None)
    with torch.no_grad():
        probs = tiny_gms(pixel_values).mask_probs  # (1, 1, 64, 64)
    expected = resize_probabilities(predictive_entropy(probs)[0], sizes[0]).numpy()  # (40, 52)
    assert np.allclose(uncertainty, expected, atol=1e-6)
    assert uncertainty.max() > 0.9  # the tiny random model is unsure: p is near 0.5 in places


def test_segment_seeds(tiny_gms):
    image = _images()[0]
    a = tiny_gms.segment(image, return_probabilities=True, num_samples=2, generator=_seeded(4))[1]
    b = tiny_gms.segment(image, return_probabilities=True, num_samples=2, generator=_seeded(4))[1]
    c = tiny_gms.segment(image, return_probabilities=True, num_samples=2, generator=_seeded(5))[1]
    assert np.array_equal(a, b) and np.abs(a - c).max() > 1e-3
