"""Where a scoring run's stages run, chosen by name from a table of routes built the same way:

    local    this process and its decoding workers (optionally with evidence maps or a profile)
    ray      Ray Data: decoding in CPU tasks, inference in an actor pool (ray_engine.py)

``open_route`` loads the models and gives a ``Route``; ``score_list`` runs one whole: resume
what is done, score the rest, and return every row's result (``run.RunOutcome``). The command
line (``clipdet score``, ``main.py``) and Python callers take the same routes.
"""

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from clipdet.options import RunOptions
from clipdet.pipeline.record import ImageResult, TableLayout
from clipdet.pipeline.run import RunOutcome, open_partial, run_scoring


@dataclass(frozen=True)
class EngineOptions:
    """Which route and its settings: ``engine`` "local" or "ray"; for Ray the cluster's
    ``ray_address``, ``workers``, ``gpus_per_worker`` and ``cpus_per_worker``; ``block_rows``
    per resumable block (Ray engine and outputs at a URL; None: the default); on the local
    engine ``maps`` (a folder for evidence maps) and ``profile`` (time per stage)."""

    engine: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    block_rows: int | None = None
    maps: str | None = None
    profile: bool = False

    @classmethod
    def from_args(cls, args) -> "EngineOptions":
        """The options an argparse namespace holds (attributes of the same names)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in vars(args).items() if k in names and v is not None})


@dataclass
class Route:
    """Loaded models, resolved options, the run's paths and its scorer (rows -> results in any
    order). ``profile`` and ``map_writer`` are set on the local route when asked for."""

    models: list
    options: RunOptions
    paths: list[str]
    score_rows: Callable[[list[int]], Iterator[ImageResult]]
    block_rows: int | None = None  # None: the local partial file; 0: default-size blocks
    profile: object | None = None
    map_writer: object | None = None


def _local_route(names, weights_dir, options: RunOptions, paths, engine: EngineOptions) -> Route:
    from clipdet.pipeline.scoring import iter_scores, load_models

    options = options.resolved()
    models = load_models(names, weights_dir, options)
    map_writer, profile = None, None
    if engine.maps:
        from clipdet.pipeline.evidence_maps import MapWriter

        map_writer = MapWriter(engine.maps)
    if engine.profile:
        from clipdet.pipeline.profile import Profile

        profile = Profile(options.device)

    def score_rows(rows):
        found = iter_scores(models, paths, options, rows, map_writer is not None, profile)
        return map_writer.wrap(found, paths) if map_writer else found

    return Route(models, options, paths, score_rows, engine.block_rows, profile, map_writer)


def _ray_driver(names, weights_dir, options: RunOptions, engine: EngineOptions):
    """(cluster, options resolved for its actors, models, prepare stage) of a Ray run. The
    driver loads the models on CPU (the prepare stage and the run's signature need them); the
    infer actors load their own."""
    if engine.maps or engine.profile:
        raise ValueError("--maps and --profile work with the local engine only")
    from clipdet.pipeline.ray_engine import RayEngine, RayOptions
    from clipdet.pipeline.scoring import load_models, scoring_stages

    ray_options = RayOptions(
        engine.ray_address, engine.workers, engine.gpus_per_worker, engine.cpus_per_worker
    )
    cluster = RayEngine(ray_options, options.device)
    options = cluster.run_options(options)
    models = load_models(names, weights_dir, replace(options, device="cpu", compile=False))
    preparer, _ = scoring_stages(models, options)
    return cluster, options, models, preparer


def _ray_route(names, weights_dir, options: RunOptions, paths, engine: EngineOptions) -> Route:
    from clipdet.pipeline.engine import with_progress

    cluster, options, models, preparer = _ray_driver(names, weights_dir, options, engine)

    def score_rows(rows):
        results = cluster.iter_scores(preparer, models, weights_dir, paths, rows, options)
        return with_progress(results, len(rows), options.progress)

    return Route(models, options, paths, score_rows, engine.block_rows or 0)


ROUTES = {"local": _local_route, "ray": _ray_route}


def stream_to_folder(
    names: Sequence[str],
    weights_dir,
    options: RunOptions,
    engine: EngineOptions,
    out: str,
    fusion: str | None,
    *,
    in_list: str | None = None,
    in_wds: str | None = None,
    resume: bool = False,
):
    """The streamed Ray route (``ray_stream``): the cluster reads the list's files or the
    WebDataset tars and writes Parquet parts into the folder ``out``; the driver never holds
    the rows. Returns the counts (``ray_stream.StreamOutcome``)."""
    if engine.engine != "ray":
        raise ValueError("an output folder or --in_wds needs --engine ray")
    from clipdet.pipeline.ray_stream import stream_scores
    from clipdet.pipeline.resume import models_signature
    from clipdet.pipeline.run import options_signature
    from clipdet.pipeline.shards import find_shards

    shards = find_shards(in_list, in_wds)
    cluster, options, models, preparer = _ray_driver(names, weights_dir, options, engine)
    signature = {"models": models_signature(models), **options_signature(options)}
    return stream_scores(cluster, preparer, models, weights_dir, shards, out, options, fusion,
                         resume, signature)  # fmt: skip


def open_route(
    names: Sequence[str],
    weights_dir,
    options: RunOptions,
    paths: Sequence[str],
    engine: EngineOptions | None = None,
) -> Route:
    """Load ``names`` for the route ``engine.engine`` names (default: local)."""
    engine = engine or EngineOptions()
    if engine.engine not in ROUTES:
        raise ValueError(f"unknown engine {engine.engine!r}; valid choices: {', '.join(ROUTES)}")
    return ROUTES[engine.engine](names, weights_dir, options, list(paths), engine)


def score_list(
    route: Route,
    filenames: Sequence[str],
    out_path: str | None,
    fusion: str | None,
    resume: bool = False,
) -> RunOutcome:
    """Score every row of the route's paths (named ``filenames``), recording results beside
    ``out_path`` as they come (a partial file or resumable blocks; nothing when None) and
    skipping, with ``resume``, what an earlier run recorded. Raises before any work for a
    refused resume."""
    layout = TableLayout.of(route.models, route.options, route.paths)  # the run's columns
    done, writer = open_partial(out_path, route.paths, route.models, route.options, resume,
                                route.block_rows, layout.header(fusion))  # fmt: skip
    outcome = run_scoring(route.models, filenames, route.paths, route.options, fusion, done,
                          writer, route.score_rows, route.profile, layout)  # fmt: skip
    if route.map_writer is not None:
        route.map_writer.write_manifest(filenames)
    return outcome


def finish_profile(route: Route, write: Callable[[], None]) -> str | None:
    """Run ``write`` (the output), timed as the profile's writing stage; the profile's report
    when there is one."""
    started = time.perf_counter()
    write()
    if route.profile is None:
        return None
    route.profile.add("writing", time.perf_counter() - started)
    return route.profile.report()
