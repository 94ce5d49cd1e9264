#!/usr/bin/env python3
"""callbridge entry point: ``python run.py {serve,call,demo,config} --help``."""

import sys

from callbridge.cli import main

if __name__ == "__main__":
    sys.exit(main())
