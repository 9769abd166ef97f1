"""`r1 tune`: Bayesian hyper-parameter search with Optuna over any training config.

space.py   the search-space YAML (dotted config keys -> float / int / categorical), validated
callback.py the trainer callback that feeds periodic evaluations to the pruner
study.py   the study in SQLite (resumable after a kill), trials in this or parallel processes
report.py  best.yaml, the trials table (md + csv), plots
"""
