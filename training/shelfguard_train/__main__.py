"""``python -m shelfguard_train``: the training image's entry point."""

import sys

from shelfguard_train.cli import main

sys.exit(main())
