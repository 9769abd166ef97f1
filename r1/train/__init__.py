"""The one trainer (`fit`) and its parts; trainer features are callbacks (`r1.train.callbacks`)."""
from r1.train.callbacks import Callback
from r1.train.trainer import Trainer, fit

__all__ = ["Callback", "Trainer", "fit"]
