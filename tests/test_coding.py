"""Colour coding of class masks for multi-class GMS (gms_hub/models/coding.py)."""

import pytest
import torch

from gms_hub.models.coding import (
    CLASS_CODES,
    MAX_CODED_CLASSES,
    class_codes,
    decode_class_probabilities,
    encode_class_mask,
    foreground_probabilities,
    one_hot_foreground,
)


def _random_index_mask(num_classes, shape=(2, 9, 7), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes + 1, shape, generator=generator)


@pytest.mark.parametrize("num_classes", range(2, MAX_CODED_CLASSES + 1))
def test_round_trip_of_exact_codes_is_one_hot(num_classes):
    mask = _random_index_mask(num_classes)
    colours = encode_class_mask(mask, num_classes)  # (B, 3, H, W)
    assert colours.shape == (2, 3, 9, 7) and set(colours.unique().tolist()) <= {-1.0, 1.0}
    probs = decode_class_probabilities(colours, num_classes)  # (B, K+1, H, W)
    expected = torch.nn.functional.one_hot(mask, num_classes + 1).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    assert torch.equal(probs.argmax(1), mask)


def test_codes_are_distinct_corners_with_one_channel_per_class_up_to_three():
    assert len(set(CLASS_CODES)) == 8 and CLASS_CODES[0] == (0, 0, 0)
    assert class_codes(3).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert all(sum(code) == 1 for code in CLASS_CODES[1:4])
    encoded = encode_class_mask(torch.tensor([[[0, 1, 2, 3]]]), 3)[0, :, 0]  # (3, 4): channel x pixel
    assert encoded.tolist() == [[-1, 1, -1, -1], [-1, -1, 1, -1], [-1, -1, -1, 1]]


@pytest.mark.parametrize("num_classes", [2, 3, 7])
def test_probabilities_of_any_colour_sum_to_one(num_classes):
    decoded = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 1.5  # beyond [-1, 1] too
    probs = decode_class_probabilities(decoded, num_classes)
    assert probs.shape == (3, num_classes + 1, 8, 8)
    assert (probs >= 0).all() and (probs <= 1).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(3, 8, 8))


def test_ambiguous_colour_splits_between_nearest_classes():
    # Half-red on black: equally background and class 1, nothing for class 2 (green off).
    decoded = torch.tensor([0.0, -1.0, -1.0]).view(1, 3, 1, 1)
    probs = decode_class_probabilities(decoded, 2)[0, :, 0, 0]
    torch.testing.assert_close(probs, torch.tensor([0.5, 0.5, 0.0]), atol=1e-5, rtol=0)
    # Yellow is no class when K = 2: red and green share it.
    yellow = torch.tensor([1.0, 1.0, -1.0]).view(1, 3, 1, 1)
    probs = decode_class_probabilities(yellow, 2)[0, :, 0, 0]
    assert probs[0] < 1e-5 and abs(probs[1] - probs[2]) < 1e-6


def test_gradient_stops_outside_the_range_and_flows_inside():
    # As the paper's binary decoding: no gradient from a channel decoded beyond [-1, 1] (a straight-through clamp
    # pushed saturated pixels outwards without bound and wrecked training), a gradient towards the target inside.
    # Pixel 0 is (R, G, B) = (1.3, -1.0, -1.0), pixel 1 is (-1.2, 0.0, -1.0); both should be background.
    decoded = torch.tensor([[1.3, -1.2], [-1.0, 0.0], [-1.0, -1.0]]).view(1, 3, 1, 2).requires_grad_(True)
    soft = foreground_probabilities(decoded, 2)  # (1, 2, 1, 2)
    target = one_hot_foreground(torch.zeros(1, 1, 2, dtype=torch.long), 2)  # background at both pixels
    ((soft - target) ** 2).sum().backward()
    assert decoded.grad[0, 0, 0, 0] == 0 and decoded.grad[0, 0, 0, 1] == 0  # red channel at 1.3 and -1.2
    assert decoded.grad[0, 1, 0, 1] > 0  # green at 0.0, inside: lowering it lowers the loss


def test_foreground_outputs_match_one_hot_targets():
    mask = torch.tensor([[[0, 1], [2, 2]]])
    target = one_hot_foreground(mask, 2)  # (1, 2, 2, 2)
    assert target[0, 0].tolist() == [[0, 1], [0, 0]] and target[0, 1].tolist() == [[0, 0], [1, 1]]
    soft = foreground_probabilities(encode_class_mask(mask, 2), 2)
    torch.testing.assert_close(soft, target, atol=1e-5, rtol=0)


def test_half_precision_input_keeps_its_dtype():
    colours = encode_class_mask(_random_index_mask(3), 3, dtype=torch.float16)
    probs = decode_class_probabilities(colours, 3)
    assert probs.dtype == torch.float16 and torch.equal(probs.argmax(1), _random_index_mask(3))


def test_errors_name_the_limit_and_the_binary_path():
    mask = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="at most 7 foreground classes"):
        encode_class_mask(mask, 8)
    with pytest.raises(ValueError, match="at most 7"):
        decode_class_probabilities(torch.zeros(1, 3, 2, 2), 8)
    with pytest.raises(ValueError, match="binary model"):
        encode_class_mask(mask, 1)
    with pytest.raises(ValueError, match=r"0\.\.2 .*found \[0, 3\]"):
        encode_class_mask(torch.tensor([[[0, 3]]]), 2)
    with pytest.raises(ValueError, match="integer class indices"):
        encode_class_mask(torch.zeros(1, 2, 2), 2)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        decode_class_probabilities(torch.zeros(1, 1, 2, 2), 2)
