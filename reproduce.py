"""Reproduce the paper's Synthbuster table: the same as `clipdet reproduce`.

    python reproduce.py               # official detectors on Synthbuster, clean + postprocessed
    python reproduce.py --limit 100   # a quick check on the first 100 images of each typ

See docs/datasets.md.
"""

import sys

from clipdet.cli.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
