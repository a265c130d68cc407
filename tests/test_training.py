"""gms_hub.training: the pieces of the training recipe, in process (the scripts are run end to end in
tests/test_train.py and tests/test_demo_model.py)."""

import math

import pytest
import torch

from gms_hub.training import (
    SeededTrainDataset, begin_epoch, derived_seed, get_lr, load_training_splits, seeded_rng, training_loss,
)
from tests._training_utils import make_tiny_gms


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """A tiny synthetic dataset folder (32 px) with train / validation / test."""
    from gms_hub.data import write_dataset_folder
    from gms_hub.data.synthetic import SYNTHETIC_CARD, make_synthetic_dataset

    root = tmp_path_factory.mktemp("training") / "data"
    write_dataset_folder(make_synthetic_dataset(num_train=8, num_validation=2, num_test=2, seed=0, image_size=32),
                         root, card=SYNTHETIC_CARD)
    return root


def test_learning_rate_schedule_is_the_papers():
    base = 2e-3
    for epoch in range(5):  # warm-up: base * e / 4
        assert get_lr(epoch, base, 1000) == pytest.approx(base * epoch / 4)
    for epoch in (5, 6, 500, 999):  # cosine: base * (1 + cos(pi (e - 5) / 995)) / 2
        assert get_lr(epoch, base, 1000) == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * (epoch - 5) / 995)))
    assert get_lr(0, base, 1000) == 0.0 and get_lr(1000, base, 1000) == pytest.approx(0.0, abs=1e-15)


def test_seeded_rng_restores_the_global_state():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with seeded_rng(derived_seed(1, 2, 3)):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)  # the block did not consume the global stream
    with seeded_rng(derived_seed(1, 2, 3)):
        assert torch.equal(torch.rand(3), inside)
    assert derived_seed(1, 2, 3) != derived_seed(1, 2, 4)


def test_augmentation_depends_only_on_seed_epoch_and_index(dataset_dir):
    from gms_hub.data import TrainTransform, load_gms_dataset

    split = load_gms_dataset(str(dataset_dir), split="train")
    dataset = SeededTrainDataset(split, TrainTransform(image_size=32), seed=5)
    first = dataset[3]["pixel_values"]
    torch.rand(100)  # global RNG history must not matter
    assert torch.equal(dataset[3]["pixel_values"], first)
    dataset.set_epoch(1)
    changed = [not torch.equal(dataset[i]["pixel_values"], SeededTrainDataset(split, TrainTransform(32), 5)[i]["pixel_values"])
               for i in range(8)]
    assert any(changed)  # a new epoch draws new augmentations


def test_begin_epoch_reaches_the_sampler_and_the_dataset_on_sharded_loaders():
    from accelerate.data_loader import prepare_data_loader

    class Indices(torch.utils.data.Dataset):
        epoch = 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return 16

        def __getitem__(self, index):
            return torch.tensor([index, self.epoch])

    dataset = Indices()
    loader = prepare_data_loader(
        torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=True, drop_last=True),
        num_processes=2, process_index=1, put_on_device=False, use_seedable_sampler=True, data_seed=0,
    )
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    orders = []
    for epoch in (0, 7):
        lr = begin_epoch(epoch, optimizer, loader, base_lr=2e-3, num_epochs=10)
        assert optimizer.param_groups[0]["lr"] == lr == get_lr(epoch, 2e-3, 10)
        batches = list(loader)
        assert all(int(b[:, 1].max()) == epoch for b in batches)  # the dataset saw the epoch (augmentation seeds)
        orders.append([int(i) for b in batches for i in b[:, 0]])
    assert orders[0] != orders[1] and len(orders[0]) == 8  # a new order each epoch; half the data per process


def test_training_loss_depends_on_the_batch_position_only():
    model = make_tiny_gms()
    generator = torch.Generator().manual_seed(0)
    batch = {"pixel_values": torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1,  # (2, 3, 32, 32)
             "masks": (torch.rand(2, 1, 32, 32, generator=generator) > 0.5).float()}  # (2, 1, 32, 32)
    position = dict(seed=3, epoch=1, batch_index=4, latent_noise_prob=1.0)  # always sample the posterior
    with torch.no_grad():
        first = training_loss(model, batch, **position).loss
        torch.rand(100)  # global RNG history must not matter
        assert torch.equal(training_loss(model, batch, **position).loss, first)
        other = training_loss(model, batch, **{**position, "batch_index": 5}).loss  # other noise
        mean = training_loss(model, batch, **{**position, "latent_noise_prob": 0.0}).loss  # no noise
        other_process = training_loss(model, batch, **position, process_index=1).loss
    assert not torch.equal(other, first) and not torch.equal(mean, first) and not torch.equal(other_process, first)


def test_missing_selection_split_is_an_error_that_says_what_to_do(tmp_path, dataset_dir):
    from gms_hub.data import load_gms_dataset, write_dataset_folder
    from gms_hub.data.synthetic import SYNTHETIC_CARD

    splits = {name: load_gms_dataset(str(dataset_dir), split=name) for name in ("train", "test")}
    write_dataset_folder(splits, tmp_path / "no_validation", card=SYNTHETIC_CARD)
    with pytest.raises(ValueError, match="--select_on test"):
        load_training_splits(str(tmp_path / "no_validation"), select_on="validation")
    train_split, eval_splits = load_training_splits(str(tmp_path / "no_validation"), select_on="test",
                                                    max_train_samples=3, max_eval_samples=1)
    assert len(train_split) == 3 and list(eval_splits) == ["test"] and len(eval_splits["test"]) == 1


def test_resume_latest_ignores_incomplete_checkpoints(tmp_path):
    from gms_hub.training.checkpoints import STATE_FILE, list_checkpoints, resolve_checkpoint

    for step in (3, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / STATE_FILE).write_text("{}")
    (tmp_path / ".checkpoint-20.tmp").mkdir()  # a crash while writing step 20
    (tmp_path / "checkpoint-30").mkdir()  # not written by the trainers (no state file)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-10"]
    assert resolve_checkpoint(tmp_path, "latest").name == "checkpoint-10"
    with pytest.raises(FileNotFoundError, match="checkpoint-30"):
        resolve_checkpoint(tmp_path, str(tmp_path / "checkpoint-30"))


def test_vae_batch_sampler_resumes_from_its_counter():
    from gms_hub.training.vae import SeededBatchSampler

    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)  # (6, 3, 16, 16)
    masks = torch.rand(6, 1, 16, 16) > 0.5  # (6, 1, 16, 16)
    sampler = SeededBatchSampler(images, masks, batch_size=2, resolution=8, random_crop=True, seed=1)
    draws = [sampler.sample() for _ in range(3)]
    resumed = SeededBatchSampler(images, masks, batch_size=2, resolution=8, random_crop=True, seed=1)
    resumed.load_state_dict({"batches_drawn": 2})
    torch.rand(100)  # global RNG history must not matter
    third = resumed.sample()
    assert torch.equal(third[0], draws[2][0]) and torch.equal(third[1], draws[2][1])
    assert third[0].shape == (2, 3, 8, 8) and not torch.equal(draws[0][0], draws[1][0])
