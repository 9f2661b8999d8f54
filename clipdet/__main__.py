"""``python -m clipdet ...``: the same as the ``clipdet`` command."""

import sys

from clipdet.cli import main

if __name__ == "__main__":
    sys.exit(main())
