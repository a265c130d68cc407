"""Files in and files out: the one door every input comes in by, and the mask writers.

- [`reading`](reading.py): reading any input (PNG/JPEG/BMP/TIFF, DICOM, NIfTI), size limits, mask PNGs.
- [`medical`](medical.py): the shared types of medical scans (`MedicalImage`, lazily decoded frames, mm² areas).
- [`dicom`](dicom.py): DICOM in (pydicom) and DICOM SEG out (highdicom).
- [`nifti`](nifti.py): NIfTI in (nibabel) and NIfTI masks out with the input's affine.
- [`mask_files`](mask_files.py): `MaskWriter`, one input's masks in the format that fits it, with areas.
- [`visualize`](visualize.py): label colours and coloured overlays.
"""
