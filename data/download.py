"""Download one of the paper's datasets, verified and unpacked: the same as `clipdet download`.

    python data/download.py synthbuster            # Synthbuster + RAISE-1k -> data/
    python data/download.py grip_train --coco /datasets/coco/train2017

See docs/datasets.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipdet.cli.download import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
