"""``python -m fiq_gym.benchmarks.dialog``: the same as ``fiq-gym bench``."""

import sys

from fiq_gym.benchmarks.dialog.command import main

sys.exit(main())
