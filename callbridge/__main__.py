"""``python -m callbridge``: the ``callbridge`` command (``callbridge/cli.py``)."""

import sys

from .cli import main

sys.exit(main(prog="python -m callbridge"))
