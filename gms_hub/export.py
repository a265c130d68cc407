"""`python -m gms_hub.export`: the command-line entry; the code is [`gms_hub.inference.export`](inference/export.py)."""

import sys

from .inference.export import main

if __name__ == "__main__":
    sys.exit(main())
