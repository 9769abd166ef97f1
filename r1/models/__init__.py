"""Model families, one subpackage each (`r1/models/<family>/`). Importing this package is cheap:

* `<family>/config.py` (torch-free) declares the config classes of the family's models and data
  kinds; the config parser imports these first (`light_configs`), so reading, validating and
  printing a config never imports torch. It may also declare `COMMANDS`: the `r1` commands the
  family adds (`r1.config_commands`' `Command` specs, e.g. the lm family's `generate`), which the
  CLI registers without importing torch (`family_commands`).
* `load_all()` imports every module of every family: models register with `register_model`,
  the family's spec with `register_family` (in `<family>/family.py`).
"""
import functools
import importlib
import importlib.util
import pkgutil
import sys

_loaded = False


def family_packages() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if m.ispkg]


def light_configs() -> None:
    """Import each family's torch-free `config` module (where it has one)."""
    for fam in family_packages():
        if importlib.util.find_spec(f"{__name__}.{fam}.config") is not None:
            importlib.import_module(f"{__name__}.{fam}.config")


@functools.cache
def family_commands() -> tuple:
    """The `Command` specs families add to `r1`: each family's `config.COMMANDS`, in family order."""
    light_configs()
    out = []
    for fam in family_packages():
        out += getattr(sys.modules.get(f"{__name__}.{fam}.config"), "COMMANDS", [])
    return tuple(out)


def load_all() -> None:
    """Import every module of every family (registers all models and family specs)."""
    global _loaded
    if _loaded:
        return
    for fam in family_packages():
        pkg = importlib.import_module(f"{__name__}.{fam}")
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
    _loaded = True
