import numpy as np
import pytest
import torch
from PIL import Image

from gms_hub.models.processing import preprocess, to_float_rgb


def _rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: Image.fromarray(r.integers(0, 256, (37, 51), dtype=np.uint8), mode="L"),
        lambda r: Image.fromarray(r.integers(0, 256, (45, 29, 3), dtype=np.uint8), mode="RGB"),
        lambda r: Image.fromarray(r.integers(0, 256, (33, 70, 4), dtype=np.uint8), mode="RGBA"),
        lambda r: Image.fromarray(r.integers(0, 65535, (41, 23), dtype=np.uint16)),
        lambda r: r.integers(0, 256, (19, 91), dtype=np.uint8),
        lambda r: r.integers(0, 256, (19, 91, 1), dtype=np.uint8),
        lambda r: r.integers(0, 4000, (50, 31), dtype=np.uint16),
        lambda r: r.random((27, 35, 3), dtype=np.float32),
    ],
    ids=["pil-gray", "pil-rgb", "pil-rgba", "pil-16bit", "np-gray", "np-gray1", "np-uint16", "np-float"],
)
def test_segment_returns_mask_of_input_size(tiny_gms, make):
    image = make(_rng())
    mask = tiny_gms.segment(image)
    h, w = (image.size[1], image.size[0]) if isinstance(image, Image.Image) else image.shape[:2]
    assert mask.shape == (h, w) and mask.dtype == np.bool_


def test_list_in_list_out_and_probabilities(tiny_gms):
    images = [np.zeros((20, 30), np.uint8), np.full((40, 10, 3), 200, np.uint8)]
    masks, probs = tiny_gms.segment(images, return_probabilities=True)
    assert [m.shape for m in masks] == [(20, 30), (40, 10)]
    assert all(p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1 for p in probs)
    assert all(np.array_equal(m, p > 0.5) for m, p in zip(masks, probs))
    assert np.array_equal(tiny_gms.segment(images, threshold=0.0)[0], probs[0] > 0.0)


def test_batching_does_not_change_results(tiny_gms):
    r = _rng()
    images = [r.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8) for i in range(5)]
    one = tiny_gms.segment(images, batch_size=1, return_probabilities=True)[1]
    many = tiny_gms.segment(images, batch_size=4, return_probabilities=True)[1]
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(one, many))


def test_segment_matches_forward_on_preprocessed_input(tiny_gms):
    image = _rng().integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _, prob = tiny_gms.segment(image, return_probabilities=True)
    pixel_values = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    with torch.no_grad():
        expected = tiny_gms(pixel_values).mask_probs[0, 0].numpy()
    assert np.allclose(prob, expected, atol=1e-6)


def test_intensity_rules():
    u8 = np.array([[0, 255], [51, 102]], np.uint8)
    assert np.allclose(to_float_rgb(u8)[..., 0], u8 / 255)
    u16 = np.array([[1000, 3000], [2000, 1000]], np.uint16)
    assert np.allclose(to_float_rgb(u16)[..., 1], [[0, 1], [0.5, 0]])  # stretched min..max
    assert np.allclose(to_float_rgb(u16, value_range=(0, 4000))[..., 2], u16 / 4000)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 255
    assert to_float_rgb(rgba).shape == (2, 2, 3) and to_float_rgb(rgba).max() == 0  # alpha dropped


def test_preprocess_resize_is_bilinear_half_pixel_without_antialias():
    # A 2x downscale with half-pixel centres and no antialiasing averages each 2x2 block exactly.
    image = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    pixel_values, sizes = preprocess([image], image_size=2)
    expected = image.reshape(2, 2, 2, 2).mean(axis=(1, 3)) / 255 * 2 - 1
    assert sizes == [(4, 4)]
    assert np.allclose(pixel_values[0, 0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ("not an image", FileNotFoundError, "'not an image' is not a file"),  # a str is a path since issue 14
        (torch.zeros(3, 8, 8), TypeError, "torch.Tensor"),
        (np.zeros((0, 10), np.uint8), ValueError, "empty image"),
        (np.zeros((4, 5, 2), np.uint8), ValueError, r"\(H, W, 3\)"),
        (np.zeros((2, 4, 5, 3), np.uint8), ValueError, r"\(H, W, 3\)"),
        (np.zeros((4, 5), bool), TypeError, "dtype bool"),
        (np.full((4, 5), np.nan, np.float32), ValueError, "NaN"),
    ],
    ids=["string", "tensor", "empty", "two-channels", "4d", "bool", "nan"],
)
def test_bad_inputs_raise_clear_errors(tiny_gms, bad, error, message):
    with pytest.raises(error, match=message):
        tiny_gms.segment(bad)


def test_empty_list_and_bad_threshold(tiny_gms):
    with pytest.raises(ValueError, match="empty list"):
        tiny_gms.segment([])
    with pytest.raises(ValueError, match="threshold"):
        tiny_gms.segment(np.zeros((8, 8), np.uint8), threshold=1.5)
