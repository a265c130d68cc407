"""Model selection and the resumable state of a training run: scores on a split, the best weights so far,
`checkpoint-{step}` folders that carry them, and the trained model's card.

Every `--validation_epochs` `train/train.py` scores the model on the selection split ([`validate_and_select`]);
the best Dice is kept (ties keep the earlier model). Its weights travel in every checkpoint
([`save_training_checkpoint`]), so a resumed run selects the same model as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from . import checkpoints

logger = logging.getLogger(__name__)

#: The best LMM weights so far, stored in each checkpoint folder next to Accelerate's state.
BEST_WEIGHTS_FILE = "best_lmm.safetensors"
#: Written to the output folder at the end of training: scores per split, selection, history, command.
RESULTS_FILE = "training_results.json"


def evaluate_split(model, dataset, *, accelerator=None, batch_size: int = 8, threshold: Optional[float] = None,
                   num_workers: int = 0) -> Dict[str, Any]:
    """Protocol metrics (`dsc_mean`, `dsc_std`, `iou_mean`, `iou_std`, `n`) of `model` on one split, sharded over
    the processes of `accelerator`. Multi-class models score per class; `dsc_mean` is then the mean foreground-class
    Dice (see [`~gms_hub.evaluation.protocol.summarize_records`]).

    Args:
        model ([`GMS`]): the model, on its device.
        dataset (`datasets.Dataset`): the split.
        accelerator (`accelerate.Accelerator`, *optional*): shards the split and gathers the scores.
        batch_size (`int`, defaults to 8): images per forward pass on each process.
        threshold (`float`, *optional*): defaults to `model.threshold`.
        num_workers (`int`, defaults to 0): DataLoader workers.

    Returns:
        `dict`: the summary of [`~gms_hub.evaluation.protocol.summarize_records`].

    Example:
        >>> evaluate_split(model, eval_splits["validation"])["dsc_mean"]
    """
    from ..evaluation.protocol import evaluate_dataset, summarize_records

    records = evaluate_dataset(
        model, dataset, batch_size=batch_size, threshold=threshold, accelerator=accelerator,
        original_resolution=False, num_workers=num_workers,
    )
    return summarize_records(records)


def new_training_state(num_processes: int, select_on: str) -> Dict[str, Any]:
    """The resumable state of a run (saved in every checkpoint): step, position in the epoch, best model so far,
    validation history."""
    return {
        "global_step": 0, "epoch": 0, "batches_done": 0, "best": None, "history": [],
        "num_processes": num_processes, "select_on": select_on,
    }


def validate_and_select(
    accelerator,
    model,
    lmm: torch.nn.Module,
    dataset,
    state: Dict[str, Any],
    best_weights: Optional[Dict[str, torch.Tensor]],
    *,
    batch_size: int = 8,
    threshold: Optional[float] = None,
    num_workers: int = 0,
) -> Optional[Dict[str, torch.Tensor]]:
    """Score the current model on the selection split; keep its LMM weights if its Dice is the best so far.

    The score is appended to `state["history"]` and logged to the trackers; a new best replaces `state["best"]`.
    Ties keep the earlier model.

    Args:
        accelerator (`accelerate.Accelerator`): shards the evaluation, logs, unwraps `lmm`.
        model ([`GMS`]): the model whose LMM is being trained.
        lmm (`torch.nn.Module`): the LMM as prepared by Accelerate.
        dataset (`datasets.Dataset`): the selection split (`state["select_on"]`).
        state (`dict`): from [`new_training_state`], updated in place.
        best_weights (`dict`, *optional*): the best LMM state dict so far (on the CPU).
        batch_size, threshold, num_workers: as in [`evaluate_split`].

    Returns:
        `dict` or `None`: the best LMM state dict after this evaluation (a CPU copy when it is the current one).

    Example:
        >>> best_weights = validate_and_select(accelerator, model, lmm, eval_splits["validation"], state, best_weights)
    """
    split, epoch = state["select_on"], state["epoch"]
    metrics = evaluate_split(model, dataset, accelerator=accelerator, batch_size=batch_size, threshold=threshold,
                             num_workers=num_workers)
    entry = {"epoch": epoch, "step": state["global_step"], "split": split, **metrics}
    state["history"].append(entry)
    logs = {f"{split}/dsc": metrics["dsc_mean"], f"{split}/iou": metrics["iou_mean"]}
    logs.update({f"{split}/dsc_{label}": m["dsc_mean"] for label, m in metrics.get("per_class", {}).items()})
    accelerator.log(logs, step=state["global_step"])
    if accelerator.is_main_process:
        logger.info(f"epoch {epoch}: {split} DSC {metrics['dsc_mean']:.4f} IoU {metrics['iou_mean']:.4f}")
    if state["best"] is not None and metrics["dsc_mean"] <= state["best"]["dsc_mean"]:
        return best_weights  # ties keep the earlier model
    state["best"] = entry
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in accelerator.unwrap_model(lmm).state_dict().items()}


# ----------------------------------------------------------------------------------------------- checkpoints
def save_training_checkpoint(
    accelerator,
    output_dir: Union[str, os.PathLike],
    state: Dict[str, Any],
    best_weights: Optional[Dict[str, torch.Tensor]] = None,
    total_limit: Optional[int] = None,
) -> Path:
    """Write `checkpoint-{step}` atomically ([`gms_hub.training.checkpoints`]), with the best LMM weights so far.

    Args:
        accelerator (`accelerate.Accelerator`): saves the LMM, optimizer and RNG states; call on every process.
        output_dir (`str` or `os.PathLike`): where the checkpoint folders live.
        state (`dict`): the training state ([`new_training_state`]).
        best_weights (`dict`, *optional*): stored as `BEST_WEIGHTS_FILE`.
        total_limit (`int`, *optional*): keep only the newest `total_limit` checkpoints.

    Returns:
        `Path`: the checkpoint folder.

    Example:
        >>> save_training_checkpoint(accelerator, "gms-busi", state, best_weights, total_limit=3)
    """

    def write_best_weights(folder: Path) -> None:
        from safetensors.torch import save_file

        if best_weights is not None:
            save_file(best_weights, str(folder / BEST_WEIGHTS_FILE))

    return checkpoints.save_checkpoint(accelerator, output_dir, state, total_limit, write_best_weights)


def resume_training_state(accelerator, checkpoint: Union[str, os.PathLike]) -> Tuple[Dict[str, Any], Optional[Dict[str, torch.Tensor]]]:
    """Load a checkpoint written by [`save_training_checkpoint`] into `accelerator` (model, optimizer, RNGs).

    A checkpoint written by a different number of processes still loads, with a warning: training continues,
    but not in the same data order.

    Args:
        accelerator (`accelerate.Accelerator`): the run's accelerator, after `prepare`.
        checkpoint (`str` or `os.PathLike`): a complete `checkpoint-{step}` folder.

    Returns:
        `tuple`: the training state and the best LMM weights so far (`None` when not yet selected).

    Example:
        >>> state, best_weights = resume_training_state(accelerator, "gms-busi/checkpoint-580")
    """
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    accelerator.load_state(str(checkpoint))
    state = checkpoints.read_state(checkpoint)
    if state["num_processes"] != accelerator.num_processes and accelerator.is_main_process:
        logger.warning(
            f"{checkpoint} was written by {state['num_processes']} processes and this run has "
            f"{accelerator.num_processes}: training continues, but not in the same data order."
        )
    best_weights = load_file(str(checkpoint / BEST_WEIGHTS_FILE)) if (checkpoint / BEST_WEIGHTS_FILE).is_file() else None
    return state, best_weights


# ----------------------------------------------------------------------------------------------- model card
def training_card_kwargs(results: Dict[str, Any], *, dataset: str, select_on: str, command: str) -> Dict[str, Any]:
    """What a trained model's card says: metrics per split, the selection split (and what it implies), the command.

    Args:
        results (`dict`): `metrics` (per split), `best_epoch` and `best_step` of the run.
        dataset (`str`): the Hub dataset id or local folder trained on.
        select_on (`str`): the model-selection split.
        command (`str`): the training command line.

    Returns:
        `dict`: keyword arguments for `save_pretrained(..., model_card_kwargs=...)`.

    Example:
        >>> model.save_pretrained(out, model_card_kwargs=training_card_kwargs(results, dataset=d, select_on="validation", command=c))
    """
    if select_on == "test":
        note = "Selected on the **test** split, as the reference implementation does: the test scores are optimistic."
    else:
        note = "Selected on the validation split (carved from the paper's training list); the test split was used once."
    dataset_is_local = os.path.exists(dataset)
    kwargs = {
        "metrics": {split: {k: m[k] for k in ("dsc_mean", "dsc_std", "iou_mean", "iou_std", "n", "per_class") if k in m}
                    for split, m in results["metrics"].items()},
        "selection_split": select_on,
        "training_command": command,
        "dataset_name": Path(dataset).name if dataset_is_local else dataset,
        "description": (
            "Generative Medical Segmentation (GMS, Huo et al., AAAI 2025) trained with `gms_hub` (best "
            f"{select_on} Dice at epoch {results['best_epoch']}, step {results['best_step']}). {note}"
        ),
    }
    if not dataset_is_local:
        kwargs["datasets"] = [dataset]  # a Hub dataset id
    return kwargs
