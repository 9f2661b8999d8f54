"""List the detectors clipdet knows and the model folders in --weights_dir, with their
download state: `downloaded` (the weights file is there), `downloads on first use` (a known
detector not fetched yet), `weights missing` (a local folder without its weights file); then
the licence of any model that is not Apache-2.0. With --backbones: the backbone aliases that
`clipdet train --backbone` and `clipdet sweep` take, in their libraries' names, with the
licences that are not permissive.

    clipdet models [--weights_dir weights]
    clipdet models --backbones
    clipdet models --card BFREE_dino2reg4[,UnivFD]

With --card: each named model's card (what it was trained on, the generators it covers, its
licence, published figures and known blind spots): `<weights_dir>/<name>/card.md` for a model
of your own, else the card clipdet ships (configs/cards/).
"""

import sys

from clipdet.cli.options import (
    fatal,
    make_parser,
)
from clipdet.constants import default_weights_dir

DOWNLOADED = "downloaded"
ON_FIRST_USE = "downloads on first use"
MISSING = "weights missing"


def add_parser(subparsers=None):
    p = make_parser(
        subparsers, "models", __doc__, "known detectors and backbones, and download state", run
    )
    p.add_argument(
        "--weights_dir", "-w", default=default_weights_dir(), help="folder of model folders"
    )
    p.add_argument(
        "--backbones", action="store_true", help="list the backbone aliases for linear probes"
    )
    p.add_argument(
        "--card", default=None, metavar="NAME[,NAME]",
        help="print the model card of each named model ('all': every known detector)",
    )  # fmt: skip
    return p


def print_cards(names: str, weights_dir) -> int:
    """Each named model's card on stdout; a model without one says so in one line (stderr)
    and makes the exit status 1."""
    from clipdet.models.registry import known_detectors, model_card

    wanted = list(known_detectors()) if names == "all" else [n for n in names.split(",") if n]
    status = 0
    for i, name in enumerate(wanted):
        card = model_card(name, weights_dir)
        if card is None:
            print(f"error: {name} has no model card (configs/cards/{name}.md or "
                  f"{weights_dir}/{name}/card.md)", file=sys.stderr)  # fmt: skip
            status = 1
            continue
        print(("\n" if i else "") + card.rstrip())
    return status


def backbone_table() -> list[dict]:
    """One row per backbone alias: name, library:model:tag, description, licence."""
    from clipdet.models.registry import known_backbones

    return [
        {"name": name, "backbone": spec.reference, "description": spec.description,
         "licence": spec.licence}
        for name, spec in known_backbones().items()
    ]  # fmt: skip


def print_rows(rows: list[dict], columns: tuple[str, ...]) -> None:
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns} if rows else {}
    print("  ".join(c.ljust(widths.get(c, len(c))) for c in columns).rstrip())
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        if row["licence"]:
            print(f"{row['name']}: {row['licence']}")


def model_table(weights_dir) -> list[dict]:
    """One row per model usable with --models: name, arch, task, source, state, description."""
    from pathlib import Path

    import yaml

    from clipdet.constants import CONFIG_FILENAME, DETECTION_TASK
    from clipdet.models.registry import known_detectors
    from clipdet.models.weights import available_models

    known = known_detectors()
    rows = []
    for name in available_models(weights_dir):
        config_path = Path(weights_dir) / name / CONFIG_FILENAME
        config = known[name].config if name in known else {}
        if config_path.is_file():
            with open(config_path, encoding="utf-8") as f:
                config = yaml.safe_load(f) or {}
        weights = Path(weights_dir) / name / str(config.get("weights_file", "weights.pth"))
        state = DOWNLOADED if weights.is_file() else ON_FIRST_USE if name in known else MISSING
        rows.append({
            "name": name,
            "arch": str(config.get("arch", "?")),
            "task": str(config.get("task", DETECTION_TASK)),
            "source": "known" if name in known else "local",
            "state": state,
            "description": known[name].description if name in known else "",
            "licence": known[name].licence if name in known else "",
        })  # fmt: skip
    return rows


def run(args) -> int:
    if args.card:
        return print_cards(args.card, args.weights_dir)
    if args.backbones:
        print_rows(backbone_table(), ("name", "backbone", "description"))
        return 0
    try:
        rows = model_table(args.weights_dir)
    except (OSError, ValueError) as e:
        return fatal(e)
    print_rows(rows, ("name", "arch", "task", "source", "state"))
    print(f"weights folder: {args.weights_dir}", file=sys.stderr)
    return 0
