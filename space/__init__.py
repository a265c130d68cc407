"""The Space's own code (used by `app.py` only): which model serves each benchmark, upload handling and
result rendering, and the Space's settings.

It lives beside `app.py`, outside the `gms_hub` package, because it is a front door: it imports the library,
and the library never imports it (nor gradio). A Space runs `app.py` from the repository root, so `space` is
importable there without installing anything.
"""
