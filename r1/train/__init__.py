"""The one trainer (`fit`) and its parts."""
from r1.train.trainer import Trainer, fit

__all__ = ["Trainer", "fit"]
