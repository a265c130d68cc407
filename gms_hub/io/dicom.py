"""DICOM in (pydicom, frames decoded one batch at a time) and DICOM SEG out (highdicom).

Only technical attributes (transfer syntax, photometric interpretation, SOP class, sizes) ever reach a
message or a log line; the dataset, which holds patient data, is kept for the SEG's references only.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing, iter_pixels

from .medical import FrameSequence, MedicalImage, MedicalImageError, PathLike, check_masks, normalise
from .safety import atomic_path, describe_error, muted_loggers

logger = logging.getLogger(__name__)

PIXEL_DATA_TAG = 0x7FE00010
DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: offsets are in the inflated stream
DEFER_SIZE = 1 << 20  # elements over 1 MiB (the pixel data) stay on disk until decoded

# pip packages that provide pydicom decoders, by the names pydicom gives its plugins.
PLUGIN_PACKAGES = {
    "pylibjpeg": "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg",
    "pyjpegls": "pyjpegls",
    "gdcm": "python-gdcm",
    "pillow": "pillow",
}

# Attributes of the Modality LUT and VOI LUT modules, which enhanced multi-frame files keep per frame.
_PIXEL_MODULE = ("PhotometricInterpretation", "BitsStored", "BitsAllocated", "PixelRepresentation")
_RESCALE = ("RescaleSlope", "RescaleIntercept", "RescaleType")
_WINDOW = ("WindowCenter", "WindowWidth", "VOILUTFunction")


def _error(path: Path, message: str) -> MedicalImageError:
    return MedicalImageError(f"'{path.name}': {message}")


def _check_decodable(path: Path, ds: Dataset) -> None:
    """Raise if no installed plugin decodes the transfer syntax, naming the syntax and the package."""
    from pydicom.pixels import get_decoder

    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid is None:
        return  # implicit little endian without meta: native, always decodable
    syntax = f"{uid.name} ({uid})"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise _error(path, f"pydicom cannot decode the transfer syntax {syntax} with any plugin. Transcode the "
                     "file to an uncompressed or JPEG syntax (e.g. `gdcmconv --raw` or dcmtk's `dcmdjpeg`).") from None
    if not decoder.is_available:
        plugins = {text.split(" - ")[0].strip() for text in decoder.missing_dependencies}
        missing = sorted({PLUGIN_PACKAGES.get(name, name) for name in plugins} or {"pylibjpeg pylibjpeg-libjpeg"})
        raise _error(path, f"the transfer syntax {syntax} needs a decoding plugin that is not installed. "
                     f"Install one of: {'; '.join(f'pip install {m}' for m in missing)}.")


def _decode_error(path: Path, ds: Dataset, start: int, stop: int, err: Exception) -> MedicalImageError:
    """The one-line error for frames no decoder could read: the cause in our words, and the fix."""
    text = str(err)
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if "exceptions were raised by all available plugins" in text and uid is not None:
        # pydicom tried every installed plugin: the syntax (and its bit depth) is the cause, not the file.
        tried = [line.split(":")[0].strip() for line in text.splitlines()[1:] if ":" in line]
        bits = int(ds.get("BitsStored", 8))
        depth = f" with {bits}-bit samples" if uid.name.startswith("JPEG") and bits > 8 else ""
        # DCMTK's dcmdjpeg decodes 12-bit JPEG that pydicom's plugins refuse (pydicom's JPEG-lossy.dcm, checked).
        return _error(path, f"no installed decoder reads its {uid.name} ({uid}) frames{depth} (tried: "
                      f"{', '.join(tried) or 'none'}). DCMTK decodes it: `dcmdjpeg {path.name} decoded.dcm` (package "
                      "dcmtk: apt, conda or brew) writes an uncompressed copy that this reads.")
    return _error(path, f"frames {start + 1}..{stop} cannot be decoded ({describe_error(err)}). The file may be "
                  "truncated or corrupt; export it again.")  # the kind of error only: its text may quote a value


class _ThirdPartyRecords(logging.Filter):
    """Drops two kinds of third-party log records: highdicom's `copy <IE>-related attributes from dataset
    "<SOP Instance UID>"` (a UID identifies a study and stays out of logs like any other header value), and the
    traceback pydicom logs for each decoder plugin that fails (the failure comes back as one error, `_decode_error`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "highdicom.base":
            return not (isinstance(record.msg, str) and record.msg.startswith("copy ") and "from dataset" in record.getMessage())
        return record.exc_info is None


for _name in ("highdicom.base", "pydicom.pixels.decoders.base"):
    if not any(isinstance(f, _ThirdPartyRecords) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_ThirdPartyRecords())


def _functional_group_value(ds: Dataset, index: int, sequence: str, keyword: str):
    """A per-frame value of an enhanced multi-frame file: per-frame group first, then the shared group."""
    for groups, item_index in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        inner = items[item_index].get(sequence) if items and item_index < len(items) else None
        if inner and keyword in inner[0]:
            return inner[0].get(keyword)
    return None


def _frame_view(ds: Dataset, index: int, window: Optional[Tuple[float, float]]) -> Dataset:
    """The attributes that decide frame `index`'s intensities, gathered in one small dataset.

    Enhanced multi-frame files keep rescale and window in functional groups; the pydicom LUT functions read
    them at the top level, so they are copied there. `window` replaces the file's VOI.
    """
    view = Dataset()
    for keyword in _PIXEL_MODULE + ("ModalityLUTSequence",):
        if keyword in ds:
            setattr(view, keyword, ds[keyword].value)
    for keyword in _RESCALE:
        value = ds.get(keyword, _functional_group_value(ds, index, "PixelValueTransformationSequence", keyword))
        if value is not None:
            setattr(view, keyword, value)
    if window is not None:
        view.WindowCenter, view.WindowWidth, view.VOILUTFunction = window[0], window[1], "LINEAR"
        return view
    if ds.get("VOILUTSequence"):
        view.VOILUTSequence = ds.VOILUTSequence
        view.file_meta = ds.file_meta if hasattr(ds, "file_meta") else Dataset()
    for keyword in _WINDOW:
        value = ds.get(keyword, _functional_group_value(ds, index, "FrameVOILUTSequence", keyword))
        if value is not None:
            setattr(view, keyword, value)
    return view


def _grayscale_to_unit(arr: np.ndarray, view: Dataset) -> np.ndarray:
    """Modality LUT / rescale, then VOI LUT or window (else min..max), then [0, 1]; MONOCHROME1 inverted."""
    values = apply_modality_lut(arr, view)
    if view.get("VOILUTSequence"):
        descriptor = view.VOILUTSequence[0].LUTDescriptor
        ints = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
        out = apply_voi(ints, view)
        first = int(descriptor[1])
        lo, hi = apply_voi(np.array([first, first + (int(descriptor[0]) or 1 << 16) - 1]), view).astype(float)
    elif "WindowCenter" in view and "WindowWidth" in view:
        out = apply_windowing(values, copy.copy(view))
        # pydicom maps below/above the window to its output bounds; those bounds are our 0 and 1.
        lo, hi = apply_windowing(np.array([-np.inf, np.inf]), copy.copy(view))
    else:
        out, lo, hi = values, float(np.min(values)), float(np.max(values))
    unit = normalise(out, lo, hi)
    if view.PhotometricInterpretation == "MONOCHROME1":
        unit = np.subtract(1.0, unit, out=unit)
    return unit


def _colour_to_unit(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return normalise(rgb, 0.0, 2.0**bits - 1)
    # RGB, and YBR_* which pydicom's decoders already returned as RGB (as_rgb=True).
    return normalise(arr, 0.0, 2.0 ** int(ds.BitsStored) - 1)


def _number_of_frames(path: Path, ds: Dataset) -> int:
    """Number of Frames (1 when absent), or an error saying the attribute is not a whole number."""
    try:
        value = ds.get("NumberOfFrames")
        return 1 if value is None or str(value).strip() == "" else int(str(value).strip())
    except (ValueError, TypeError):
        raise _error(path, "the Number of Frames attribute is not a whole number; the file is corrupt or was edited. "
                     "Export it again from the source.") from None


def pixel_spacing(ds: Dataset) -> Optional[Tuple[float, float]]:
    """(row, column) spacing in mm: Pixel Spacing (top level or functional groups), Imager Pixel Spacing, or a
    single ultrasound region calibrated in cm; `None` when none is present."""
    value = ds.get("PixelSpacing", _functional_group_value(ds, 0, "PixelMeasuresSequence", "PixelSpacing"))
    value = value if value is not None else ds.get("ImagerPixelSpacing")
    if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
        return float(value[0]), float(value[1])
    regions = ds.get("SequenceOfUltrasoundRegions") or []
    deltas = {
        (float(r.PhysicalDeltaY), float(r.PhysicalDeltaX)) for r in regions
        if r.get("PhysicalUnitsXDirection") == 3 and r.get("PhysicalUnitsYDirection") == 3  # 3 = cm
        and "PhysicalDeltaX" in r and "PhysicalDeltaY" in r
    }
    if len(deltas) == 1:
        dy, dx = deltas.pop()
        if dy > 0 and dx > 0:
            return abs(dy) * 10.0, abs(dx) * 10.0
    return None


def read_dicom(path: PathLike, *, window: Optional[Tuple[float, float]] = None) -> MedicalImage:
    """Open a DICOM file; its frames are decoded on demand. See `gms_hub.io.reading.read_medical_image`.

    Args:
        path (`str` or `os.PathLike`): the DICOM file.
        window (`tuple(float, float)`, *optional*): (center, width) overriding the file's VOI.

    Returns:
        `MedicalImage` with `kind="dicom"`, one frame per DICOM frame.

    Example:
        >>> image = read_dicom(pydicom.data.get_testdata_file("CT_small.dcm"))
        >>> image.num_frames, image.spacing
        (1, (0.661468, 0.661468))
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_SIZE)
    except InvalidDicomError:
        raise _error(path, "not a DICOM Part 10 file (no 'DICM' preamble). Export it from the scanner or "
                     "PACS as a DICOM file.") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise _error(path, f"the DICOM header cannot be read ({type(err).__name__}); the file is probably "
                     "truncated or corrupt. Export or copy it again.") from None

    sop = ds.get("SOPClassUID")
    kind = f"a {sop.name} object" if sop is not None else "this object"
    raw = ds._dict.get(PIXEL_DATA_TAG)
    if raw is None:
        raise _error(path, f"{kind} has no Pixel Data (structured reports, RT plans and the like hold no image) "
                     "or the file is truncated before it. Segment an image object (CT, MR, US, XC, SC ...).")
    length = getattr(raw, "length", None)
    value_tell = getattr(raw, "value_tell", None)
    deflated = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")) == DEFLATED_SYNTAX
    if (not deflated and length is not None and length != 0xFFFFFFFF and value_tell is not None
            and value_tell + length > path.stat().st_size):
        raise _error(path, f"the pixel data is truncated ({path.stat().st_size - value_tell} of {length} bytes "
                     "present). Copy or export the file again.")
    for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if keyword not in ds:
            raise _error(path, f"the Image Pixel attribute {keyword} is missing; the file cannot be decoded. "
                         "Export it again from the source.")
    num_frames = _number_of_frames(path, ds)
    if num_frames < 1 or int(ds.Rows) == 0 or int(ds.Columns) == 0:
        raise _error(path, f"the file holds no image ({num_frames} frames of {ds.Rows}x{ds.Columns}). "
                     "Export a file with at least one frame.")
    _check_decodable(path, ds)
    del ds[PIXEL_DATA_TAG]  # keep metadata only; frames are decoded from the file

    photometric = str(ds.PhotometricInterpretation)
    colour = photometric == "PALETTE COLOR" or int(ds.get("SamplesPerPixel", 1)) == 3
    if colour and window is not None:
        logger.warning("'%s' is %s colour; the window applies to grayscale only and is ignored.", path.name, photometric)
    shared_view = None
    if not colour and "PerFrameFunctionalGroupsSequence" not in ds:
        shared_view = _frame_view(ds, 0, window)

    def read_batch(start: int, stop: int) -> List[np.ndarray]:
        frames = []
        try:
            source = pydicom.dcmread(path) if deflated else path  # a deflated file is decoded from memory
            for offset, arr in enumerate(iter_pixels(source, indices=range(start, stop))):
                if colour:
                    frames.append(_colour_to_unit(arr, ds))
                else:
                    frames.append(_grayscale_to_unit(arr, shared_view or _frame_view(ds, start + offset, window)))
        except MedicalImageError:
            raise
        except Exception as err:  # decoders raise many types; the user needs the file and the fix
            raise _decode_error(path, ds, start, stop, err) from None
        return frames

    return MedicalImage(
        path=path, kind="dicom", frames=FrameSequence(num_frames, read_batch), spacing=pixel_spacing(ds),
        shape=(num_frames, int(ds.Rows), int(ds.Columns)) + ((3,) if colour else ()), dataset=ds,
        slice_spacing=multiframe_slice_spacing(ds) if num_frames > 1 else None,
    )


def multiframe_slice_spacing(ds: Dataset) -> Optional[float]:
    """Distance in mm between the frames of an enhanced multi-frame file: the mean step of the per-frame
    Image Position (Patient) along the slice normal, else Spacing Between Slices; `None` when the file says
    neither (cine, where frames are times, not slices)."""
    orientation = _functional_group_value(ds, 0, "PlaneOrientationSequence", "ImageOrientationPatient")
    orientation = orientation if orientation is not None else ds.get("ImageOrientationPatient")
    frames = ds.get("PerFrameFunctionalGroupsSequence") or []
    positions = [_functional_group_value(ds, k, "PlanePositionSequence", "ImagePositionPatient")
                 for k in range(len(frames))]
    if orientation is not None and len(positions) > 1 and all(p is not None for p in positions):
        row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
        along = np.asarray(positions, float) @ np.cross(row, col)
        steps = np.abs(np.diff(along))
        if steps.size and steps.min() > 0:
            return float(steps.mean())
    value = ds.get("SpacingBetweenSlices", _functional_group_value(ds, 0, "PixelMeasuresSequence",
                                                                   "SpacingBetweenSlices"))
    return float(value) if value is not None and float(value) > 0 else None


def read_dicom_labels(path: PathLike) -> np.ndarray:
    """The stored pixel values of a grayscale DICOM label image (a mask), one (H, W) array per frame.

    No intensity rule applies (no rescale, window or MONOCHROME1 inversion: labels are labels).

    Args:
        path (`str` or `os.PathLike`): the DICOM mask, single- or multi-frame.

    Returns:
        `np.ndarray` (num_frames, H, W) of the stored integer dtype.

    Example:
        >>> read_dicom_labels("cine_mask.dcm").shape  # frame k lies on frame k of read_dicom("cine.dcm")
        (40, 480, 640)
    """
    image = read_dicom(path)  # the header, pixel data and decoder checks of the image reader
    if len(image.shape) != 3:
        raise _error(image.path, f"the mask is {image.dataset.PhotometricInterpretation} colour; a DICOM mask holds "
                     "one class value per pixel (grayscale). Save it as grayscale class values.")
    try:
        deflated = str(image.dataset.file_meta.get("TransferSyntaxUID", "")) == DEFLATED_SYNTAX
        frames = [np.asarray(arr) for arr in iter_pixels(pydicom.dcmread(image.path) if deflated else image.path)]
    except Exception as err:  # decoders raise many types
        raise _error(image.path, f"the mask's frames cannot be decoded ({type(err).__name__}); export it again.") from err
    return np.stack(frames)  # (F, H, W)


def write_dicom_seg(
    masks: Union[np.ndarray, Sequence[np.ndarray]],
    reference: MedicalImage,
    path: PathLike,
    *,
    labels: Sequence[str],
    model_id: str,
    series_number: int = 300,
    manufacturer: str = "gms_hub",
    software_version: Optional[str] = None,
) -> Path:
    """Write a binary DICOM Segmentation (highdicom) that references the source instance, frame by frame.

    One segment per foreground class: a mask value `k` (1..len(labels)) belongs to segment `k`, named
    `labels[k - 1]`. Every source frame gets one segmentation frame per segment, empty frames included, and the
    algorithm is identified as name "GMS", version `model_id`.

    Args:
        masks (`np.ndarray` or sequence of `np.ndarray`): (num_frames, H, W) label maps, one per source frame.
        reference (`MedicalImage`): the DICOM image the masks were predicted from.
        path (`str` or `os.PathLike`): output file, or a folder to write `<name>_seg.dcm` into.
        labels (`Sequence[str]`): names of the foreground classes (a binary model has one).
        model_id (`str`): the model's Hub id or path, recorded as the algorithm version.
        series_number (`int`, defaults to 300): Series Number of the new SEG series.
        manufacturer (`str`, defaults to `"gms_hub"`): Manufacturer of the SEG.
        software_version (`str`, *optional*): defaults to the installed gms_hub version.

    Returns:
        `Path` of the written file.

    Example:
        >>> write_dicom_seg(masks, image, "out/", labels=["lesion"], model_id="user/gms-busi")
        PosixPath('out/scan_seg.dcm')
    """
    from .patient_module import seg_source_copy

    array, labels = _check_seg_inputs(masks, reference, labels)
    if software_version is None:
        software_version = _installed_version()
    source, notes = seg_source_copy(reference.dataset)  # the SEG's copy: values invalid for their VR repaired/dropped
    if notes:
        logger.info("'%s': the SEG's copy of the patient and study attributes: %s", reference.path.name, ", ".join(notes))
    # A series references every instance, each with the same repaired patient/study module.
    sources = [source] if not reference.datasets else [seg_source_copy(ds)[0] for ds in reference.datasets]
    with muted_loggers(("highdicom",)), pydicom.config.disable_value_validation():  # both would quote values/UIDs
        seg = _build_segmentation(array, reference, sources, labels, model_id, series_number, manufacturer,
                                  software_version)
        _check_segmentation(seg, reference, len(labels))
    path = Path(path)
    if path.is_dir():
        path = path / f"{reference.name}_seg.dcm"
    with atomic_path(path) as temporary:
        seg.save_as(temporary)
    logger.info("Wrote a DICOM SEG with %d segment(s) x %d frame(s) to %s", len(labels), reference.num_frames, path)
    return path


def _check_seg_inputs(
    masks: Union[np.ndarray, Sequence[np.ndarray]], reference: MedicalImage, labels: Sequence[str]
) -> Tuple[np.ndarray, List[str]]:
    """The masks as (F, H, W) uint8 and the labels as strings, once they fit the reference and each other."""
    if reference.kind != "dicom" or reference.dataset is None:
        raise ValueError(f"A DICOM SEG needs a DICOM reference; '{reference.path.name}' is {reference.kind}. "
                         "Write a NIfTI mask or PNGs instead.")
    labels = [str(label) for label in labels]
    if not labels:
        raise ValueError("labels must name at least one foreground class, e.g. ['lesion'].")
    array = check_masks(masks, reference, "write_dicom_seg")
    source = reference.dataset
    if tuple(array.shape[1:]) != (int(source.Rows), int(source.Columns)):
        raise ValueError(f"Masks are {array.shape[1:]} but '{reference.path.name}' is {source.Rows}x{source.Columns}; "
                         "write masks at the source's size.")
    if int(array.max(initial=0)) > len(labels):
        raise ValueError(f"Mask value {int(array.max())} has no label; labels name values 1..{len(labels)}: {labels}.")
    if reference.num_frames > 1 and "FrameOfReferenceUID" not in source:
        raise _error(reference.path, f"a DICOM SEG of a multi-frame image ({reference.num_frames} frames) needs a "
                     "Frame of Reference UID, which this file lacks (common for cine ultrasound); highdicom cannot "
                     "reference its frames. Write PNG or NIfTI masks instead.")
    return array, labels


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gms-hub")
    except PackageNotFoundError:
        return "unknown"


def _build_segmentation(
    array: np.ndarray, reference: MedicalImage, sources: List[Dataset], labels: List[str], model_id: str,
    series_number: int, manufacturer: str, software_version: str,
):
    """The highdicom Segmentation: one binary segment per label, every source frame kept (empty ones too)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    version_text = model_id if len(model_id) <= 64 else model_id[-64:]  # LO: at most 64 characters
    algorithm = hd.AlgorithmIdentificationSequence(
        name="GMS", version=version_text, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=label[:64], segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, label in enumerate(labels, start=1)
    ]
    stacked = np.stack([array == k for k in range(1, len(labels) + 1)], axis=-1).astype(np.uint8)  # (F, H, W, K)
    try:
        return hd.seg.Segmentation(
            source_images=sources, pixel_array=stacked,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=series_number,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer=manufacturer,
            manufacturer_model_name="GMS", software_versions=software_version, device_serial_number="none",
            series_description="GMS segmentation", content_label="GMS", omit_empty_frames=False,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise _error(reference.path, f"highdicom cannot build a DICOM SEG from this source ({describe_error(err)}). "
                     "Write PNG or NIfTI masks instead.") from None


def _check_segmentation(seg, reference: MedicalImage, num_labels: int) -> None:
    """Refuse a SEG with the wrong number of frames, or one highdicom cannot read back."""
    import highdicom as hd

    expected = reference.num_frames * num_labels
    if int(seg.NumberOfFrames) != expected:  # highdicom treats single-frame IODs as one frame whatever they hold
        raise _error(reference.path, f"the SEG would hold {seg.NumberOfFrames} frames instead of {expected} "
                     f"(the {reference.dataset.SOPClassUID.name} IOD is single-frame but the file has "
                     f"{reference.num_frames} frames). Write PNG masks instead.")
    try:  # what highdicom writes but cannot read back (e.g. pixel measures without a slice thickness) is refused
        hd.seg.Segmentation.from_dataset(seg, copy=True)
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise _error(reference.path, f"the DICOM SEG built from this source does not read back ({describe_error(err)}); the source "
                     "lacks attributes a SEG needs. Write PNG or NIfTI masks instead.") from None
