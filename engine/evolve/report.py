"""What an evolution writes: evolve.csv, hyp_evolved.yaml, Optuna's plots, TensorBoard, progress."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from utils.config import Hyp

LOG = logging.getLogger(__name__)
HYP_ATTR = "hyp"  # user attr: the trial's whole hyp (searched and fixed keys)
EPOCHS_ATTR = "epochs_run"
ERROR_ATTR = "error"
CSV_FIELDS = ("trial", "state", "fitness", "epochs_run", "seconds", "worker", "error")
IMPORTANCE_MIN_TRIALS = 2  # fANOVA needs at least two complete trials
SLICE_PARAMS = 8  # the most important parameters get a slice plot each


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: several may share the folder
    tmp.write_text(text)
    os.replace(tmp, path)


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that ran to an outcome (complete, pruned, failed), in number order."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sorted(study.get_trials(deepcopy=False, states=states), key=lambda t: t.number)


def trial_row(t: FrozenTrial) -> dict[str, Any]:
    """One evolve.csv row: state, fitness (best epoch; empty if failed), epochs run, every hyp key."""
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else ""
    fitness = t.value if t.value is not None else (max(t.intermediate_values.values()) if t.intermediate_values else "")
    row = {"trial": t.number, "state": t.state.name, "fitness": fitness,
           "epochs_run": t.user_attrs.get(EPOCHS_ATTR, len(t.intermediate_values)),
           "seconds": round(seconds, 1) if seconds != "" else "", "worker": t.user_attrs.get("worker", ""),
           "error": t.user_attrs.get(ERROR_ATTR, "")}
    row.update(t.user_attrs.get(HYP_ATTR, {}))
    return row


def write_csv(study: optuna.Study, path: Path) -> None:
    """evolve.csv: one row per finished trial of the study (from the storage: all workers')."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_FIELDS, *(f.name for f in dataclasses.fields(Hyp))],
                            lineterminator="\n")
    writer.writeheader()
    for t in finished(study):
        writer.writerow(trial_row(t))
    _write_atomic(path, buffer.getvalue())


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def write_best_hyp(study: optuna.Study, path: Path) -> FrozenTrial | None:
    """hyp_evolved.yaml: the best complete trial's hyp (train.py --hyp loads it); None if none yet."""
    best = best_trial(study)
    if best is None:
        return None
    head = (f"# train.py --evolve: best of {len(finished(study))} trials of study '{study.study_name}': "
            f"trial {best.number}, fitness {best.value:.5f} (0.1 mAP@.5 + 0.9 mAP@.5:.95)\n")
    _write_atomic(path, head + yaml.safe_dump(best.user_attrs[HYP_ATTR], sort_keys=False))
    return best


@contextlib.contextmanager
def _pyplot_on_agg() -> Iterator[Any]:
    """pyplot on the Agg backend inside the block, the caller's backend and style restored after.

    Optuna's matplotlib plots cannot use the object API: they make their figures with
    ``plt.subplots``, need an Agg canvas (their bar labels ask it for a renderer) and set the
    "ggplot" style globally. ``rc_context`` undoes the style; the backend goes back to the one
    chosen before (a notebook's inline one; ``matplotlib.use`` would have kept Agg for good).
    A process that had not chosen one yet (train.py) stays on Agg, as it would without a display.
    """
    import matplotlib
    import matplotlib.pyplot as plt

    chosen = matplotlib.get_backend(auto_select=False)  # None: pyplot has not picked one
    with matplotlib.rc_context():
        plt.switch_backend("agg")
        try:
            yield plt
        finally:
            if chosen is not None:
                plt.switch_backend(chosen)


def write_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """evolve_history.png, evolve_importances.png (>= 2 complete trials), evolve_slices.png."""
    from optuna.visualization import matplotlib as vis

    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n_complete == 0:
        return []
    plots = {"evolve_history.png": lambda: vis.plot_optimization_history(study)}
    params = None
    if n_complete >= IMPORTANCE_MIN_TRIALS:
        with warnings.catch_warnings():  # equal fitness everywhere: importances are equal, said once in the plot
            warnings.filterwarnings("ignore", message="Target and region quantiles")
            importances = optuna.importance.get_param_importances(study)
        params = list(importances)[:SLICE_PARAMS]
        plots["evolve_importances.png"] = lambda: vis.plot_param_importances(study)
    else:
        LOG.info("evolve: parameter importances need %d complete trials (%d so far): not plotted",
                 IMPORTANCE_MIN_TRIALS, n_complete)
    plots["evolve_slices.png"] = lambda: vis.plot_slice(study, params=params)
    written = []
    with warnings.catch_warnings(), _pyplot_on_agg() as plt:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Target and region quantiles")
        for name, plot in plots.items():
            axes = plot()
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            figure.savefig(folder / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            written.append(folder / name)
    return written


class EvolveBoard:
    """TensorBoard scalars per trial at step = trial number: fitness, best so far, epochs, each hyp."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter  # local: tensorboard is slow to import

        self.writer = SummaryWriter(str(folder))

    def trial(self, t: FrozenTrial, best: float | None) -> None:
        row = trial_row(t)
        for key in ("fitness", "epochs_run"):
            if row[key] != "":
                self.writer.add_scalar(f"evolve/{key}", float(row[key]), t.number)
        if best is not None:
            self.writer.add_scalar("evolve/best_fitness", best, t.number)
        for key, value in t.params.items():
            self.writer.add_scalar(f"hyp/{key}", value, t.number)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def progress_line(t: FrozenTrial, done: int, total: int, best: FrozenTrial | None) -> str:
    """``evolve: trial 4/12 (#3) PRUNED fitness 0.1234 after 1 epochs, 12.3 s; best 0.4567 (#1)``."""
    row = trial_row(t)
    fitness = f"fitness {row['fitness']:.4f}" if row["fitness"] != "" else f"error: {row['error']}"
    best_text = f"best {best.value:.4f} (#{best.number})" if best is not None else "no complete trial yet"
    return (f"evolve: trial {done}/{total} (#{t.number}) {t.state.name} {fitness} after {row['epochs_run']} "
            f"epochs, {row['seconds']} s; {best_text}")
