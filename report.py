"""An HTML report of a scoring run from its files: the same as `clipdet report`.

    python report.py --scores results.csv [--in_csv list.csv] [--maps maps/] --out report.html

See docs/report.md.
"""

import sys

from clipdet.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
