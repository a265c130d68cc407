"""Model cards for saved GMS models: YAML metadata, usage, scores and the citation."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

CITATION = """@inproceedings{huo2025gms,
  title     = {Generative Medical Segmentation},
  author    = {Huo, Jiayu and Ouyang, Xi and Ourselin, S{\\'e}bastien and Sparks, Rachel},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  year      = {2025},
  note      = {arXiv:2403.18198}
}"""


def _metrics_table(metrics: Dict[str, Dict[str, Any]]) -> str:
    rows = ["| split | DSC (%) | IoU (%) | n |", "|---|---|---|---|"]
    for split, m in metrics.items():
        if not isinstance(m, dict) or "dsc_mean" not in m:
            continue
        dsc = f"{100 * m['dsc_mean']:.2f} ± {100 * m.get('dsc_std', 0.0):.2f}"
        iou = f"{100 * m['iou_mean']:.2f} ± {100 * m.get('iou_std', 0.0):.2f}" if "iou_mean" in m else "-"
        rows.append(f"| {split} | {dsc} | {iou} | {m.get('n', '-')} |")
    return "\n".join(rows)


def _classes_section(config: Dict[str, Any], metrics: Optional[Dict[str, Dict[str, Any]]]) -> Optional[str]:
    """The classes of a multi-class model, with per-class scores per split when the metrics have them."""
    if int(config.get("num_classes") or 1) < 2:
        return None
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    lines = [
        "## Classes\nA label map holds, per pixel, one of these class indices (the mask is decoded from one colour-coded "
        "image: `gms_hub.models.coding`):\n",
        "| index | label |", "|---|---|",
    ]
    lines += [f"| {index} | {label} |" for index, label in sorted(id2label.items())]
    for split, m in (metrics or {}).items():
        per_class = m.get("per_class") if isinstance(m, dict) else None
        if not per_class:
            continue
        lines += ["", f"Per-class scores on {split} (an image where the class is in neither map is left out):", "",
                  "| class | DSC (%) | IoU (%) | n |", "|---|---|---|---|"]
        for label, c in per_class.items():
            lines.append(f"| {label} | {100 * c['dsc_mean']:.2f} ± {100 * c.get('dsc_std', 0.0):.2f} | "
                         f"{100 * c['iou_mean']:.2f} ± {100 * c.get('iou_std', 0.0):.2f} | {c.get('n', '-')} |")
    return "\n".join(lines)


def title_name(dataset_name: Optional[str]) -> str:
    return f"GMS{' for ' + dataset_name if dataset_name else ''}"


def _eval_results(metrics: Dict[str, Dict[str, Any]], dataset_id: str, dataset_name: Optional[str]) -> List[EvalResult]:
    """Model-index entries (Hub metadata) for each split's mean DSC and IoU."""
    results = []
    for split, m in metrics.items():
        if not isinstance(m, dict) or "dsc_mean" not in m:
            continue
        for metric_type, key in (("dice", "dsc_mean"), ("mean_iou", "iou_mean")):
            if key in m:
                results.append(
                    EvalResult(
                        task_type="image-segmentation", dataset_type=dataset_id, dataset_name=dataset_name or dataset_id,
                        dataset_split=split, metric_type=metric_type, metric_value=round(float(m[key]), 6),
                    )
                )
    return results


def build_model_card(
    config: Dict[str, Any],
    base_data: Optional[ModelCardData] = None,
    *,
    datasets: Optional[List[str]] = None,
    metrics: Optional[Dict[str, Dict[str, Any]]] = None,
    selection_split: Optional[str] = None,
    training_command: Optional[str] = None,
    description: Optional[str] = None,
    license: Optional[str] = None,
    dataset_name: Optional[str] = None,
    repo_id: Optional[str] = None,
) -> ModelCard:
    """Build the README.md of a saved GMS.

    Args:
        config (`dict`): the model's `config.json` content.
        base_data (`ModelCardData`, *optional*): class-level metadata (library, pipeline tag, tags, licence).
        datasets (`list[str]`, *optional*): Hub dataset ids the model was trained on.
        metrics (`dict`, *optional*): per split, `{"dsc_mean", "dsc_std", "iou_mean", "iou_std", "n"}`, and for a
            multi-class model `"per_class"`: `{label: {"dsc_mean", "dsc_std", "iou_mean", "iou_std", "n"}}`.
        selection_split (`str`, *optional*): the split the checkpoint was selected on (`validation` or `test`).
        training_command (`str`, *optional*): the command that trained the model.
        description (`str`, *optional*): free markdown placed after the title.
        license (`str`, *optional*): overrides the default licence.
        dataset_name (`str`, *optional*): human-readable dataset name for the title.
        repo_id (`str`, *optional*): the Hub id used in the usage snippet.

    Returns:
        `huggingface_hub.ModelCard`.
    """
    data = _card_data(base_data, datasets, metrics, license, dataset_name, repo_id)
    sections = [
        f"# {title_name(dataset_name)}",
        description or (
            "Generative Medical Segmentation (GMS): the image is encoded by a frozen Stable Diffusion VAE, a small "
            "latent mapping model maps the image latent to a mask latent, and the same frozen VAE decodes the mask."
        ),
        _model_section(config),
        _usage_section(config, repo_id),
    ]
    classes = _classes_section(config, metrics)
    if classes:
        sections.append(classes)
    if metrics:
        sections.append(_evaluation_section(config, metrics, selection_split))
    if training_command:
        sections.append(f"## Training\n```bash\n{training_command}\n```")
    sections.append(
        "## Intended use\nResearch and education. Not a medical device; not for clinical decisions."
    )
    sections.append(f"## Citation\n```bibtex\n{CITATION}\n```")
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    return ModelCard(content)


def _card_data(
    base_data: Optional[ModelCardData], datasets: Optional[List[str]], metrics: Optional[Dict[str, Dict[str, Any]]],
    license: Optional[str], dataset_name: Optional[str], repo_id: Optional[str],
) -> ModelCardData:
    """The card's YAML metadata: the class-level metadata, the datasets, the licence and the model-index scores."""
    data = ModelCardData(**(base_data.to_dict() if base_data is not None else {}))
    data.library_name = "gms_hub"
    data.pipeline_tag = "image-segmentation"
    if license:
        data.license = license
    if datasets:
        data.datasets = list(datasets)
    if metrics:
        data.metrics = ["dice", "mean_iou"]
        data.eval_results = _eval_results(metrics, (datasets or [dataset_name or "unknown"])[0], dataset_name)
        data.model_name = repo_id or title_name(dataset_name)
    return data


def _model_section(config: Dict[str, Any]) -> str:
    """The frozen VAE (bundled or referenced), the mapping model's widths, the input size and threshold."""
    vae = config.get("vae")
    if config.get("vae_bundled"):
        vae_line = "bundled in `vae/` (loading needs no network)" + (f"; originally `{vae}`" if vae else "")
    else:
        revision = config.get("vae_revision") or "latest"
        vae_line = f"`{vae}` (subfolder `{config.get('vae_subfolder')}`, revision `{revision}`)"
    return (
        "## Model\n"
        f"- Frozen VAE: {vae_line}\n"
        f"- Latent mapping model: base channels {config.get('base_channels')}, channel multipliers "
        f"{tuple(config.get('channel_mult', ()))}; weights in `model.safetensors`\n"
        f"- Input size {config.get('image_size')}x{config.get('image_size')}, threshold {config.get('threshold')}"
    )


def _usage_section(config: Dict[str, Any], repo_id: Optional[str]) -> str:
    return (
        "## Usage\n```python\nfrom PIL import Image\nfrom gms_hub import GMS\n\n"
        f"model = GMS.from_pretrained(\"{repo_id or 'path/or/hub-id'}\")\n"
        "mask = model.segment(Image.open(\"image.png\"))  # "
        + ("uint8 label map (class indices) at the image's size" if int(config.get("num_classes") or 1) > 1
           else "bool array at the image's size") + "\n```"
    )


def _evaluation_section(
    config: Dict[str, Any], metrics: Dict[str, Dict[str, Any]], selection_split: Optional[str]
) -> str:
    """The protocol, how the checkpoint was selected, and the scores per split."""
    size = config.get("image_size")
    selection = {
        "test": "selected on the **test** split, as the reference implementation does (test scores are optimistic)",
        "validation": "selected on a validation split carved from the training set; the test set was used once",
    }.get(selection_split or "", f"selected on {selection_split}" if selection_split else "selection split not recorded")
    rule = "arg-max of the class probabilities" if int(config.get("num_classes") or 1) > 1 else "probability > 0.5"
    return (
        f"## Evaluation\nThe paper's protocol: {size}x{size} input, {rule}, ground truth resized to "
        f"{size}x{size} with nearest neighbour; per-image DSC and IoU, mean ± sample std. Checkpoint {selection}."
        "\n\n" + _metrics_table(metrics)
    )
