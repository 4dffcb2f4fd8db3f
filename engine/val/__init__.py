"""Evaluation (val.py, and the trainer after each epoch): ``evaluate`` scores a model on a loader;
``run_val`` is val.py's whole job; ``batch_hook`` draws the first batches and writes label files.

Modules: ``evaluator`` (the evaluation), ``run`` (val.py's job), ``report`` (tables, plots, json),
``batch_plots`` (the per-batch hook).
"""

from engine.val.batch_plots import batch_hook
from engine.val.evaluator import TRAIN_METRICS, EvalResult, TrainMetrics, evaluate
from engine.val.run import ValOptions, evaluate_files, run_val

__all__ = ["TRAIN_METRICS", "EvalResult", "TrainMetrics", "ValOptions", "batch_hook", "evaluate", "evaluate_files", "run_val"]
