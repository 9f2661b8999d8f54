"""Score images: the reference code's command line, the same as `clipdet score`.

    python main.py --in_csv list.csv --out_csv results.csv [--models ...] [--fusion ...]
    python main.py suspicious.jpg photos/ "shots/*.png"

`python main.py --help` lists every flag; see docs/scoring.md.
"""

import sys

from clipdet.cli.score import main

if __name__ == "__main__":
    sys.exit(main())
