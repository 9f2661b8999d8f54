"""Split a labelled list into open-set train/val/test lists: the same as `clipdet split`.

    python split.py --in_csv all.csv --out_dir splits --unknown midjourney-v5,firefly

See docs/attribution.md.
"""

import sys

from clipdet.cli.split import main

if __name__ == "__main__":
    sys.exit(main())
