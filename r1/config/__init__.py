"""Typed configuration: dataclasses, YAML files that are instances of them, dotted overrides.

Every field is declared once with `opt(default, help, ...)`; its help text is what
`r1 config explain` prints. A YAML file is parsed strictly: unknown keys, wrong types and
impossible values raise `ConfigError` naming the dotted key and what is allowed.

Sections whose content depends on a name (`model`, `data`) are *variant* sections: the
`name` key picks a registered dataclass (see `variant`), so each model or dataset declares
exactly the fields it understands.

The package's parts, lowest first (none imports torch):

    base.py       opt, show, Variant / variant / variant_base (the variant and flavor tables)
    sections.py   the sections (RunConfig, ModelConfig, ...) and Config
    parse.py      from_dict, check_bounds, to_dict
    files.py      read_yaml (with `_base_` includes), load_yaml_text (alias budget), save_config
    overrides.py  parse_override, apply_overrides, load_config
    explain.py    explain, explain_sections
"""
from r1.config.base import MESSAGE_VALUE_CHARS, Variant, opt, show, variant, variant_base
from r1.config.explain import explain, explain_sections
from r1.config.files import MAX_YAML_NODES, BudgetLoader, YAMLTooLarge, load_yaml_text, read_yaml, save_config
from r1.config.overrides import apply_overrides, load_config, parse_override
from r1.config.parse import YAML11_BOOLS, check_bounds, from_dict, to_dict
from r1.config.sections import (
    AdversarialConfig,
    Config,
    CurriculumConfig,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    QATConfig,
    RunConfig,
    SchedConfig,
    TrainConfig,
)

__all__ = [
    "MESSAGE_VALUE_CHARS", "Variant", "opt", "show", "variant", "variant_base",
    "explain", "explain_sections",
    "MAX_YAML_NODES", "BudgetLoader", "YAMLTooLarge", "load_yaml_text", "read_yaml", "save_config",
    "apply_overrides", "load_config", "parse_override",
    "YAML11_BOOLS", "check_bounds", "from_dict", "to_dict",
    "AdversarialConfig", "Config", "CurriculumConfig", "DataConfig", "DistillConfig", "ModelConfig",
    "OptimConfig", "QATConfig", "RunConfig", "SchedConfig", "TrainConfig",
]
