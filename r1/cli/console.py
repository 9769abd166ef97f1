"""Console output of the commands: log lines that do not break the progress bar."""
from __future__ import annotations

import logging
import sys


class TqdmHandler(logging.Handler):
    """Console log lines that do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm
        tqdm.write(self.format(record), file=sys.stderr)


def _r1_or_warning(record: logging.LogRecord) -> bool:
    return record.name.split(".")[0] == "r1" or record.levelno >= logging.WARNING


def console_logging(verbose: bool = False) -> None:
    # On the root logger (r1's lines and other libraries' warnings): a library's logging.basicConfig()
    # or root-level logging.info() then finds a handler and adds none that would print r1's lines twice.
    top = logging.getLogger()
    if not any(isinstance(h, TqdmHandler) for h in top.handlers):
        h = TqdmHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        h.addFilter(_r1_or_warning)
        top.addHandler(h)
    root = logging.getLogger("r1")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
