"""A whole scoring job, as ``clipdet score`` runs it and as ``clipdet.api.score_images`` runs
it from Python: load the models on the chosen route, check the calibration, score (resuming
what a partial file holds), add the calibrated verdicts, and write the output file, the frames
file and the report. The command line only parses its flags and prints."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pandas as pd

from clipdet import storage
from clipdet.constants import (
    DEFAULT_FUSION,
    DEFAULT_MODELS,
    GROUP_AUTO,
    GROUP_COLUMN,
    VERDICT_COLUMN,
)
from clipdet.options import RunOptions
from clipdet.pipeline.routes import EngineOptions, finish_profile, open_route, score_list

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("csv", "jsonl", "parquet", "table")


@dataclass(frozen=True)
class ScoreRequest:
    """What a job scores and writes, resolved once: the ``models`` (names in ``weights_dir``),
    how it computes (``options``; ``options.calibration`` also gives the verdicts) and where
    (``engine``), the ``fusion`` of the detectors, the output file ``out`` (None: none) in
    ``fmt`` (None: by its extension), ``resume`` an interrupted job to the same output,
    the verdict ``threshold`` when there is no calibration, ``frames_out`` (one row per video
    frame) and ``report`` (an HTML page; ``command``: the command line it shows); ``group``
    (a column of the input list, or "auto": the copies found among the images) puts copies of
    one picture in one group, and ``groups_out`` writes one row per group with the copies'
    evidence added up (clipdet.evaluation.groups)."""

    models: tuple[str, ...]
    weights_dir: str = "weights"
    options: RunOptions = field(default_factory=RunOptions)
    engine: EngineOptions = field(default_factory=EngineOptions)
    fusion: str | None = DEFAULT_FUSION
    out: str | None = None
    fmt: str | None = None
    resume: bool = False
    threshold: float = 0.0
    frames_out: str | None = None
    report: str | None = None
    command: str = ""
    group: str | None = None
    groups_out: str | None = None

    def output_format(self) -> str:
        if self.fmt is not None:
            if self.fmt not in OUTPUT_FORMATS:
                raise ValueError(f"unknown format {self.fmt!r}; valid: {', '.join(OUTPUT_FORMATS)}")
            return self.fmt
        if self.out is None:
            return "csv"
        from clipdet.files import table_format

        return table_format(self.out)


@dataclass
class ScoreJob:
    """What a job gives back: the output table (with calibrated verdicts when calibrated),
    the run's outcome (``run.RunOutcome``: interrupted, failure, every row's record), the
    calibration, the frames table (when written or reported) and the profile's report."""

    table: pd.DataFrame
    outcome: object
    calibration: object | None = None
    frames: pd.DataFrame | None = None
    profile: str | None = None
    groups: pd.DataFrame | None = None  # one row per group (with groups_out)

    @property
    def detector_names(self) -> list[str]:
        return self.outcome.results.detector_names


def run_score_job(
    request: ScoreRequest,
    filenames: Sequence[str],
    paths: Sequence[str],
    labels: pd.DataFrame | None = None,
) -> ScoreJob:
    """Score ``paths`` (named ``filenames`` in the outputs; ``labels``: the input list's table,
    for the report's metrics) as ``request`` says. An output file is written whatever happens
    to the run (an interrupted one marks its unscored rows); the partial file it leaves is
    resumed with ``resume``."""
    calibration = _read_calibration(request.options)
    _check_groups(request, labels, calibration)
    options = request.options  # --group auto: each image's copy keys are read too
    if request.group == GROUP_AUTO:
        options = replace(options, copy_keys=True)
    route = open_route(request.models, request.weights_dir, options, paths, request.engine)
    if calibration is not None:  # refused before any image is scored
        from clipdet.evaluation.calibration_run import model_fingerprint

        detectors = [m for m in route.models if m.attribution is None]
        calibration.check_models({m.name: model_fingerprint(m) for m in detectors},
                                 request.fusion)  # fmt: skip
    outcome = score_list(route, filenames, request.out, request.fusion, request.resume)
    table = outcome.table
    if calibration is not None:  # every output format holds the three verdicts
        from clipdet.evaluation.verdicts import add_calibrated_verdicts

        table = add_calibrated_verdicts(table, calibration)
    if request.group:
        table = _with_groups(table, request.group, labels)
    names = outcome.results.detector_names
    fmt = request.output_format()

    def write() -> None:
        if request.out is not None:
            storage.write_bytes(request.out, render_output(table, names, fmt, request.threshold))

    profile = finish_profile(route, write)
    job = ScoreJob(table, outcome, calibration, profile=profile)
    if request.groups_out:
        from clipdet.evaluation.groups import group_evidence
        from clipdet.files import write_table

        job.groups = group_evidence(table, calibration)
        write_table(job.groups, request.groups_out)
    if request.frames_out or request.report:
        from clipdet.pipeline.extensions.video_summary import VideoSummary, frame_table

        videos = outcome.results.extension_values(VideoSummary.name)
        job.frames = frame_table(videos, filenames, names, request.fusion)
    if request.frames_out:
        from clipdet.files import table_bytes, table_format

        data = table_bytes(job.frames, table_format(request.frames_out))
        storage.write_bytes(request.frames_out, data)
    if request.report:
        from clipdet.evaluation.html_report import ReportInputs, write_report

        inputs = ReportInputs(table, list(paths), labels, request.engine.maps,
                              request.threshold, command=request.command,
                              fusion=request.fusion, calibration=calibration,
                              frames=job.frames, weights_dir=request.weights_dir,
                              groups=job.groups)  # fmt: skip
        write_report(inputs, request.report)
    return job


def _check_groups(request: ScoreRequest, labels, calibration) -> None:
    """Refuse, before anything is scored, a group column the list lacks, or group verdicts
    without a calibration."""
    if request.groups_out and not request.group:
        raise ValueError("--groups_out needs --group (a list column, or auto)")
    if request.groups_out and calibration is None:
        raise ValueError("--groups_out needs --calibration: a group's verdict is calibrated")
    if request.group and request.group != GROUP_AUTO:
        if labels is None or request.group not in labels.columns:
            raise ValueError(f"--group {request.group}: the input list has no such column "
                             "(give a list with it, or --group auto)")  # fmt: skip


def _with_groups(table: pd.DataFrame, group: str, labels) -> pd.DataFrame:
    """The table with ``group`` and ``group_size``: from the list's column, or found among
    the images (``auto``; rows that could not be read are groups of their own)."""
    from clipdet.evaluation.groups import add_group_columns

    if group == GROUP_AUTO:
        from clipdet.evaluation.copies import find_copies
        from clipdet.pipeline.extensions.copy_keys import KEY_COLUMNS

        labels = find_copies(*(table[name].tolist() for name in KEY_COLUMNS))
        return add_group_columns(table, labels, failed_alone=True)
    return add_group_columns(table, labels[group].tolist(), column=group)


def render_output(table: pd.DataFrame, names: Sequence[str], fmt: str, threshold: float) -> bytes:
    """The output's bytes: CSV and Parquet hold the table as it is; JSON lines and the
    terminal table add the verdict at ``threshold`` unless the table has calibrated ones."""
    from clipdet.files import table_bytes
    from clipdet.pipeline.results import add_verdicts, format_for_terminal

    if fmt in ("table", "jsonl") and VERDICT_COLUMN not in table.columns:
        table = add_verdicts(table, names, threshold)
    if fmt == "table":
        return (format_for_terminal(table) + "\n").encode()
    return table_bytes(table, fmt)


def _read_calibration(options: RunOptions):
    if not options.calibration:
        return None
    from clipdet.evaluation.calibration import Calibration

    return Calibration.load(options.calibration)


def score_images(
    paths: Sequence,
    models: Sequence[str] = DEFAULT_MODELS,
    weights_dir="weights",
    *,
    fusion: str | None = DEFAULT_FUSION,
    options: RunOptions | None = None,
    out: str | None = None,
    resume: bool = False,
    engine: str | EngineOptions = "local",
    threshold: float = 0.0,
    frames_out: str | None = None,
    report: str | None = None,
    filenames: Sequence[str] | None = None,
    group: Sequence | str | None = None,
    groups_out: str | None = None,
    **fields,
) -> pd.DataFrame:
    """Score image and video files as ``clipdet score`` does, on the same route; returns the
    output table: ``filename`` (``filenames``, default the paths), one LLR column per
    detection model, ``fusion`` of those (unless ``fusion`` is None or "none"), the columns
    of each attribution model and of each row extension, and ``error`` (empty when fine).

    ``out`` writes it (CSV, Parquet or JSON lines by extension) and keeps a partial file while
    scoring, which ``resume=True`` continues after an interruption; ``calibration="cal.yaml"``
    adds the calibrated verdicts; ``engine`` "ray" (or an ``EngineOptions``) scores on Ray;
    ``frames_out`` and ``report`` as the command's flags; ``group`` each path's group label (a
    sequence) or "auto" (the copies found among the images), ``groups_out`` the group file
    (with a calibration). ``fields`` are RunOptions fields, e.g.
    ``score_images(paths, device="cpu", batch_size=8, provenance=True)``. Ctrl-C raises
    KeyboardInterrupt once what was scored is on disk; an error that stops the run is
    raised likewise."""
    paths = [str(p) for p in paths]
    if isinstance(engine, str):
        engine = EngineOptions(engine=engine)
    labels, column = None, group
    if group is not None and not isinstance(group, str):
        labels, column = pd.DataFrame({GROUP_COLUMN: list(group)}), GROUP_COLUMN
    request = ScoreRequest(
        tuple(models), str(weights_dir), replace(options or RunOptions(), **fields), engine,
        fusion, None if out is None else str(out), None, resume, threshold,
        None if frames_out is None else str(frames_out), None if report is None else str(report),
        group=column, groups_out=None if groups_out is None else str(groups_out),
    )  # fmt: skip
    names = list(filenames) if filenames is not None else paths
    job = run_score_job(request, names, paths, labels)
    if job.outcome.interrupted:
        raise KeyboardInterrupt
    if job.outcome.failure is not None:
        raise job.outcome.failure
    return job.table
