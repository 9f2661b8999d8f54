"""Detection rates at a calibration's thresholds, per generator (``clipdet metrics
--calibration``)."""

import numpy as np
import pandas as pd

from clipdet.constants import FILENAME_COLUMN, INCONCLUSIVE, REAL, SYNTHETIC, TYPE_COLUMN
from clipdet.evaluation.calibration import Calibration, decision_score
from clipdet.evaluation.verdicts import coverage, quality_calibrated, verdicts


def calibrated_rates(
    labels: pd.DataFrame, scores: pd.DataFrame, calibration: Calibration
) -> dict[str, pd.DataFrame]:
    """Per target false-positive rate, three tables by ``typ`` (and their average over the
    generators, ``AVG``): ``tpr@<fpr>``, the share of each generator's images called synthetic
    (rows: every calibrated column at its own threshold; the decision column by its verdicts,
    image rules included); ``fpr@<fpr>``, the same share among the real images; and
    ``inconclusive@<fpr>``, the share of each typ whose verdict is inconclusive; and
    ``coverage@<fpr>``, the share of each typ's scored images that a verdict decides."""
    calibration.check_columns(scores)
    table = labels[[FILENAME_COLUMN, TYPE_COLUMN]].astype(str).merge(scores, on=FILENAME_COLUMN)
    decided = quality_calibrated(calibration, table)  # the scores the thresholds were set on
    types = sorted(t for t in table[TYPE_COLUMN].unique() if t != REAL)
    typs = table[TYPE_COLUMN].to_numpy()
    tables = {}
    for target in calibration.targets:
        verdict, _ = verdicts(calibration, table, target)
        tpr = pd.DataFrame(index=pd.Index(list(calibration.columns), name="column"))
        fpr = pd.DataFrame(index=tpr.index)
        for name in calibration.columns:
            if name == calibration.decision:
                called = verdict == SYNTHETIC
            else:
                threshold = calibration.point(name, target).threshold
                called = decision_score(decided, name, calibration.detectors) > threshold
            for typ in types:
                tpr.loc[name, typ] = called[typs == typ].mean()
            fpr.loc[name, REAL] = called[typs == REAL].mean() if (typs == REAL).any() else np.nan
        tpr["AVG"] = tpr[types].mean(axis=1) if types else np.nan
        present = [typ for typ in [REAL, *types] if (typs == typ).any()]
        shares = {typ: float(np.mean(verdict[typs == typ] == INCONCLUSIVE)) for typ in present}
        inconclusive = pd.DataFrame([shares], index=pd.Index([calibration.decision]))
        covered = pd.DataFrame([{typ: coverage(verdict[typs == typ]) for typ in present}],
                               index=pd.Index([calibration.decision]))  # fmt: skip
        for label, frame in (("tpr", tpr), ("fpr", fpr), ("inconclusive", inconclusive),
                             ("coverage", covered)):  # fmt: skip
            frame.index.name = f"{label}@{target:g}"
            tables[frame.index.name] = frame
    return tables
