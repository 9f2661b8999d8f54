"""The kinds of column a result table holds, declared once: consumers (metrics, the report,
calibration, decisions) ask for the columns of a kind instead of excluding the ones they know."""

from dataclasses import dataclass

NAME = "name"  # filename
LABEL = "label"  # typ, in a labelled list
SCORE = "score"  # one detector's LLR (> 0 synthetic)
FUSION = "fusion"  # the detectors' fused LLR
ATTRIBUTION = "attribution"  # an attribution model's label, probabilities and scores
VERDICT = "verdict"  # a decision and its reason
CALIBRATED = "calibrated"  # a detector's LLR calibrated for the image's quality (QuAD)
FACT = "fact"  # what was read of the image itself (size, JPEG quality)
PROVENANCE = "provenance"  # evidence read from the file (C2PA, metadata, watermarks)
VIDEO = "video"  # a video's summary (frames, duration, temporal statistic)
VIEW = "view"  # the decision LLR of an in-memory view of the image (--views)
EXPLANATION = "explanation"  # why a detector scored as it did (a concept model's concepts)
GROUP = "group"  # copies of one picture
SOURCE = "source"  # where a streamed row came from (shard, row)
ERROR = "error"  # why a row could not be scored (empty when fine)

KINDS = (NAME, LABEL, SCORE, FUSION, ATTRIBUTION, VERDICT, CALIBRATED, FACT, PROVENANCE, VIDEO,
         VIEW, EXPLANATION, GROUP, SOURCE, ERROR)  # fmt: skip


@dataclass(frozen=True)
class Column:
    """One declared column: its name in the table and its kind (one of ``KINDS``)."""

    name: str
    kind: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown column kind {self.kind!r}; valid: {', '.join(KINDS)}")
