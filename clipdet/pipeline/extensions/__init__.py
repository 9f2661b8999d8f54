"""Row extensions: optional families of output columns beside the LLRs.

An extension is one module that says, for its family of columns:

- when it is on (``from_options``: from the run's options and, when known, its paths; or
  ``from_models``: from the run's loaded models, e.g. a concept model's explanation);
- what the prepare stage computes for a row (``prepare_image``, ``prepare_video``; run in the
  decoding worker, so the extension pickles and any engine runs it), and what it still reads
  of a file whose pixels failed (``prepare_failed``);
- how a video's frames fold into its row (``fold_frames``), and an image's views
  (``fold_views``, --views);
- what it reads of the features a detector's head reads (``fold_embedding``, with
  ``reads_embedding``; in the infer stage);
- its columns with their kind (``columns``) and their values in a table (``table_columns``);
- its JSON form in partial files and blocks (``to_json`` / ``from_json``);
- what a resumed run must repeat (``signature``).

The pipeline carries each row's values in ``record.extras`` (name -> value) and never looks
inside them. Registered in the order their columns appear, before ``error``:

    provenance   --provenance: the evidence tokens and the generator they name
    facts        --calibration: width, height and JPEG quality read from the file's header
    domain       --calibration with a domain: the distance to the nearest calibration image
    views        --views: each view's decision LLR (llr@<view>)
    copy_keys    --group auto: perceptual hashes and a feature sketch (copy_hash, copy_sketch)
    concepts     a concept model in the run: its three strongest concepts (concepts_<model>)
    video        a video's summary: frames, duration_s, temporal, frame_max
"""

from collections.abc import Sequence

from clipdet.pipeline.extensions.base import (  # noqa: F401 -- the protocol, from one place
    FileSource,
    Frames,
    RowExtension,
    VideoSource,
    values_array,
)
from clipdet.pipeline.extensions.calibration_domain import CalibrationDomain
from clipdet.pipeline.extensions.concepts import ConceptEvidence
from clipdet.pipeline.extensions.copy_keys import CopyKeys
from clipdet.pipeline.extensions.image_facts import ImageFacts
from clipdet.pipeline.extensions.provenance import ProvenanceEvidence
from clipdet.pipeline.extensions.video_summary import VideoSummary
from clipdet.pipeline.extensions.view_scores import ViewScores

EXTENSIONS: dict[str, type[RowExtension]] = {}


def register_extension(cls: type[RowExtension]) -> type[RowExtension]:
    """Add a row extension (a class decorator); its columns come after those registered
    before it."""
    if cls.name in EXTENSIONS and EXTENSIONS[cls.name] is not cls:
        raise ValueError(f"a row extension named {cls.name!r} is already registered")
    EXTENSIONS[cls.name] = cls
    return cls


def run_extensions(
    options, paths: Sequence[str] | None = None, models: Sequence = ()
) -> tuple[RowExtension, ...]:
    """The extensions a run of ``models`` with ``options`` on ``paths`` has on, in
    registration order (those its options turn on, then those its models do)."""
    found = (cls.from_options(options, paths) or cls.from_models(models)
             for cls in EXTENSIONS.values())  # fmt: skip
    return tuple(ext for ext in found if ext is not None)


_READERS: dict[type, RowExtension] = {}  # one bare instance per class, made once


def readers() -> dict[str, RowExtension]:
    """An instance of every registered extension, for reading stored values and naming
    columns (``ExtensionClass()``, made once: records are written row by row), in
    registration order."""
    return {name: _READERS.get(cls) or _READERS.setdefault(cls, cls())
            for name, cls in EXTENSIONS.items()}  # fmt: skip


def known_columns() -> dict[str, str]:
    """Every registered extension's column name -> kind (for tables from elsewhere)."""
    return {c.name: c.kind for ext in readers().values() for c in ext.columns()}


for _builtin in (
    ProvenanceEvidence,
    ImageFacts,
    CalibrationDomain,
    ViewScores,
    CopyKeys,
    ConceptEvidence,
    VideoSummary,
):  # their column order
    register_extension(_builtin)
