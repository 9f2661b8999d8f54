"""Per-generator metric tables: the reference code's command line, the same as `clipdet metrics`.

    python compute_metrics.py --in_csv list.csv --out_csv results.csv --metrics auc,acc

`python compute_metrics.py --help` lists every flag; see docs/metrics.md.
"""

import sys

from clipdet.cli.metrics import main

if __name__ == "__main__":
    sys.exit(main())
