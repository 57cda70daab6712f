"""``python -m maskbench`` is the ``maskbench`` command."""

import sys

from maskbench.cli import main

sys.exit(main())
