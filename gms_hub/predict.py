"""`python -m gms_hub.predict`: the command-line entry; the code is [`gms_hub.inference.predict`](inference/predict.py)."""

import sys

from .inference.predict import main

if __name__ == "__main__":
    sys.exit(main())
