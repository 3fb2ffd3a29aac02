"""The eval job's figures: per-class accuracy against training images, and the confusion matrix.

Rendered with matplotlib's object API (no pyplot state, no display) into PNG bytes, written through
etils.epath so a `gs://` workdir gets them too.
"""

from __future__ import annotations

import io

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_png(figure: Figure, path, dpi: int = 120) -> None:
  """Renders `figure` to a PNG at `path` (any etils.epath path: local, gs://, ...)."""
  FigureCanvasAgg(figure)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
  epath.Path(path).write_bytes(buffer.getvalue())


def per_class_accuracy_plot(path, per_class_accuracy, train_counts, *, title: str) -> None:
  """One point per class: top-1 (%) [C] against its training images [C] (log axis), with the mean
  accuracy over groups of classes adjacent in the count ranking (the long-tail curve)."""
  accuracy = np.asarray(per_class_accuracy, np.float64)
  counts = np.asarray(train_counts, np.float64)
  order = np.argsort(-counts, kind="stable")
  figure = Figure(figsize=(7, 4.5))
  axes = figure.add_subplot()
  axes.scatter(counts, accuracy, s=12 if len(counts) <= 1000 else 2, alpha=0.6, label="class")
  groups = np.array_split(order, min(len(order), 20))
  axes.plot(
    [counts[g].mean() for g in groups],
    [accuracy[g].mean() for g in groups],
    color="C3",
    marker="o",
    markersize=3,
    label=f"mean over {len(groups)} groups of classes",
  )
  if counts.max() > counts.min():
    axes.set_xscale("log")
  axes.set_xlabel("training images of the class")
  axes.set_ylabel("top-1 accuracy (%)")
  axes.set_ylim(-2, 102)
  axes.set_title(title)
  axes.grid(alpha=0.3)
  axes.legend(loc="lower right")
  save_png(figure, path)


def confusion_matrix_plot(path, confusion, *, title: str, bin_labels=None) -> None:
  """The confusion matrix [nb, nb] (rows: true, columns: predicted; classes or bins of classes sorted by
  training images, head first), each row normalised to sum to 1 (an empty row stays 0)."""
  confusion = np.asarray(confusion, np.float64)
  totals = confusion.sum(axis=1, keepdims=True)
  normalised = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
  figure = Figure(figsize=(6.5, 5.5))
  axes = figure.add_subplot()
  image = axes.imshow(normalised, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
  figure.colorbar(image, ax=axes, label="fraction of the true row")
  axes.set_xlabel("predicted (sorted by training images, head -> tail)")
  axes.set_ylabel("true (sorted by training images, head -> tail)")
  if bin_labels is not None and len(bin_labels) <= 30:
    ticks = np.arange(len(bin_labels))
    axes.set_xticks(ticks, labels=bin_labels, rotation=90, fontsize=7)
    axes.set_yticks(ticks, labels=bin_labels, fontsize=7)
  axes.set_title(title)
  save_png(figure, path)
