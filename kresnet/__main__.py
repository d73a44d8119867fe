"""``python -m kresnet``: the same as the ``kresnet`` command."""

import sys

from kresnet.cli import main

sys.exit(main())
