"""``python -m entropyrl``: the ``entropyrl`` command."""

import sys

from entropyrl.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
