"""What the tool promises about a user's data (README: "What the tool promises about your data"): inputs never
written, one collision-free naming rule, atomic outputs, reruns that replace only their own files, patient values
that never leave the DICOM SEG, spreadsheet-safe CSVs, nothing skipped in silence, arguments checked at the door."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil

import numpy as np
import pydicom
import pytest
from _medical_utils import PATIENT, write_dicom
from PIL import Image
from pydicom.data import get_testdata_file

from gms_hub.inference import predict
from gms_hub.io.dicom import read_dicom, write_dicom_seg
from gms_hub.io.medical import MedicalImageError
from gms_hub.io.patient_module import PATIENT_STUDY_ATTRIBUTES, seg_source_copy
from gms_hub.io.reading import read_input
from gms_hub.io.safety import (
    MANIFEST_NAME,
    OutputManifest,
    UnsafeOutputError,
    atomic_path,
    check_output_dir,
    output_stems,
    safe_cell,
    write_csv,
)


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def png(path, size=(24, 20), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def binary(tiny_gms, monkeypatch):
    monkeypatch.setattr(predict, "load_model", lambda spec, device: tiny_gms)
    return tiny_gms


def run(*args):
    return predict.main([str(a) for a in args])


# ------------------------------------------------------------------ 1. outputs never touch inputs
@pytest.mark.parametrize("where", ["same", "inside"])
def test_predict_refuses_an_output_folder_that_is_or_lies_inside_the_input_folder(binary, tmp_path, capsys, where):
    scans = tmp_path / "scans"
    scans.mkdir()
    png(scans / "a.png")
    before = digests(scans)
    out = scans if where == "same" else scans / "masks"
    with pytest.raises(SystemExit) as exit_info:
        run("--input", scans, "--output_dir", out)
    assert exit_info.value.code == 2
    assert "--output_dir" in capsys.readouterr().err
    assert digests(scans) == before and not (scans / "masks").exists()


def test_check_output_dir_refuses_a_folder_containing_an_input_file_and_a_file_as_folder(tmp_path):
    png(tmp_path / "a.png")
    with pytest.raises(UnsafeOutputError, match="contains the input file 'a.png'"):
        check_output_dir(tmp_path, [tmp_path / "a.png"])
    with pytest.raises(UnsafeOutputError, match="contains the input folder"):
        check_output_dir(tmp_path, [tmp_path / "sub"]) if (tmp_path / "sub").mkdir() is None else None
    with pytest.raises(UnsafeOutputError, match="is a file"):
        check_output_dir(tmp_path / "a.png", [tmp_path / "elsewhere.png"])
    assert check_output_dir(tmp_path / "out", [tmp_path / "a.png"]) == tmp_path / "out"


def test_prepare_folder_refuses_an_output_folder_holding_its_inputs_and_deletes_nothing(tmp_path):
    from gms_hub.data.prepare import cli

    data = tmp_path / "D"
    for k in range(3):
        png((data / "images").mkdir(parents=True, exist_ok=True) or data / "images" / f"c{k}.png", seed=k)
        (data / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.eye(20, 24, dtype=np.uint8) * 255).save(data / "masks" / f"c{k}.png")
    (data / "notes.txt").write_text("unrelated")
    before = digests(data)
    code = cli(["folder", "--images", str(data / "images"), "--masks", str(data / "masks"), "--output_dir", str(data),
                "--overwrite"])
    assert code == 2 and digests(data) == before


# ------------------------------------------------------------------ 3. one collision-free naming rule
def test_output_stems_resolve_every_collision_the_same_way_for_the_same_inputs():
    names = ["a.png", "a.jpg", "a_png.png", "cine.dcm", "cine_frame1.png", "ct.nii.gz", "ct_mask.nii.gz", "b_c.png",
             "b.png"]
    stems = output_stems(names)
    assert stems == ["a_png", "a_jpg", "a_png-2", "cine", "cine_frame1-2", "ct", "ct_mask-2", "b_c", "b"]
    assert output_stems(list(reversed(names))) == list(reversed(stems))  # the set decides, not the order
    assert len({s.lower() for s in output_stems(["A.png", "a.PNG", "a.png"])}) == 3  # case-insensitive file systems


def test_predict_writes_one_mask_per_input_when_names_would_collide(binary, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k, name in enumerate(["a.png", "a.jpg", "a_png.png", "cine_frame1.png"]):
        image = png(tmp_path / f"src{k}.png", seed=k)
        Image.open(image).save(inputs / name)
    write_dicom(inputs / "cine.dcm", np.random.default_rng(5).integers(0, 255, (2, 20, 24), dtype=np.uint8),
                NumberOfFrames=2)
    out = tmp_path / "out"
    assert run("--input", inputs, "--output_dir", out) == 0
    rows = read_rows(out / "predictions.csv")
    masks = [row["mask_file"] for row in rows]
    assert len(rows) == 6 and len(set(masks)) == 6 and all((out / m).is_file() for m in masks)


# ------------------------------------------------------------------ atomic writes and the record of a run
def test_atomic_path_leaves_nothing_under_the_real_name_when_the_write_fails(tmp_path):
    target = tmp_path / "mask.png"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.endswith("mask.png")
        temporary.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["mask.png"]


def test_predict_rerun_replaces_its_own_outputs_and_never_a_foreign_file(binary, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    png(inputs / "a.png")
    png(inputs / "b.png", seed=1)
    out = tmp_path / "out"
    assert run("--input", inputs, "--output_dir", out) == 0
    assert run("--input", inputs, "--output_dir", out) == 0  # a rerun replaces what the first run wrote
    assert OutputManifest.read(out, predict.TOOL) == {"a.png", "b.png", "predictions.csv"}
    foreign = out / "a.png"
    foreign.unlink()
    foreign.write_bytes(b"the user's own file")
    (out / MANIFEST_NAME).unlink()  # the record is gone: no file counts as ours
    assert run("--input", inputs, "--output_dir", out) == 2  # predictions.csv is not ours any more: refused
    (out / "predictions.csv").unlink()
    assert run("--input", inputs, "--output_dir", out) == 1  # b.png replaced? no: not ours either; a row each
    assert foreign.read_bytes() == b"the user's own file"
    statuses = {os.path.basename(r["input"]): r["status"] for r in read_rows(out / "predictions.csv")}
    assert "not written by gms_hub.predict" in statuses["a.png"]


def test_manifest_claim_refuses_a_second_writer_of_one_name(tmp_path):
    manifest = OutputManifest(tmp_path, "tool")
    manifest.claim("a.png")
    with pytest.raises(FileExistsError, match="already written by this run"):
        manifest.claim("a.png")


# ------------------------------------------------------------------ 5. spreadsheet-safe CSV cells
def test_csv_cells_that_a_spreadsheet_would_run_are_escaped(tmp_path):
    cells = ["=1+2.png", "+x", "-cmd", "@SUM(A1)", "\tx", "\rx", "plain.png", "a=b"]
    write_csv(tmp_path / "t.csv", [{"c": c, "n": -3} for c in cells], ["c", "n"])
    rows = read_rows(tmp_path / "t.csv")
    assert [r["c"] for r in rows] == ["'=1+2.png", "'+x", "'-cmd", "'@SUM(A1)", "'\tx", "'\rx", "plain.png", "a=b"]
    assert {r["n"] for r in rows} == {"-3"} and safe_cell(-3) == -3


def test_predict_csv_escapes_a_formula_file_name(binary, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    png(inputs / "=1+2.png")
    assert run("--input", inputs, "--output_dir", tmp_path / "out") == 0
    row = read_rows(tmp_path / "out" / "predictions.csv")[0]
    assert row["mask_file"] == "'=1+2.png" and row["input"].endswith("/=1+2.png")  # a path starts with /
    assert (tmp_path / "out" / "=1+2.png").is_file()  # the file itself keeps its name


# ------------------------------------------------------------------ 7. nothing skipped in silence
def test_predict_reports_dangling_links_link_loops_and_folders_named_like_images(binary, tmp_path, caplog):
    inputs = tmp_path / "in"
    inputs.mkdir()
    png(inputs / "good.png")
    os.symlink(tmp_path / "gone.png", inputs / "dangling.png")
    os.symlink(inputs / "loop_b.png", inputs / "loop_a.png")
    os.symlink(inputs / "loop_a.png", inputs / "loop_b.png")
    (inputs / "x.png").mkdir()
    with caplog.at_level(logging.ERROR):
        code = run("--input", inputs, "--output_dir", tmp_path / "out")
    assert code == 1
    rows = {os.path.basename(r["input"]): r["status"] for r in read_rows(tmp_path / "out" / "predictions.csv")}
    assert rows["good.png"] == "ok"
    assert "dangling symbolic link" in rows["dangling.png"]
    assert "loop" in rows["loop_a.png"] and "loop" in rows["loop_b.png"]
    assert "folder named like an image" in rows["x.png"]
    for name in ("dangling.png", "loop_a.png", "loop_b.png", "x.png"):
        assert name in caplog.text


# ------------------------------------------------------------------ 10. arguments checked where they enter
@pytest.mark.parametrize("flag, value, words", [
    ("--seed", "1180591620717411303424", "--seed"), ("--seed", "-1", "--seed"), ("--threshold", "nan", "--threshold"),
    ("--output_dir", "FILE", "is a file"),
])
def test_predict_bad_arguments_exit_2_with_one_line_naming_the_argument(binary, tmp_path, capsys, flag, value, words):
    png(tmp_path / "a.png")
    (tmp_path / "file.txt").write_text("x")
    args = {"--input": tmp_path / "a.png", "--output_dir": tmp_path / "out"}
    args[flag] = tmp_path / "file.txt" if value == "FILE" else value
    with pytest.raises(SystemExit) as exit_info:
        run(*[part for pair in args.items() for part in pair])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and words in error and "Traceback" not in error


def test_dicom_with_a_non_numeric_number_of_frames_gets_one_clear_message(tmp_path):
    path = write_dicom(tmp_path / "bad.dcm", np.zeros((16, 16), np.uint8))
    ds = pydicom.dcmread(path)
    ds.add_new(0x00280008, "IS", "1")
    ds.save_as(path)
    raw = path.read_bytes()
    index = raw.index(b"\x28\x00\x08\x00IS\x02\x001 ")  # Number of Frames, explicit VR: patch its value to 'x '
    path.write_bytes(raw[:index + 8] + b"x " + raw[index + 10:])
    with pytest.raises(MedicalImageError, match="Number of Frames attribute is not a whole number"):
        read_input(path)


@pytest.mark.parametrize("seed", [float("nan"), float("inf"), -1, 1.5, 2**64])
def test_the_space_refuses_a_seed_that_is_no_whole_number_in_range(seed):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from space.api import check_seed
    from space.results import InputError

    with pytest.raises(InputError, match="seed must be a whole number"):
        check_seed(seed)


# ------------------------------------------------------------------ 12. every decodable DICOM transfer syntax
def test_deflated_explicit_vr_little_endian_dicom_reads_like_its_inflated_twin():
    deflated = read_input(get_testdata_file("image_dfl.dcm"))
    reference = pydicom.dcmread(get_testdata_file("image_dfl.dcm")).pixel_array
    frame = deflated.frames[0]
    assert deflated.num_frames == 1 and frame.shape == reference.shape
    assert np.corrcoef(frame.ravel(), reference.ravel().astype(float))[0, 1] > 0.999


# ------------------------------------------------------------------ 4. patient data never leaves the DICOM SEG
VALID = {"PN": "Doe^Jane", "LO": "ID-7", "DA": "19610203", "TM": "120000", "CS": "F", "SH": "A1", "LT": "note",
         "AS": "045Y", "DS": "1.75"}
INVALID = {"PN": "N" * 70, "LO": "L" * 70, "DA": "03/02/1961", "TM": "12h00", "CS": "female!", "SH": "S" * 20,
           "LT": "x" * 10241, "AS": "45 years", "DS": "1.7500000000000001234"}  # DS: at most 16 characters


def _seg_of(tmp_path, keyword, value):
    path = write_dicom(tmp_path / "src.dcm", np.zeros((16, 16), np.uint8))
    ds = pydicom.dcmread(path)
    with pydicom.config.disable_value_validation():
        if value is None:
            if keyword in ds:
                del ds[keyword]
        else:
            setattr(ds, keyword, value)
        ds.save_as(path)
    image = read_dicom(path)
    mask = np.zeros((1, 16, 16), np.uint8)
    mask[0, 4:9, 3:7] = 1
    return write_dicom_seg(mask, image, tmp_path / "src_seg.dcm", labels=["lesion"], model_id="test")


@pytest.mark.parametrize("keyword", sorted(PATIENT_STUDY_ATTRIBUTES))
@pytest.mark.parametrize("validity", ["valid", "invalid", "missing"])
def test_every_patient_and_study_attribute_valid_invalid_or_missing_still_gives_a_seg(tmp_path, caplog, keyword,
                                                                                       validity):
    vr, kind = PATIENT_STUDY_ATTRIBUTES[keyword]
    value = {"valid": VALID[vr], "invalid": INVALID[vr], "missing": None}[validity]
    if keyword == "PatientSex" and validity == "invalid":
        value = "X"
    with caplog.at_level(logging.DEBUG):
        written = _seg_of(tmp_path, keyword, value)
    seg = pydicom.dcmread(written)
    kept = seg.get(keyword)
    if validity == "valid":
        assert kept is None or str(kept) == value  # carried unchanged, or a type 3 attribute highdicom leaves out
    elif validity == "invalid":
        assert kept is None or str(kept) in ("", "19610203")  # dropped, or the date repaired
        with pydicom.config.disable_value_validation():
            _, notes = seg_source_copy(pydicom.dcmread(tmp_path / "src.dcm"))
        assert [note for note in notes if note.split()[0] == keyword] == [f"{keyword} dropped"]
        assert value not in caplog.text
    else:
        assert (kept is not None and str(kept) == "") if kind == 2 else kept is None
    for secret in PATIENT.values():
        assert secret not in caplog.text
    assert pydicom.dcmread(tmp_path / "src.dcm").get(keyword) == (None if value is None else pydicom.dcmread(
        tmp_path / "src.dcm").get(keyword))  # the source is never changed


def test_an_iso_birth_date_is_repaired_and_never_quoted(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        written = _seg_of(tmp_path, "PatientBirthDate", "1970-01-01")
    assert pydicom.dcmread(written).PatientBirthDate == "19700101"
    assert "1970-01-01" not in caplog.text and "19700101" not in caplog.text
    fixed, notes = seg_source_copy(pydicom.dcmread(tmp_path / "src.dcm"))
    assert notes == ["PatientBirthDate repaired"]


def test_highdicom_info_lines_with_uids_do_not_reach_our_logs(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        _seg_of(tmp_path, "PatientID", "ID-7")
    uid = str(pydicom.dcmread(tmp_path / "src.dcm").SOPInstanceUID)
    assert uid not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("highdicom") and r.levelno < logging.WARNING]


# ------------------------------------------------------------------ 60 mutated files + 5 good ones
PREFIXES = ["", "with space ", "ünïcødé ", "-dash ", "=eq "]


def _good_files(folder):
    """Five good single-frame inputs: two PNGs, a JPEG, a DICOM and a 2-D NIfTI."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 36), dtype=np.uint8)).save(folder / "good1.png")
    Image.fromarray(rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)).save(folder / "good2.png")
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(folder / "good3.jpg", quality=90)
    write_dicom(folder / "good4.dcm", rng.integers(0, 4096, (32, 28), dtype=np.uint16), bits_stored=12)
    nib.save(nib.Nifti1Image(rng.normal(size=(30, 26)).astype(np.float32), np.eye(4)), folder / "good5.nii.gz")
    return sorted(folder.iterdir())


def _mutations(data: bytes, seed: int):
    """Twelve broken versions of a file's bytes: truncated, bytes flipped, header zeroed, garbage, empty."""
    rng = np.random.default_rng(seed)
    n = len(data)
    flipped = []
    for position in (1, 20, n // 2):
        raw = bytearray(data)
        raw[position] ^= 0xFF
        flipped.append(bytes(raw))
    return {
        "cut10": data[: n // 10], "cut50": data[: n // 2], "cut90": data[: n * 9 // 10],
        "flip1": flipped[0], "flip20": flipped[1], "flipmid": flipped[2],
        "zerohead": bytes(16) + data[16:], "doublehead": data[:200] + data,
        "garbage": rng.integers(0, 256, n, dtype=np.uint8).tobytes(), "empty": b"",
    }


def make_mutated_folder(folder):
    """60 mutated files (10 byte mutations and 2 swapped headers per good file, odd names) + the 5 good ones."""
    folder.mkdir()
    good = _good_files(folder)
    suffix = {".png": ".png", ".jpg": ".jpg", ".dcm": ".dcm", ".gz": ".nii.gz"}
    count = 0
    for index, source in enumerate(good):
        data, ext = source.read_bytes(), suffix[source.suffix]
        other = [e for e in (".png", ".jpg", ".dcm", ".nii.gz") if e != ext]
        items = list(_mutations(data, index).items()) + [(f"as{other[0][1:4]}", data), (f"as{other[1][1:4]}", data)]
        for k, (mutation, content) in enumerate(items):
            swapped = mutation.startswith("as")
            name = f"{PREFIXES[(index + k) % len(PREFIXES)]}{source.name.split('.')[0]}_{mutation}"
            target = folder / (name + (other[0] if mutation == items[-2][0] else other[1] if swapped else ext))
            target.write_bytes(content)
            count += 1
    assert count == 60
    return good


def test_predict_on_60_mutated_files_and_5_good_ones_keeps_going_and_touches_no_input(binary, tmp_path, capsys):
    inputs = tmp_path / "in"
    good = make_mutated_folder(inputs)
    before = digests(inputs)
    out = tmp_path / "out"
    code = run("--input", inputs, "--output_dir", out)
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err + captured.out
    rows = read_rows(out / "predictions.csv")
    by_input = {}
    for row in rows:
        by_input.setdefault(os.path.basename(row["input"]), []).append(row)
    assert sorted(by_input) == sorted(p.name for p in inputs.iterdir())  # one row (or a row per frame) each
    assert all(len(r) == 1 for r in by_input.values() if r[0]["status"] != "ok")
    for path in good:
        (row,) = by_input[path.name]
        assert row["status"] == "ok" and (out / row["mask_file"]).is_file()
    assert digests(inputs) == before


@pytest.fixture
def app_module(tmp_path, monkeypatch):
    import importlib
    import sys
    from pathlib import Path

    from _app_utils import make_tiny_model

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GMS_DEMO_MODEL", str(make_tiny_model(tmp_path / "tiny-gms")))
    monkeypatch.setenv("GMS_MODELS_FILE", str(tmp_path / "none.json"))
    monkeypatch.setenv("GMS_MAX_BATCH_FILES", "100")
    monkeypatch.delenv("GMS_MODELS", raising=False)
    monkeypatch.syspath_prepend(str(root))
    sys.modules.pop("app", None)
    module = importlib.import_module("app")
    yield module
    sys.modules.pop("app", None)
    shutil.rmtree(module.OUTPUT_DIR, ignore_errors=True)


def test_batch_endpoint_on_60_mutated_files_and_5_good_ones(app_module, tmp_path, caplog):
    import zipfile

    inputs = tmp_path / "in"
    good = make_mutated_folder(inputs)
    before = digests(inputs)
    files = [str(p) for p in sorted(inputs.iterdir())]
    with caplog.at_level(logging.INFO):
        zip_path, csv_path, table = app_module.segment_batch(files, "busi", 0.5, progress=lambda *a, **k: None)
    assert "Traceback" not in caplog.text
    rows = read_rows(csv_path)
    by_file = {}
    for row in rows:
        by_file.setdefault(row["file"].lstrip("'"), []).append(row)
    assert sorted(by_file) == sorted(p.name for p in inputs.iterdir())
    assert all(len(r) == 1 for r in by_file.values() if r[0]["error"])
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
    for path in good:
        (row,) = by_file[path.name]
        assert not row["error"] and row["mask"] in names
    assert digests(inputs) == before


# ------------------------------------------------------------------ 8, 9. images as people see them
def _phone_jpeg(path, orientation=6):
    pixels = np.zeros((20, 32, 3), np.uint8)
    pixels[:4, :8] = 255  # a bright block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return path


def test_exif_orientation_is_applied_when_an_image_is_read(tmp_path):
    opened = read_input(_phone_jpeg(tmp_path / "phone.jpg"))
    frame = np.asarray(opened.frames[0])
    assert opened.frames[0].size == (20, 32)  # orientation 6: stored 32x20, shown 20x32 (turned 90° clockwise)
    assert frame[:8, -4:].mean() > 200 and frame[-8:, :4].mean() < 50  # the block is now top-right


def test_prepare_folder_stores_an_exif_rotated_image_as_shown(tmp_path):
    from gms_hub.data.loading import load_gms_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(4):
        _phone_jpeg(tmp_path / "images" / f"p{k}.jpg")
        mask = np.zeros((32, 20), np.uint8)
        mask[:8, -4:] = 255  # drawn on the image as shown
        Image.fromarray(mask).save(tmp_path / "masks" / f"p{k}.png")
    from gms_hub.data.folder import convert_folder

    convert_folder(tmp_path / "images", tmp_path / "masks", tmp_path / "out", test_fraction=0.25,
                   validation_fraction=0.0)
    dataset = load_gms_dataset(str(tmp_path / "out"))
    example = dataset["train"][0]
    assert example["image"].size == example["mask"].size == (20, 32)


def test_a_multi_picture_jpeg_reads_as_its_first_picture(tmp_path):
    first = Image.fromarray(np.full((24, 24, 3), 200, np.uint8))
    second = Image.fromarray(np.full((24, 24, 3), 10, np.uint8))
    first.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[second])
    assert Image.open(tmp_path / "camera.jpg").format == "MPO"
    frame = np.asarray(read_input(tmp_path / "camera.jpg").frames[0])
    assert frame.shape == (24, 24, 3) and abs(float(frame.mean()) - 200) < 3


# ------------------------------------------------------------------ 6. the Space forgets
def test_prune_stale_deletes_only_old_gms_app_folders(tmp_path):
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from space.retention import prune_stale

    old, fresh, other = tmp_path / "gms-app-old", tmp_path / "gms-app-fresh", tmp_path / "keep-old"
    for folder in (old, fresh, other):
        folder.mkdir()
        (folder / "upload.dcm").write_bytes(b"patient")
    past = time.time() - 7200
    for folder in (old, other):
        os.utime(folder, (past, past))
    assert prune_stale(tmp_path, max_age_s=3600) == [old]
    assert not old.exists() and fresh.exists() and other.exists()


def test_the_space_deletes_its_uploads_results_and_gradio_cache_on_sigterm(tmp_path):
    from _app_utils import AppServer, make_tiny_model
    from gradio_client import Client, handle_file

    server = AppServer(make_tiny_model(tmp_path / "tiny-gms"), tmp_path / "app.log")
    scratch = tmp_path / "tmp"
    try:
        server.wait_ready(timeout_s=120)
        image = png(tmp_path / "upload.png", size=(32, 32))
        Client(server.url, verbose=False).predict(handle_file(str(image)), "busi", 0.5, api_name="/segment")
        ours = sorted(p.name for p in scratch.rglob("gms-app-*"))
        assert any(name.startswith("gms-app-gradio-") for name in ours) and len(ours) >= 2
        assert [p for p in scratch.rglob("*.png") if p.name != "upload.png"]  # results and the upload exist now
    finally:
        server.stop()  # SIGTERM
    assert server.process.returncode == 0, server.log()
    assert not list(scratch.rglob("gms-app-*")), server.log()
    assert not [p for p in scratch.rglob("*") if p.is_file()]  # no upload, no result, no staging file


# ------------------------------------------------------------------ 13. prepare folder's messages and palette
def test_a_mask_with_300_values_is_the_only_one_named_among_binary_masks():
    from gms_hub.data.mask_encoding import detect_mask_encoding

    values = {f"good{k}": (0, 255) for k in range(5)}
    values["smooth"] = tuple(range(300))
    encoding, problems = detect_mask_encoding(values)
    (listed,) = problems.values()
    assert encoding.kind == "binary" and len(listed) == 1 and listed[0].startswith("smooth")


def test_palette_is_limited_to_the_classes_a_model_segments():
    from gms_hub.data.mask_encoding import read_palette
    from gms_hub.models.coding import MAX_CODED_CLASSES

    colours = {f"c{k}": [k * 10 + 5, 0, 0] for k in range(MAX_CODED_CLASSES + 13)}
    with pytest.raises(ValueError, match=f"at most {MAX_CODED_CLASSES}"):
        read_palette(colours)
    assert len(read_palette(dict(list(colours.items())[:MAX_CODED_CLASSES]))) == MAX_CODED_CLASSES


# ------------------------------------------------------------------ 11. bounded resources
def test_a_volume_over_the_voxel_limit_is_refused_from_its_header(tmp_path):
    import time

    import nibabel as nib

    from gms_hub.io.reading import VolumeTooLargeError

    volume = nib.Nifti1Image(np.zeros((64, 64, 40), np.uint8), np.eye(4))
    nib.save(volume, tmp_path / "ct.nii.gz")
    start = time.perf_counter()
    with pytest.raises(VolumeTooLargeError, match="40 frames of 64x64"):
        read_input(tmp_path / "ct.nii.gz", max_voxels=64 * 64 * 39)
    assert time.perf_counter() - start < 2.0
    assert read_input(tmp_path / "ct.nii.gz", max_voxels=64 * 64 * 40).num_frames == 40


def test_the_space_refuses_a_large_volume_with_the_command_to_run_instead(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    import nibabel as nib

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import space.results as results

    nib.save(nib.Nifti1Image(np.zeros((64, 64, 40), np.uint8), np.eye(4)), tmp_path / "big.nii.gz")
    monkeypatch.setattr(results, "MAX_VOLUME_VOXELS", 64 * 64 * 10)
    with pytest.raises(results.InputError, match=r"python -m gms_hub.predict --input big.nii.gz"):
        results.open_upload(tmp_path / "big.nii.gz")


def test_an_image_file_over_the_byte_limit_is_refused_before_decoding(tmp_path):
    from gms_hub.io.images import ImageReadError

    path = png(tmp_path / "a.png", size=(64, 64))
    with pytest.raises(ImageReadError, match="MiB per image file"):
        read_input(path, max_bytes=path.stat().st_size - 1)


def test_every_promise_in_the_readme_names_tests_that_exist():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    section = re.search(r"<!-- section: data-safety -->(.*?)<!-- /section: data-safety -->", text, re.S).group(1)
    rows = [line for line in section.splitlines() if line.startswith("| **")]
    assert len(rows) >= 10
    defined = set(re.findall(r"^def (test_\w+)", "\n".join(p.read_text() for p in (root / "tests").glob("test_*.py")),
                             re.M))
    for row in rows:
        named = re.findall(r"`(test_\w+)`", row)
        assert named and set(named) <= defined, (row[:60], set(named) - defined)


def test_evaluate_refuses_an_output_folder_inside_the_dataset(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "train" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("gms_train_evaluate", script)
    evaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate)

    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        evaluate.parse_args(["--model", "demo", "--dataset", str(tmp_path), "--output_dir", str(tmp_path / "eval")])
    assert exit_info.value.code == 2 and "lies inside the input folder" in capsys.readouterr().err
