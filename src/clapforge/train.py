"""`accelerate launch -m clapforge.train --config recipes/NAME.yaml [dotted.key=value ...]`: see commands/train.py."""

import sys

from .commands.train import main

if __name__ == "__main__":
    sys.exit(main())
