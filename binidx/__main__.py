"""``python -m binidx``: the same command line as the ``binidx`` script (see :mod:`binidx.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
