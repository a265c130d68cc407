"""Files in and files out: the one door every input comes in by, and the mask writers.

Reading runs downward: the door decides the format once, a format reader opens the file, the shared types
sit at the bottom (`reading` -> `images` / `dicom` / `nifti` -> `medical`).

- [`reading`](reading.py): the door: `detect_format`, `read_input` (any input), `read_medical_image`, listing inputs.
- [`images`](images.py): PNG/JPEG/BMP/TIFF in, with size limits (`read_image`).
- [`dicom`](dicom.py): DICOM in (pydicom) and DICOM SEG out (highdicom).
- [`nifti`](nifti.py): NIfTI in (nibabel) and NIfTI masks out with the input's affine.
- [`series`](series.py): a DICOM series as one volume: grouped by Series Instance UID, ordered along the slice normal.
- [`medical`](medical.py): the shared types (input kinds, `MedicalImage`, lazily decoded frames, errors, mm² areas).
- [`mask_files`](mask_files.py): `MaskWriter`, one input's masks in the format that fits it, with areas; mask PNGs.
- [`visualize`](visualize.py): label colours and coloured overlays.
"""
