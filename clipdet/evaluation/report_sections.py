"""Parts of the report's data that come with a run's options or models: each image's facts, a
concept model's strongest concepts, the groups of copies (--group, --groups_out) and the
models' cards."""

import pandas as pd

from clipdet.constants import CONCEPTS_PREFIX, VERDICT_COLUMN, VERDICT_REASON_COLUMN
from clipdet.evaluation.report_media import finite_number, text_of


def facts_text(record: dict) -> str:
    """``1024x768 JPEG q85`` (what the quality rules read), or empty."""
    width, height = finite_number(record.get("width")), finite_number(record.get("height"))
    if width is None or height is None:
        return ""
    quality = finite_number(record.get("jpeg_quality"))
    return f"{width:.0f}x{height:.0f}" + (f" JPEG q{quality:.0f}" if quality is not None else "")


def concept_lists(record: dict, columns: list[str]) -> list[dict]:
    """Each concept model's strongest concepts of a row: [{model, pairs: [[name, score]]}]."""
    from clipdet.pipeline.extensions.concepts import parse_concepts

    found = []
    for column in columns:
        try:
            pairs = parse_concepts(record.get(column))
        except ValueError:  # not clipdet's form: shown as it is
            pairs = [[str(record.get(column)), None]]
        if pairs:
            found.append({"model": column.removeprefix(CONCEPTS_PREFIX),
                          "pairs": [[name, score] for name, score in pairs]})  # fmt: skip
    return found


def group_sections(groups: pd.DataFrame | None) -> list[dict]:
    """The groups of two copies or more, with their verdict and evidence (the report lists
    each one's members from the rows)."""
    if groups is None:
        return []
    found = []
    for record in groups.to_dict(orient="records"):
        if int(record["size"]) < 2:
            continue
        found.append({
            "group": str(record["group"]),
            "size": int(record["size"]),
            "verdict": text_of(record.get(VERDICT_COLUMN)),
            "reason": text_of(record.get(VERDICT_REASON_COLUMN)),
            "llrs": {k: finite_number(v) for k, v in record.items()
                     if k not in ("group", "size", "best_copy", "dissent")
                     and not str(k).startswith("verdict")},
            "best_copy": text_of(record.get("best_copy")),
        })  # fmt: skip
    return found


def model_cards(detectors: list[str], weights_dir) -> dict[str, str]:
    """Each detector's card (`clipdet models --card`), where it has one."""
    from clipdet.constants import default_weights_dir
    from clipdet.models.registry import model_card

    folder = weights_dir or default_weights_dir()
    cards = {name: model_card(name, folder) for name in detectors}
    return {name: card for name, card in cards.items() if card}
