"""Start-up: the seconds a fresh Python process spends importing what a scoring run needs,
against ``import open_clip, pandas`` (what any CLIP scorer on tables imports), and what the
command's --help and `import clipdet.api` cost. Median of N fresh processes each, interleaved
so that a busy moment of the machine spreads over all of them.

    python benchmarks/bench_startup.py [--runs 7]
"""

import argparse
import statistics
import subprocess
import sys

from common import REPO, cpu_name

CASES = {
    "open_clip + pandas (the floor)": "import open_clip, pandas",
    "clipdet scoring path": "from clipdet.api import score_images; import clipdet.pipeline.run",
    "import clipdet.api": "import clipdet.api",
    "clipdet score --help (parser only)": "from clipdet.cli import score; score.add_parser()",
}
PROBE = "import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
HEAVY = ("sklearn", "scipy.stats", "matplotlib", "clipdet.training", "clipdet.evaluation")


def timed(code: str) -> float:
    run = subprocess.run([sys.executable, "-c", PROBE.format(code=code)], cwd=REPO,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return float(run.stdout.strip().splitlines()[-1])


def loaded_heavy(code: str) -> list[str]:
    """Which of the modules a scoring run should not need the code imported."""
    probe = f"import sys; {code}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return run.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    seconds = {name: [] for name in CASES}
    for _ in range(args.runs):
        for name, code in CASES.items():
            seconds[name].append(timed(code))
    print(f"CPU: {cpu_name()}; {args.runs} fresh processes each, median (min-max) seconds")
    floor = statistics.median(seconds[next(iter(CASES))])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:38s} {median:6.2f} ({min(values):.2f}-{max(values):.2f})  "
              f"{median - floor:+.2f} over the floor")  # fmt: skip
    print(
        f"  modules a scoring run does not load: {', '.join(HEAVY)}; loaded: "
        f"{', '.join(loaded_heavy(CASES['clipdet scoring path'])) or 'none'}"
    )


if __name__ == "__main__":
    main()
