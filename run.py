#!/usr/bin/env python3
"""``python run.py COMMAND`` in a source checkout: the ``callbridge`` command (``callbridge/cli.py``)."""

import sys

from callbridge.cli import main

if __name__ == "__main__":
    sys.exit(main())
