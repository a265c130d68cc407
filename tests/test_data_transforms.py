"""Paper augmentation and evaluation preprocessing (gms_hub/data/transforms.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gms_hub.data.transforms import (
    EvalTransform,
    TrainTransform,
    apply_augmentation,
    augment_batch,
    collate_batch,
    sample_augment_params,
)


def _params(batch=1, **overrides):
    """Parameters with every operation off, then `overrides`."""
    params = sample_augment_params(batch, torch.Generator().manual_seed(0))
    off = dict(
        hflip=torch.zeros(batch, dtype=torch.bool), vflip=torch.zeros(batch, dtype=torch.bool),
        rot90_k=torch.zeros(batch, dtype=torch.long), jitter=torch.zeros(batch, dtype=torch.bool),
        ssr=torch.zeros(batch, dtype=torch.bool), angle=torch.zeros(batch), scale=torch.ones(batch),
        shift_x=torch.zeros(batch), shift_y=torch.zeros(batch),
    )
    for key, value in {**off, **overrides}.items():
        setattr(params, key, value)
    return params


ON = torch.ones(1, dtype=torch.bool)


def _asymmetric(height=12, width=20):
    """An image whose red channel is 1 exactly on an L-shaped mask (no symmetry), random elsewhere."""
    mask = torch.zeros(1, 1, height, width)
    mask[..., 2:9, 3:6] = 1
    mask[..., 7:9, 3:14] = 1
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1)) * 0.4
    image[:, 0:1] = torch.where(mask > 0, torch.ones_like(mask), image[:, 0:1])
    return image, mask


def _pil_pair(height=12, width=20):
    image, mask = _asymmetric(height, width)
    rgb = Image.fromarray((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return rgb, Image.fromarray(mask[0, 0].numpy().astype(np.uint8) * 255)


@pytest.mark.parametrize("flag, dim", [("hflip", -1), ("vflip", -2)])
def test_flip_moves_image_and_mask_together(flag, dim):
    image, mask = _asymmetric()
    out, out_mask = apply_augmentation(image, mask, _params(**{flag: ON}))
    torch.testing.assert_close(out, image.flip(dim))
    torch.testing.assert_close(out_mask, mask.flip(dim))


def test_quarter_turn_of_non_square_image_swaps_height_and_width():
    image, mask = _asymmetric(12, 20)
    out, out_mask = apply_augmentation(image, mask, _params(rot90_k=torch.tensor([1])))
    assert out.shape == (1, 3, 20, 12) and out_mask.shape == (1, 1, 20, 12)
    torch.testing.assert_close(out_mask, torch.rot90(mask, 1, dims=(-2, -1)))
    torch.testing.assert_close(out, torch.rot90(image, 1, dims=(-2, -1)))


def test_shift_scale_rotate_identity_and_quarter_turn_geometry():
    image, mask = _asymmetric(15, 15)
    same, same_mask = apply_augmentation(image, mask, _params(ssr=ON))
    torch.testing.assert_close(same, image, atol=1e-5, rtol=0)
    torch.testing.assert_close(same_mask, mask)
    turned, turned_mask = apply_augmentation(image, mask, _params(ssr=ON, angle=torch.tensor([90.0])))
    torch.testing.assert_close(turned, torch.rot90(image, 1, dims=(-2, -1)), atol=1e-5, rtol=0)  # counter-clockwise, as OpenCV
    torch.testing.assert_close(turned_mask, torch.rot90(mask, 1, dims=(-2, -1)))


def test_shift_fills_the_border_by_reflect_101():
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 3, 4, 8).contiguous()
    out, _ = apply_augmentation(ramp / 8, torch.zeros(1, 1, 4, 8), _params(ssr=ON, shift_x=torch.tensor([0.25])))
    expected = np.pad(np.arange(8.0), (2, 0), mode="reflect")[:8]  # numpy "reflect" is OpenCV's REFLECT_101
    np.testing.assert_allclose(out[0, 0, 0].numpy() * 8, expected, atol=1e-4)


def test_color_jitter_brightness_and_hue():
    image = torch.tensor([1.0, 0.2, 0.2]).view(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
    order = torch.tensor([[0, 1, 2, 3]])
    neutral = dict(jitter=ON, jitter_order=order, brightness=torch.ones(1), contrast=torch.ones(1),
                   saturation=torch.ones(1), hue=torch.zeros(1))
    out, _ = apply_augmentation(image, torch.zeros(1, 1, 2, 2), _params(**neutral))
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)
    darker, _ = apply_augmentation(image, torch.zeros(1, 1, 2, 2), _params(**{**neutral, "brightness": torch.tensor([0.9])}))
    torch.testing.assert_close(darker, image * 0.9)
    shifted, _ = apply_augmentation(image, torch.zeros(1, 1, 2, 2), _params(**{**neutral, "hue": torch.tensor([1 / 3])}))
    torch.testing.assert_close(shifted[0, :, 0, 0], torch.tensor([0.2, 1.0, 0.2]), atol=1e-5, rtol=0)


def test_random_augmentation_keeps_masks_binary_and_aligned():
    image, mask = _asymmetric(24, 32)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        params = sample_augment_params(1, generator)
        params.jitter = torch.zeros(1, dtype=torch.bool)  # keep the red marker intact
        out, out_mask = apply_augmentation(image, mask, params)
        assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
        assert out.min() >= 0 and out.max() <= 1
        marker = out[:, 0:1] > 0.7  # bilinear blurs the marker's edge; the mask is nearest
        agreement = (marker == (out_mask > 0)).float().mean().item()
        assert agreement > 0.9, f"mask and image disagree on {1 - agreement:.1%} of pixels with {params}"


def test_batched_augmentation_matches_augmenting_at_original_resolution():
    """Resize-then-`augment_batch` (GPU path) follows the geometry of augment-then-resize (the paper)."""
    height, width, size = 60, 120, 96
    mask = torch.zeros(1, 1, height, width)
    mask[..., 12:45, 15:60] = 1
    image = mask.expand(1, 3, height, width).clone()
    params = _params(ssr=ON, angle=torch.tensor([20.0]), scale=torch.tensor([1.05]), shift_x=torch.tensor([0.1]),
                     rot90_k=torch.tensor([1]), hflip=ON)
    _, reference = apply_augmentation(image, mask, params)
    reference = F.interpolate(reference, size=(size, size), mode="nearest")
    square_mask = F.interpolate(mask, size=(size, size), mode="nearest")
    square_image = square_mask.expand(1, 3, size, size) * 2 - 1
    sizes = torch.tensor([[height, width]])
    _, batched = apply_augmentation((square_image + 1) / 2, square_mask, params, sizes=sizes)
    _, naive = apply_augmentation((square_image + 1) / 2, square_mask, params)  # ignores the aspect ratio

    def iou(a, b):
        return ((a > 0) & (b > 0)).sum().item() / ((a > 0) | (b > 0)).sum().item()

    # Nearest-neighbour resampling in a different order moves edges by about a pixel: IoU ~0.96, not 1.
    # Warping the square without the aspect ratio turns the 20 degree rotation into a shear: IoU ~0.7.
    assert iou(batched, reference) > 0.92
    assert iou(naive, reference) < 0.8
    out, out_masks = augment_batch(square_image.repeat(4, 1, 1, 1), square_mask.repeat(4, 1, 1, 1), sizes.repeat(4, 1),
                                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, size, size) and set(out_masks.unique().tolist()) <= {0.0, 1.0}
    assert out.min() >= -1 and out.max() <= 1


def test_batch_of_non_square_images_cannot_take_quarter_turns():
    """Error path: a quarter turn would give one batch two shapes."""
    with pytest.raises(ValueError, match="resize them to a square first"):
        apply_augmentation(torch.rand(2, 3, 4, 6), torch.zeros(2, 1, 4, 6), _params(2, rot90_k=torch.tensor([0, 1])))


def test_train_transform_output_per_example_and_batched_columns():
    image, mask = _pil_pair()
    transform = TrainTransform(image_size=16, seed=0)
    single = transform({"image": image, "mask": mask, "name": "x"})
    assert single["pixel_values"].shape == (3, 16, 16) and single["pixel_values"].dtype == torch.float32
    assert single["masks"].shape == (1, 16, 16) and set(single["masks"].unique().tolist()) <= {0.0, 1.0}
    assert -1 <= single["pixel_values"].min() and single["pixel_values"].max() <= 1
    assert single["name"] == "x" and single["orig_size"] == (12, 20)
    columns = transform({"image": [image, image], "mask": [mask, mask], "name": ["a", "b"]})
    assert columns["name"] == ["a", "b"] and len(columns["pixel_values"]) == 2
    assert TrainTransform(16, seed=3)({"image": image, "mask": mask, "name": "x"})["masks"].equal(
        TrainTransform(16, seed=3)({"image": image, "mask": mask, "name": "x"})["masks"]
    )


def test_train_transform_without_augmentation_is_the_paper_resize():
    image, mask = _pil_pair()
    out = TrainTransform(image_size=16, augment=False)({"image": image, "mask": mask, "name": "x"})
    from gms_hub.models.processing import preprocess

    torch.testing.assert_close(out["pixel_values"], preprocess([image], 16)[0][0])
    expected = F.interpolate(torch.from_numpy(np.asarray(mask) / 255.0).float()[None, None], size=(16, 16), mode="nearest")
    torch.testing.assert_close(out["masks"], expected[0])


def test_eval_transform_uses_pil_nearest_for_the_ground_truth():
    image, mask = _pil_pair(37, 53)  # odd sizes: "nearest" and "nearest-exact" pick different pixels here
    out = EvalTransform(image_size=24)({"image": image, "mask": mask, "name": "x"})
    pil = np.asarray(mask.resize((24, 24), Image.NEAREST)) / 255.0 >= 0.5
    np.testing.assert_array_equal(out["masks"][0].numpy().astype(bool), pil)
    opencv_rule = F.interpolate(torch.from_numpy(np.asarray(mask) / 255.0)[None, None], size=(24, 24), mode="nearest")
    assert not np.array_equal(opencv_rule[0, 0].numpy() >= 0.5, pil), "sizes chosen so that the two rules differ"
    from gms_hub.models.processing import preprocess

    torch.testing.assert_close(out["pixel_values"], preprocess([image], 24)[0][0])
    assert out["orig_size"] == (37, 53) and out["orig_mask"].dtype == np.uint8
    np.testing.assert_array_equal(out["orig_mask"], np.asarray(mask) // 255)


def test_collate_batch_stacks_tensors_and_keeps_lists():
    image, mask = _pil_pair()
    examples = [EvalTransform(16)({"image": image, "mask": mask, "name": n}) for n in ("a", "b", "c")]
    batch = collate_batch(examples)
    assert batch["pixel_values"].shape == (3, 3, 16, 16) and batch["masks"].shape == (3, 1, 16, 16)
    assert batch["name"] == ["a", "b", "c"] and batch["orig_size"].tolist() == [[12, 20]] * 3
    assert isinstance(batch["orig_mask"], list) and batch["orig_mask"][0].shape == (12, 20)


def test_transforms_work_with_dataset_with_transform_and_dataloader():
    import datasets

    image, mask = _pil_pair()
    ds = datasets.Dataset.from_dict(
        {"image": [image] * 4, "mask": [mask] * 4, "name": list("abcd")},
        features=datasets.Features({"image": datasets.Image(), "mask": datasets.Image(), "name": datasets.Value("string")}),
    )
    loader = torch.utils.data.DataLoader(ds.with_transform(TrainTransform(16)), batch_size=2, collate_fn=collate_batch)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (2, 3, 16, 16) and batch["name"] == ["a", "b"]
    assert ds.with_transform(EvalTransform(16))[1]["orig_mask"].shape == (12, 20)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_augmentation_on_gpu_matches_cpu():
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    masks = (torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    sizes = torch.tensor([[450, 600]] * 8)
    params = sample_augment_params(8, torch.Generator().manual_seed(2))
    params.ssr = torch.ones(8, dtype=torch.bool)
    params.jitter = torch.ones(8, dtype=torch.bool)
    cpu_images, cpu_masks = apply_augmentation(images, masks, params, sizes=sizes)
    gpu_images, gpu_masks = apply_augmentation(images.cuda(), masks.cuda(), params.to("cuda"), sizes=sizes.cuda())
    torch.testing.assert_close(gpu_images.cpu(), cpu_images, atol=1e-4, rtol=0)
    assert (gpu_masks.cpu() != cpu_masks).float().mean() < 1e-3  # nearest ties may round differently
    out, out_masks = augment_batch(images.cuda() * 2 - 1, masks.cuda(), sizes.cuda(),
                                   generator=torch.Generator("cuda").manual_seed(0))
    assert out.is_cuda and set(out_masks.unique().tolist()) <= {0.0, 1.0}
