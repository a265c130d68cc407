"""Training learns: `accelerate launch train/train.py` on the synthetic benchmark, with the demo model's small VAE
(which reconstructs masks well), raises validation Dice far above that of the untrained model.

About a minute on 2 CPU cores: 64 training images at 64 px, 6 epochs of 16 steps.
"""

import json

import numpy as np
import pytest
import torch

from tests._training_utils import TRAIN_SCRIPT, accelerate_command, run_launch, subprocess_env

pytestmark = pytest.mark.slow  # trains a GMS for several epochs (~50 s on 2 cores): opt-in with `-m slow`

IMAGE_SIZE = 64
NUM_TRAIN, NUM_VALIDATION = 64, 16
EPOCHS, BATCH_SIZE = 6, 4
LMM_KWARGS = dict(base_channels=16, channel_mult=(1, 1, 2, 2))


@pytest.fixture(scope="module")
def synthetic_benchmark(tmp_path_factory):
    from gms_hub.data import write_dataset_folder
    from gms_hub.data.synthetic import SYNTHETIC_CARD, make_synthetic_dataset

    root = tmp_path_factory.mktemp("learning")
    dataset = make_synthetic_dataset(
        num_train=NUM_TRAIN, num_validation=NUM_VALIDATION, num_test=4, seed=7, image_size=IMAGE_SIZE
    )
    write_dataset_folder(dataset, root / "data", card=SYNTHETIC_CARD)
    return root, dataset


def _dice(model, dataset):
    from gms_hub.evaluation.protocol import evaluate_dataset, summarize_records

    return summarize_records(evaluate_dataset(model, dataset, batch_size=8))["dsc_mean"]


def test_validation_dice_rises_far_above_the_untrained_model(synthetic_benchmark):
    from gms_hub import DEMO_MODEL_PATH, GMS
    from gms_hub.evaluation.metrics import dice_iou

    root, dataset = synthetic_benchmark
    demo = GMS.from_pretrained(DEMO_MODEL_PATH)  # float32
    vae = demo.vae

    # The VAE is good enough for the task: a ground-truth mask survives encode -> decode at this size.
    masks = torch.from_numpy(np.stack([np.asarray(m) > 0 for m in dataset["validation"]["mask"]]))  # (N, S, S)
    with torch.inference_mode():
        probs = demo.decode_mask(demo.encode(masks[:, None].float().expand(-1, 3, -1, -1) * 2 - 1))[:, 0]
    vae_dice = np.mean([dice_iou((p > 0.5).numpy(), g.numpy())[0] for p, g in zip(probs, masks)])
    assert vae_dice > 0.9, vae_dice

    torch.manual_seed(0)
    untrained = GMS(vae=vae, image_size=IMAGE_SIZE, **LMM_KWARGS).eval()
    start = _dice(untrained, dataset["validation"])

    output_dir = root / "run"
    command = accelerate_command(1) + [
        str(TRAIN_SCRIPT), "--dataset", str(root / "data"), "--output_dir", str(output_dir),
        "--vae", str(DEMO_MODEL_PATH), "--vae_subfolder", "vae", "--image_size", str(IMAGE_SIZE),
        "--base_channels", str(LMM_KWARGS["base_channels"]), "--channel_mult", *map(str, LMM_KWARGS["channel_mult"]),
        "--num_train_epochs", str(EPOCHS), "--train_batch_size", str(BATCH_SIZE), "--lr_warmup_epochs", "0",
        "--validation_epochs", "1", "--checkpointing_steps", "100000", "--report_to", "none", "--seed", "7",
    ]
    run_launch(command, subprocess_env(), timeout=600)

    results = json.loads((output_dir / "training_results.json").read_text())
    history = [entry["dsc_mean"] for entry in results["history"]]
    assert len(history) == EPOCHS
    best = max(history)
    assert best >= start + 0.3, (start, history)
    assert best >= 0.6, (start, history)
    assert history[-1] >= history[0], history  # it keeps learning after the first epoch

    # The saved model is the selected one and scores what training reported.
    trained = GMS.from_pretrained(output_dir).eval()
    assert _dice(trained, dataset["validation"]) == pytest.approx(best, abs=1e-6)
