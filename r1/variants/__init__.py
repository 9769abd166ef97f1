"""Config classes of model and data variants, importable without torch.

Each module here belongs to one family and declares, with `r1.config.variant`, the dataclasses
that parse `model:` / `data:` sections naming its models and datasets (and the models' flavors).
The modules that build those models and datasets (which import torch) import their config
classes from here, so reading, validating and printing a config never imports torch.

A variant not declared here still works: the config parser then imports the heavy modules
(`r1.models`, `r1.data`), which register every variant.
"""
