"""Write laundered (impaired) copies of a labelled list: the same as `clipdet launder`.

    python launder.py --in_csv test.csv --out_dir laundered/ --ops postprocessed --seed 0

See docs/robustness.md.
"""

import sys

from clipdet.cli.launder import main

if __name__ == "__main__":
    sys.exit(main())
