"""Hyperparameter search: ``python -m jobs.tune --space FILE [--config FILE] ...``.

Ray Tune samples values for experiment-config keys (the search space, a small YAML file);
every trial is an ordinary training run in ``<study>/trial-NNN/`` (config, checkpoints,
metrics, trajectories, summary, MLflow run as a child of the study's), stopped early by the
scheduler on a training metric and ranked at the end by its assessment's KPI. The best
trial's config is written as ``best.yaml``, which ``invoke train --config`` takes unchanged.
The same code runs locally and as one multi-node Azure ML job.

Modules: ``space`` (the search-space file), ``study`` (the study's record), ``trial`` (one
trial as a Tune trainable), ``results`` (ranking, table, ``best.yaml``) and ``run`` (the
study itself and its command line).
"""
