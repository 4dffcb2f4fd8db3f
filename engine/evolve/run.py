"""``train.py --evolve [N]``: hyper-parameter evolution on Optuna, each trial a full training run.

Sampler: TPE (multivariate, constant liar). It models good and bad regions from the first few
trials on, so it fits a budget of tens of trials over the ~23 keys searched; it handles log and
linear ranges and pruned trials, and its constant liar keeps parallel workers from drawing the
same point. CMA-ES would spend that whole budget adapting its covariance (its population alone
is ~13 for 23 dimensions). The first trial of a new study is the hyp file itself (YOLOv7's first
generation), so the study reports how far it got from the recipe.

Objective: the trainer's fitness (0.1 mAP@.5 + 0.9 mAP@.5:.95 of the best epoch), reported after
every epoch through the trainer's ``on_epoch_end`` hook; with pruning (default) Optuna's
MedianPruner stops a trial whose fitness is below the median of earlier trials at the same epoch.
``N`` is the study's total: workers stop when it holds N finished trials (complete, pruned or
failed, not counting killed trials, which are retried), so a rerun continues to N.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from data import load_data_config
from engine.evolve import report
from engine.evolve.space import base_params, fixed_keys, searched_keys, suggest_hyp
from engine.evolve.study import (
    WORKER_ATTR,
    evolve_dir,
    fail_dead_trials,
    folder_lock,
    open_storage,
    study_name,
    worker_id,
)
from engine.train.options import EVOLVE_TRIALS, TrainOptions, load_hyp
from engine.train.recipe import apply_recipe
from utils.config import ConfigError
from utils.distributed import dist_info_from_env
from utils.errors import UserError

LOG = logging.getLogger(__name__)
DEFAULT_PROJECT = "runs/evolve"  # instead of runs/train when --project is left at its default
MAX_FAILS_IN_ROW = 3  # failed trials in a row that end the evolution (the setup, not the values, is wrong)
STARTUP_TRIALS = 5  # random (plus the hyp file) before TPE models; and before the pruner compares
# The study remembers the command it was started with; a continuation must match these flags,
# else its fitness values would not be comparable.
SAME_FLAGS = ("data", "cfg", "weights", "epochs", "batch_size", "img_size", "single_cls", "optimizer")


def check(opt: TrainOptions) -> None:
    """Refuse what evolution cannot do (ConfigError naming the flag)."""
    if opt.resume:
        raise ConfigError("--resume continues one training; an evolution continues by running the same "
                          "command again", what="--resume with --evolve")
    if opt.notest:
        raise ConfigError("pruning and the objective need each epoch's fitness", what="--notest with --evolve")
    if dist_info_from_env().world_size > 1:
        raise ConfigError("runs in one process (run several processes on one --evolve-storage instead of DDP)",
                          what="--evolve under torchrun")
    opt.check()


def default_pruner(opt: TrainOptions) -> optuna.pruners.BasePruner:
    """MedianPruner once STARTUP_TRIALS trials finished, from the end of the first third of the epochs."""
    if not opt.evolve_prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=opt.epochs // 3)


def evolve(
    opt: TrainOptions, *, sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None, train_fn: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run trials until the study holds ``opt.evolve`` finished ones; return the summary.

    ``sampler`` / ``pruner`` default to TPE and :func:`default_pruner`; ``train_fn`` to
    ``engine.train.train`` (tests replace it).
    """
    check(opt)
    opt = apply_recipe(opt, load_data_config(opt.data))  # once: every trial starts from the same recipe
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress line replaces its per-trial log
    if train_fn is None:
        from engine.train.loop import train as train_fn
    base = load_hyp(opt)
    keys = searched_keys(fixed_keys(opt.overrides))
    project = DEFAULT_PROJECT if opt.project == TrainOptions.project else opt.project
    folder = Path(project) / opt.name if opt.evolve_storage else evolve_dir(project, opt.name, opt.exist_ok)
    url = opt.evolve_storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    with folder_lock(folder):
        storage = open_storage(url)
        name = study_name(storage, opt.evolve_study, folder.name if not opt.evolve_storage else opt.name)
        study = optuna.create_study(
            storage=storage, study_name=name, direction="maximize", load_if_exists=True,
            sampler=sampler or optuna.samplers.TPESampler(n_startup_trials=STARTUP_TRIALS),
            pruner=pruner or default_pruner(opt),
        )
        _check_same_command(study, opt, keys, url)
    LOG.info("evolve: study '%s' in %s, %d trials%s (%s), %d keys searched: %s; outputs in %s", name, url,
             opt.evolve, " (the default; --evolve N to choose)" if opt.evolve == EVOLVE_TRIALS else "",
             "pruning" if opt.evolve_prune else "no pruning", len(keys), " ".join(keys), folder)
    if len(_counted(study)) >= opt.evolve:
        LOG.info("evolve: the study already holds %d trials; pass a larger --evolve N to run more",
                 len(_counted(study)))
    for number in fail_dead_trials(study):
        LOG.info("evolve: trial %d's process died: marked failed, retried once", number)
    board = report.EvolveBoard(folder)
    fails_in_row = 0
    try:
        while (done := len(_counted(study))) + _running(study) < opt.evolve:
            trial = _one_trial(study, lambda t: _objective(t, opt, base, keys, folder, train_fn))
            best = report.best_trial(study)
            report.write_csv(study, folder / "evolve.csv")
            report.write_best_hyp(study, folder / "hyp_evolved.yaml")
            _keep_best_weights(folder / "trials", study, best)
            board.trial(trial, best.value if best else None)
            LOG.info(report.progress_line(trial, done + 1, opt.evolve, best))
            fails_in_row = fails_in_row + 1 if trial.state == TrialState.FAIL else 0
            if fails_in_row >= MAX_FAILS_IN_ROW:
                raise UserError(f"{fails_in_row} trials in a row failed, the last with: "
                                f"{trial.user_attrs.get(report.ERROR_ATTR, '?')}", what="--evolve")
    finally:
        board.close()
    return _finish(study, opt, folder, url)


def _one_trial(study: optuna.Study, objective: Callable[[optuna.Trial], float]) -> FrozenTrial:
    """Run one trial (Optuna's optimize: heartbeat, stale-trial check, states); a UserError fails
    only this trial. Returns the finished trial."""
    ran: list[FrozenTrial] = []
    study.optimize(objective, n_trials=1, catch=(UserError,), callbacks=[lambda _, t: ran.append(t)])
    return ran[0]


def _objective(trial: optuna.Trial, opt: TrainOptions, base: Any, keys: list[str], folder: Path,
               train_fn: Callable[..., dict[str, Any]]) -> float:
    """One training run with the trial's hyp; its best-epoch fitness (raises TrialPruned when pruned)."""
    trial.set_user_attr(WORKER_ATTR, worker_id())
    trial.set_user_attr(report.ERROR_ATTR, "")  # a retried trial inherits its predecessor's attrs
    hyp = suggest_hyp(trial, base, keys)
    trial.set_user_attr(report.HYP_ATTR, dataclasses.asdict(hyp))
    run_dir = folder / "trials" / f"trial{trial.number}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "hyp.yaml").write_text(yaml.safe_dump(dataclasses.asdict(hyp), sort_keys=False))
    trial_opt = dataclasses.replace(
        opt, hyp=str(run_dir / "hyp.yaml"), overrides=[], evolve=None, project=str(run_dir.parent),
        name=run_dir.name, exist_ok=True, nosave=True, noplots=True, resume="", save_period=-1,
    )
    pruned = []

    def on_epoch_end(epoch: int, row: dict[str, float]) -> bool:
        trial.report(row["fitness"], epoch)
        if opt.evolve_prune and epoch < opt.epochs - 1 and trial.should_prune():
            pruned.append(epoch)
        return bool(pruned)

    try:
        summary = train_fn(trial_opt, on_epoch_end=on_epoch_end)
    except UserError as e:  # bad values (diverged, NaN weights): this trial fails, the study goes on
        trial.set_user_attr(report.ERROR_ATTR, str(e).splitlines()[0][:300])
        raise
    trial.set_user_attr(report.EPOCHS_ATTR, int(summary["epochs"]))
    if pruned:
        raise optuna.TrialPruned(f"fitness below the median at epoch {pruned[0]}")
    return float(summary["fitness"])


def _check_same_command(study: optuna.Study, opt: TrainOptions, keys: list[str], url: str) -> None:
    """A new study records the command and enqueues the hyp file; a continued one must match it."""
    command = {k: getattr(opt, k) for k in SAME_FLAGS} | {"searched": keys}
    recorded = study.user_attrs.get("command")
    if recorded is None:
        study.set_user_attr("command", command)
        study.enqueue_trial(base_params(load_hyp(opt), keys), skip_if_exists=True)
        return
    for key, value in command.items():
        if recorded.get(key) != value:
            flag = "the searched keys (key=value overrides)" if key == "searched" else "--" + key.replace("_", "-")
            raise ConfigError(f"study '{study.study_name}' was started with {flag} {recorded.get(key)}, this command "
                              f"has {value}: start another study with a new --name", what="--evolve", where=url)


def _counted(study: optuna.Study) -> list[FrozenTrial]:
    """Finished trials that count towards N: all but the killed ones that were retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in report.finished(study) if not (t.state == TrialState.FAIL and t.number in retried)]


def _running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _keep_best_weights(trials_dir: Path, study: optuna.Study, best: FrozenTrial | None) -> None:
    """Delete the weights of every finished trial here but the best one (run folders stay small)."""
    keep = best.number if best is not None else -1
    for t in report.finished(study):
        weights = trials_dir / f"trial{t.number}" / "weights"
        if t.number != keep and weights.is_dir():
            shutil.rmtree(weights, ignore_errors=True)


def _finish(study: optuna.Study, opt: TrainOptions, folder: Path, url: str) -> dict[str, Any]:
    """Plots of the study and of the best trial's run; the summary for --json."""
    report.write_csv(study, folder / "evolve.csv")
    best = report.write_best_hyp(study, folder / "hyp_evolved.yaml")
    plots = report.write_plots(study, folder)
    if best is not None:
        _plot_trial(folder / "trials" / f"trial{best.number}", opt)
    n = len(_counted(study))
    if best is not None:
        LOG.info("evolve: %d trials; best trial %d, fitness %.4f; train with: python train.py --hyp %s",
                 n, best.number, best.value, folder / "hyp_evolved.yaml")
    return {"save_dir": str(folder), "storage": url, "study": study.study_name, "trials": n,
            "best_trial": best.number if best else -1, "fitness": best.value if best else 0.0,
            "hyp": str(folder / "hyp_evolved.yaml") if best else "", "plots": [p.name for p in plots]}


def _plot_trial(run_dir: Path, opt: TrainOptions) -> None:
    """The pictures a training run makes, for the best trial only (its run made none): results.png,
    and val.py's plots of its final weights in ``val/``."""
    from engine.train.plots import plot_results
    from engine.val import ValOptions, run_val

    if (run_dir / "results.csv").is_file():
        plot_results(run_dir / "results.csv")
    weights = run_dir / "weights" / "last.pt"
    if weights.is_file() and not (run_dir / "val").is_dir():
        run_val(ValOptions(weights=str(weights), data=opt.data, batch_size=opt.batch_size, img_size=opt.img_size[-1],
                           device=opt.device, single_cls=opt.single_cls, project=str(run_dir), name="val",
                           exist_ok=True, workers=0))
