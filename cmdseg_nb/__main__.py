"""``python -m cmdseg_nb demo``: see :mod:`cmdseg_nb.cli`."""
import sys

from .cli import main

sys.exit(main())
