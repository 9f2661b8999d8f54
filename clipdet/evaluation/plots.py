"""ROC curves per generator and score histograms per model, as PNG files."""

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from clipdet.constants import LABEL_COLUMN, REAL, SYNTHETIC, TYPE_COLUMN  # noqa: E402
from clipdet.evaluation.metrics import EvaluationData  # noqa: E402

logger = logging.getLogger(__name__)


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_roc_curves(data: EvaluationData, out_dir: str | Path) -> list[Path]:
    """One figure per generator, one curve per model (AUC in the legend)."""
    out_dir, written = Path(out_dir), []
    for typ in data.types:
        subset = data.table[data.table[TYPE_COLUMN].isin([REAL, typ])]
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for column in data.score_columns:
            score = subset[column].to_numpy(dtype=float)
            keep = np.isfinite(score)
            if keep.sum() < 2 or len(np.unique(subset[LABEL_COLUMN][keep])) < 2:
                continue
            fpr, tpr, _ = skm.roc_curve(subset[LABEL_COLUMN][keep], score[keep])
            ax.plot(fpr, tpr, lw=1.8, label=f"{column} (AUC {skm.auc(fpr, tpr):.3f})")
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel="false-positive rate (real called synthetic)",
            ylabel="detection rate (synthetic caught)",
            title=f"ROC: real vs {typ}",
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        written.append(_save(fig, out_dir / f"roc_{safe_name(typ)}.png"))
    return written


def plot_score_histograms(data: EvaluationData, out_dir: str | Path) -> list[Path]:
    """One figure per model: LLR distributions of real and synthetic images, threshold at 0."""
    out_dir, written = Path(out_dir), []
    for column in data.score_columns:
        scores = data.table[column].to_numpy(dtype=float)
        keep = np.isfinite(scores)
        if not keep.any():
            continue
        label = data.table[LABEL_COLUMN].to_numpy()
        bins = np.linspace(scores[keep].min(), scores[keep].max(), 41)
        fig, ax = plt.subplots(figsize=(6, 4))
        for value, name, colour in ((0, REAL, "tab:blue"), (1, SYNTHETIC, "tab:red")):
            ax.hist(
                scores[keep & (label == value)],
                bins=bins,
                alpha=0.55,
                color=colour,
                label=f"{name} (n={int((keep & (label == value)).sum())})",
            )
        ax.axvline(0, c="k", lw=1, ls="--", label="threshold 0")
        ax.set(xlabel="LLR (> 0: synthetic)", ylabel="images", title=f"Scores of {column}")
        ax.legend(fontsize=8)
        written.append(_save(fig, out_dir / f"hist_{safe_name(column)}.png"))
    return written


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    logger.info("wrote %s", path)
    return path


def plot_confusion(matrix, path: str | Path, title: str) -> Path:
    """Heat map of a confusion matrix (true rows x predicted columns): colour is the share of
    the row, each cell shows its count."""
    counts = matrix.to_numpy(dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n_rows, n_cols = counts.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n_cols, 1.2 + 0.7 * n_rows))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(n_rows):
        for j in range(n_cols):
            colour = "white" if shares[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=colour)
    if n_rows > n_cols - 1:  # rows below the known classes: generators held out of training
        ax.axhline(n_cols - 1.5, color="grey", lw=1.2, ls="--")
    ax.set_xticks(range(n_cols), [str(c) for c in matrix.columns], rotation=35, ha="right")
    ax.set_yticks(range(n_rows), [str(r) for r in matrix.index])
    ax.set(xlabel="predicted (at the stored threshold)", ylabel="true typ", title=title)
    fig.colorbar(image, ax=ax, label="share of the true typ")
    return _save(fig, Path(path))


def plot_sweep(table, layers: list[str], path: str | Path) -> Path:
    """A sweep's cross-validated AUC by layer (in the asked order), one line per backbone,
    with the bootstrap interval as a band where the table has one."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    x = np.arange(len(layers))
    for backbone, rows in table.groupby("backbone", sort=False):
        by_layer = rows.set_index("layer").reindex(layers)
        auc = by_layer["auc"].to_numpy(dtype=float)
        ax.plot(x, auc, marker="o", lw=1.8, label=backbone)
        if "auc_lo" in by_layer:
            low, high = (by_layer[c].to_numpy(dtype=float) for c in ("auc_lo", "auc_hi"))
            ax.fill_between(x, low, high, alpha=0.15)
    ax.set_xticks(x, layers)
    ax.set(xlabel="feature layer", ylabel="cross-validated AUC", ylim=(None, 1.005),
           title="Linear probes: AUC by backbone and layer")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
