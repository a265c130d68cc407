"""Reusable training code; `train/train.py` and `train/train_vae.py` wire it to Accelerate and argparse.

- [`recipe`](recipe.py): the paper's recipe for the latent mapping model, piece by piece (per-epoch learning rate,
  seeded data order, augmentation and latent noise, the step's loss).
- [`data`](data.py): the splits a run trains and selects on, from a `gms_hub` dataset or any Hub dataset with an
  image and a mask column, and the class names (binary or multi-class).
- [`selection`](selection.py): model selection and the resumable state of a run (best weights, checkpoints,
  the model card's contents).
- [`vae`](vae.py): training a small SD-layout VAE on images and masks (`train/train_vae.py`); import it as
  `gms_hub.training.vae`.
"""

from .data import load_training_splits, resolve_id2label
from .recipe import (
    SeededTrainDataset,
    begin_epoch,
    derived_seed,
    get_lr,
    prepare_model_for_training,
    seeded_rng,
    training_loss,
)
from .selection import (
    BEST_WEIGHTS_FILE,
    RESULTS_FILE,
    evaluate_split,
    new_training_state,
    resume_training_state,
    save_training_checkpoint,
    training_card_kwargs,
    validate_and_select,
)

__all__ = [
    "BEST_WEIGHTS_FILE",
    "RESULTS_FILE",
    "SeededTrainDataset",
    "begin_epoch",
    "derived_seed",
    "evaluate_split",
    "get_lr",
    "load_training_splits",
    "new_training_state",
    "prepare_model_for_training",
    "resolve_id2label",
    "resume_training_state",
    "save_training_checkpoint",
    "seeded_rng",
    "training_card_kwargs",
    "training_loss",
    "validate_and_select",
]
