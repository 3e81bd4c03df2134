"""Evaluation of trained runs: predictions, metrics, significance, ensembles, cross-validation,
linear floors and the paper's figures."""
