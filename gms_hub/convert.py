"""`python -m gms_hub.convert`: the command-line entry; the code is [`gms_hub.models.convert`](models/convert.py)."""

import sys

from .models.convert import cli

if __name__ == "__main__":
    sys.exit(cli())
