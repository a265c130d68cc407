"""Dataset cards: what a card says about a dataset (`DatasetCardInfo`) and the ``README.md`` of a dataset folder
(`render_dataset_card`): YAML metadata (licence, task, configs, ``dataset_info``, ``id2label``), then
description, source and licence, splits, provenance and citation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Sequence

from ..models.modelcard import CITATION
from .parquet import SplitStats

__all__ = ["DatasetCardInfo", "render_dataset_card"]

GMS_CITATION = CITATION


@dataclass
class DatasetCardInfo:
    """What a dataset card says about a benchmark besides its counts.

    Args:
        pretty_name (`str`): human-readable name.
        license (`str`): Hub licence id (``cc0-1.0``, ``cc-by-nc-sa-4.0``, ``other``, ...).
        description (`str`, defaults to ``""``): markdown paragraph(s) on what the data is.
        source (`str`, *optional*): markdown on where the raw data comes from and under which terms.
        citation (`str`, *optional*): BibTeX of the dataset's paper.
        license_name (`str`, *optional*): short licence name when `license` is ``other``.
        license_link (`str`, *optional*): URL of the licence terms when `license` is ``other``.
        homepage (`str`, *optional*): where to download the raw data.
        tags (`Sequence[str]`, defaults to ``("medical",)``): Hub tags.
        task_categories (`Sequence[str]`, defaults to ``("image-segmentation",)``): Hub task categories.
        body (`str`, *optional*): extra markdown appended to the card (e.g. generation details).
    """

    pretty_name: str
    license: str
    description: str = ""
    source: Optional[str] = None
    citation: Optional[str] = None
    license_name: Optional[str] = None
    license_link: Optional[str] = None
    homepage: Optional[str] = None
    tags: Sequence[str] = ("medical",)
    task_categories: Sequence[str] = ("image-segmentation",)
    body: Optional[str] = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> "DatasetCardInfo":
        """Build from a dict with the same keys (unknown keys are an error, so typos do not vanish)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"Unknown dataset card keys {unknown}; expected some of {sorted(known)}.")
        return cls(**dict(mapping))


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def _mask_sentence(id2label: Optional[Mapping[int, str]]) -> str:
    if id2label is None or len(id2label) <= 2:
        sentence = "`mask` is a single-channel PNG with values exactly 0 (background) and 255 (foreground)"
        if id2label is not None:
            sentence += f"; the foreground class is `{id2label[1]}`"
        return sentence + "."
    classes = ", ".join(f"{index} = `{label}`" for index, label in sorted(id2label.items()))
    return (
        "`mask` is a single-channel PNG of class indices (" + classes + "); the names are in `id2label.json` "
        "and in this card's metadata (`id2label`)."
    )


def _split_provenance_lines(provenance: Mapping[str, Any]) -> list[str]:
    """What the card says about where the split comes from: the paper's lists, a given list, or fractions."""
    method = provenance.get("split_method", "paper")
    lines = []
    if method == "fractions":
        lines.append(
            f"Seeded split of all pairs (seed {provenance.get('seed')}): test fraction "
            f"{provenance.get('test_fraction')}, validation fraction {provenance.get('validation_fraction')} of "
            "the rest; names ranked by `sha256(f'{seed}:{name}')` (see `gms_hub.data.splits.carve_validation`), "
            "so the split depends only on the seed and the set of names."
        )
        return lines
    whose = "the paper's" if method == "paper" else "the given"
    if provenance.get("split_source"):
        lines.append(
            f"`train` + `validation` is exactly {whose} train list and `test` exactly its test list, read "
            f"from `{provenance['split_source']}` (sha256 `{provenance.get('split_sha256', '?')}`)."
        )
    if provenance.get("validation_names") is not None:
        stratify = provenance.get("stratify_by")
        lines.append(
            f"`validation` is a seeded {provenance.get('validation_fraction')} of {whose} train list "
            f"(seed {provenance.get('seed')}, {'stratified by `' + stratify + '`' if stratify else 'not stratified'}; "
            "names ranked by `sha256(f'{seed}:{name}')`, see `gms_hub.data.splits.carve_validation`). Select "
            "models on `validation` and touch `test` once"
            + ("; the paper itself selected on `test`." if method == "paper" else ".")
        )
    return lines


def render_dataset_card(
    info: DatasetCardInfo,
    features,
    stats: Sequence[SplitStats],
    provenance: Optional[Mapping[str, Any]] = None,
    id2label: Optional[Mapping[int, str]] = None,
) -> str:
    """The ``README.md`` of a dataset folder: YAML metadata, then description, source, splits, citation.

    Args:
        info (`DatasetCardInfo`): pretty name, licence, description, source, citation.
        features (`datasets.Features`): the columns (for ``dataset_info``).
        stats (`Sequence[SplitStats]`): what was written per split.
        provenance (`Mapping`, *optional*): split provenance: ``split_source``, ``split_sha256``,
            ``validation_fraction``, ``seed``, ``stratify_by``, ``validation_names``, ``command``;
            ``split_method`` (``"paper"`` by default, ``"list"`` for a user's split list, ``"fractions"``
            with ``test_fraction`` for a seeded split) and ``mask_encoding`` (what the masks were read as).
        id2label (`Mapping[int, str]`, *optional*): class names by mask value index (0 = background); recorded
            in the YAML metadata as ``id2label`` with string keys. `None` for the benchmarks' binary masks.

    Returns:
        `str`: the card text.
    """
    card_data = _card_metadata(info, features, stats, id2label)
    lines = _card_body(info, features, stats, provenance, id2label)
    return f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines)


def _card_metadata(info: DatasetCardInfo, features, stats: Sequence[SplitStats], id2label: Optional[Mapping[int, str]]):
    """The card's YAML metadata (`huggingface_hub.DatasetCardData`): licence, task, tags, size, one ``default``
    config with a data file pattern per split, ``id2label`` and the ``dataset_info`` of `datasets`."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    splits = SplitDict()
    for s in stats:
        splits.add(SplitInfo(name=s.name, num_bytes=s.num_bytes, num_examples=s.num_examples))
    dataset_info = DatasetInfo(
        features=features,
        splits=splits,
        download_size=sum(s.download_size for s in stats),
        dataset_size=sum(s.num_bytes for s in stats),
    )
    extra = {k: v for k, v in (("license_name", info.license_name), ("license_link", info.license_link)) if v}
    card_data = DatasetCardData(
        license=info.license,
        task_categories=list(info.task_categories),
        task_ids=["semantic-segmentation"],
        tags=list(info.tags),
        pretty_name=info.pretty_name,
        size_categories=[_size_category(sum(s.num_examples for s in stats))],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s.name, "path": f"data/{s.name}-*"} for s in stats],
            }
        ],
        **extra,
    )
    if id2label is not None:
        card_data.id2label = {str(index): label for index, label in sorted(id2label.items())}
    DatasetInfosDict({"default": dataset_info}).to_dataset_card_data(card_data)
    return card_data


def _card_body(info: DatasetCardInfo, features, stats: Sequence[SplitStats], provenance: Optional[Mapping[str, Any]],
               id2label: Optional[Mapping[int, str]]) -> list[str]:
    """The card's markdown lines: title, description and schema, source and licence, splits, provenance, extra
    body, citation."""
    lines = [f"# {info.pretty_name}", ""]
    if info.description:
        lines += [info.description.strip(), ""]
    columns = ", ".join(f"`{name}`" for name in features)
    lines += [
        "Converted to the `gms_hub` schema: splits `train`, `validation`, `test`; columns " + columns + ". "
        + _mask_sentence(id2label),
        "",
        "```python",
        "from gms_hub.data import load_gms_dataset",
        'train = load_gms_dataset("<this repo id or folder>", split="train")',
        "```",
        "",
    ]
    if info.source or info.homepage:
        lines += ["## Source and licence", ""]
        if info.homepage:
            lines += [f"Raw data: {info.homepage}", ""]
        if info.source:
            lines += [info.source.strip(), ""]
        licence = info.license_name or info.license
        lines += [f"Licence: `{licence}`" + (f" ({info.license_link})" if info.license_link else "") + ".", ""]
    lines += ["## Splits", "", "| split | examples |", "|---|---|"]
    lines += [f"| {s.name} | {s.num_examples} |" for s in stats]
    lines.append("")
    if provenance:
        lines += _provenance_section(provenance)
    if info.body:
        lines += [info.body.strip(), ""]
    lines += ["## Citation", ""]
    if info.citation:
        lines += ["Dataset:", "", "```bibtex", info.citation.strip(), "```", ""]
    lines += ["GMS (split lists, conversion):", "", "```bibtex", GMS_CITATION, "```", ""]
    return lines


def _provenance_section(provenance: Mapping[str, Any]) -> list[str]:
    """The card's "Provenance" lines: the split, scan frames, mask encoding, command, validation names."""
    lines = ["## Provenance", ""]
    lines += _split_provenance_lines(provenance)
    if provenance.get("scan_frames"):
        lines.append(str(provenance["scan_frames"]))
    series = provenance.get("dicom_series")
    if series:
        listed = ", ".join(f"`{name}` ({entry['slices']} slices)" for name, entry in series["series"].items())
        lines.append(f"DICOM series as volumes: {series['rule']} Series: {listed}.")
    if provenance.get("mask_encoding"):
        lines.append(f"Masks were read as: {provenance['mask_encoding']}.")
    if provenance.get("command"):
        lines += ["", "Converted with:", "", "```bash", str(provenance["command"]), "```"]
    if provenance.get("validation_names") is not None:
        names = ", ".join(provenance["validation_names"])
        lines += ["", "<details><summary>Validation names</summary>", "", names, "", "</details>"]
    lines.append("")
    return lines
