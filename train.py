"""Train a detection or attribution head: the same as `clipdet train`.

    python train.py --in_csv train.csv --weights_dir weights --model_name my_detector

`python train.py --help` lists every flag; see docs/training.md and docs/attribution.md.
"""

import sys

from clipdet.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
