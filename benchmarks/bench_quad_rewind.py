"""Quality-aware calibration and the copies' evidence on ReWIND (Guillaro et al., QuAD,
arXiv 2604.15027): 9,646 copies of 162 viral images (87 real, 75 generated) found online, with
six detectors' published scores per copy. Get the file from the QuAD repository
(github.com/grip-unina/QuAD, datasets/ReWIND/ReWIND.csv); nothing is downloaded here.

For each detector: the balanced accuracy per source (each source counted once, real and
synthetic sources weighted equally) of
  - the raw scores, averaged over a source's copies (what QuAD calls uncalibrated);
  - clipdet's quality-aware calibration (log pixel count and JPEG quality, a non-JPEG copy
    counting as quality 100), fitted leaving each source out, the source's LLR the sum of
    its copies' calibrated LLRs (clipdet.evaluation.quality and groups' rule);
  - QuAD's own published leave-one-out calibration (its learned quality score, IQA_LoDa),
    when ReWIND_calibrated_LOO.csv is given, for reference.

    python benchmarks/bench_quad_rewind.py --rewind QuAD/datasets/ReWIND/ReWIND.csv \\
        [--published QuAD/datasets/ReWIND/ReWIND_calibrated_LOO.csv]
"""

import argparse
import time

import pandas as pd
from common import cpu_name

from clipdet.evaluation.quality import QualityModel, quality_features

DETECTORS = ("DMID", "CoDE", "D3", "B-Free", "DRCT", "CO-SPY")


def as_clipdet(table: pd.DataFrame) -> pd.DataFrame:
    """ReWIND's columns as clipdet's: width, height, jpeg_quality (empty unless JPEG)."""
    jpeg = table["format"].eq("JPEG")
    quality = table["estimated_QF"].where(jpeg)
    return table.assign(width=table["w"], height=table["h"], jpeg_quality=quality,
                        group=table["src"])  # fmt: skip


def balanced_accuracy(per_source: pd.DataFrame, column: str) -> float:
    real = per_source[per_source["label"] == "REAL"][column] < 0
    fake = per_source[per_source["label"] == "FAKE"][column] > 0
    return 0.5 * (real.mean() + fake.mean())


def leave_one_source_out(table: pd.DataFrame, detectors) -> pd.DataFrame:
    """Each copy's quality-calibrated LLR, the model fitted on every other source."""
    out = table.copy()
    for source in table["src"].unique():
        held = table["src"] == source
        fit = table[~held]
        model = QualityModel.fit(fit[fit["label"] == "REAL"], fit[fit["label"] == "FAKE"],
                                 detectors, group="group")  # fmt: skip
        q = quality_features(table[held])
        for name in detectors:
            out.loc[held, name] = model.llr(name, table.loc[held, name].to_numpy(float), q)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rewind", required=True, help="ReWIND.csv of the QuAD repository")
    parser.add_argument("--published", default=None, help="ReWIND_calibrated_LOO.csv")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}")
    table = as_clipdet(pd.read_csv(args.rewind))
    detectors = [d for d in DETECTORS if d in table.columns]
    keys = ["src", "label"]
    raw = table.groupby(keys)[detectors].mean().reset_index()
    start = time.perf_counter()
    calibrated = leave_one_source_out(table, detectors)
    seconds = time.perf_counter() - start
    summed = calibrated.groupby(keys)[detectors].sum().reset_index()
    rows = {"raw scores, mean per source": {d: balanced_accuracy(raw, d) for d in detectors},
            "clipdet --quality (size + JPEG quality), sum per source":
                {d: balanced_accuracy(summed, d) for d in detectors}}  # fmt: skip
    if args.published:
        published = pd.read_csv(args.published).groupby(keys)[detectors].mean().reset_index()
        rows["QuAD published LOO (IQA_LoDa), mean per source"] = {
            d: balanced_accuracy(published, d) for d in detectors
        }
    result = pd.DataFrame(rows).T
    result["AVG"] = result.mean(axis=1)
    print(
        f"ReWIND: {len(table):,} copies of {table['src'].nunique()} sources; "
        f"{table['src'].nunique()} leave-one-source-out fits in {seconds:.1f} s"
    )
    print("balanced accuracy per source:")
    print(result.to_string(float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
