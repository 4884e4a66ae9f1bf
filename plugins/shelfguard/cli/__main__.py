"""``python -m shelfguard.cli``: the same as the ``shelfguard`` command."""

import sys

from shelfguard.cli.entry import main

sys.exit(main())
