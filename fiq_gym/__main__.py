import sys

from fiq_gym.cli import main

sys.exit(main())
