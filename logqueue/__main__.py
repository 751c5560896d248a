"""``python -m logqueue``: the same as the ``logqueue`` command."""
import sys

from logqueue.cli import main

sys.exit(main())
