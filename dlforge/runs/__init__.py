"""Runs: the run folder, the run registry (SQLite), plots and model cards."""

from dlforge.runs.card import metrics_table, write_model_card
from dlforge.runs.plots import plot_compare, plot_confusion_matrix, plot_run
from dlforge.runs.registry import FINISH_STATUSES, STATUSES, RunRegistry, git_revision
from dlforge.runs.rundir import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    is_run_dir,
    list_run_dirs,
    metrics_columns,
    new_run_dir,
    read_metrics,
    resolve_run,
    write_metrics_csv,
)

__all__ = [
    "FINISH_STATUSES",
    "STATUSES",
    "RunRegistry",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "git_revision",
    "is_run_dir",
    "list_run_dirs",
    "metrics_columns",
    "metrics_table",
    "new_run_dir",
    "plot_compare",
    "plot_confusion_matrix",
    "plot_run",
    "read_metrics",
    "resolve_run",
    "write_metrics_csv",
    "write_model_card",
]
