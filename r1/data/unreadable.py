"""Files that fail to decode during training: logged once each, counted, and a stop when nothing decodes.

Datasets call `UNREADABLE.note(path, err)` where a sample cannot be decoded (and return None for it);
the trainer's `DecodeGuard` sees the micro-batches left empty by that and raises `DataError` (exit 3)
when a whole epoch's worth of them come in a row, or when more than `train.max_bad_batches` of an
epoch's micro-batches are empty, instead of looping forever. Counts go to metrics.json (`data/*`).
With `data.num_workers > 0` each worker process keeps its own log.
"""
from __future__ import annotations

import logging

from r1.errors import DataError

log = logging.getLogger("r1.data")


class Unreadable:
    """Distinct unreadable files of this process: the first failure of each is a warning, repeats are not."""

    def __init__(self):
        self.errors: dict[str, str] = {}

    def note(self, path, err: BaseException | str) -> None:
        key = str(path)
        if key in self.errors:
            log.debug("skipped again: %s", key)
            return
        self.errors[key] = str(err)
        log.warning("skipped unreadable file %s (%s); %d unreadable file(s) so far, each reported once",
                    key, err, len(self.errors))

    def example(self) -> str:
        if not self.errors:
            return ""
        path, err = next(iter(self.errors.items()))
        return f"; {len(self.errors)} unreadable file(s), e.g. {path} ({err})"

    def reset(self) -> None:
        self.errors.clear()


UNREADABLE = Unreadable()


def describe(data_cfg) -> str:
    """`data.name=coco (data.root=/x)`: the dataset in an error message."""
    where = next((f"data.{k}={getattr(data_cfg, k)}" for k in ("root", "path", "train_ann", "train_images")
                  if getattr(data_cfg, k, "")), "")
    return f"data.name={data_cfg.name}" + (f" ({where})" if where else "")


class DecodeGuard:
    """Counts training micro-batches without any decodable sample (None from the collate function)."""

    def __init__(self, per_epoch: int, max_fraction: float, dataset: str):
        self.per_epoch, self.max_fraction, self.dataset = max(1, per_epoch), max_fraction, dataset
        self.total = self.streak = self.in_epoch = 0
        self.epoch = -1
        UNREADABLE.reset()

    def passes(self, batch, epoch: int) -> bool:
        """True for a usable batch; counts an empty one, DataError when too many are empty."""
        if batch is not None:
            self.streak = 0
            return True
        if epoch != self.epoch:
            self.epoch, self.in_epoch = epoch, 0
        self.total, self.streak, self.in_epoch = self.total + 1, self.streak + 1, self.in_epoch + 1
        if self.streak >= self.per_epoch:
            raise DataError(f"{self.dataset}: {self.streak} training batches in a row (an epoch's worth) had no "
                            f"decodable sample{UNREADABLE.example()}")
        if self.in_epoch > self.max_fraction * self.per_epoch:
            raise DataError(f"{self.dataset}: {self.in_epoch} of the {self.per_epoch} training batches of epoch "
                            f"{epoch + 1} had no decodable sample (train.max_bad_batches={self.max_fraction})"
                            f"{UNREADABLE.example()}")
        return False

    def metrics(self) -> dict[str, int]:
        return {"data/undecodable_batches": self.total, "data/unreadable_files": len(UNREADABLE.errors)}
