"""The training objectives, by the name a config gives in ``objective:``.

Adding a training method takes a module with its :class:`~pyspk.train.loop.Objective`,
one line in :data:`OBJECTIVES` and a config; ``pyspk.bin.train`` and
``steps/train.sh`` then train it like every other method.
"""

from pyspk.config import ConfigError
from pyspk.ssl.contrastive import ContrastiveObjective
from pyspk.ssl.dino import DINOObjective
from pyspk.ssl.memo import MeMoObjective
from pyspk.supervised.classifier import ClassifierObjective
from pyspk.train.loop import Objective, Trainer
from pyspk.transfer.objective import FinetuneObjective
from pyspk.transfer.stages import run_finetune

OBJECTIVES: dict[str, type[Objective]] = {
    "dino": DINOObjective,
    "contrastive": ContrastiveObjective,
    "memo": MeMoObjective,
    "classifier": ClassifierObjective,
    "finetune": FinetuneObjective,  # trained in stages, each a Trainer run (pyspk.transfer.stages)
}


def objective_of(config: dict, config_path: str) -> type[Objective]:
    """The Objective class that ``config['objective']`` names (ConfigError naming the file otherwise)."""
    name = config.get("objective")
    if name not in OBJECTIVES:
        raise ConfigError(f"{config_path}: 'objective' must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name]


def set_init_model(config: dict, config_path: str, init_model: str | None, init_backbone: str | None) -> None:
    """Write --init-model/--init-backbone into the objective's section (``<section>.init_model``)."""
    if init_backbone and not init_model:
        raise ConfigError("--init-backbone needs --init-model")
    if not init_model:
        return
    section = objective_of(config, config_path).section
    if not isinstance(config.get(section), dict):
        raise ConfigError(f"{config_path}: needs a '{section}' section")
    config[section]["init_model"] = init_model
    if init_backbone:
        config[section]["init_backbone"] = init_backbone


def train(config: dict, config_path: str, data_dir: str, exp_dir: str, device: str = "auto",
          max_steps: int | None = None) -> None:
    """Train the config's objective on ``data_dir`` into ``exp_dir`` (resuming from its checkpoints)."""
    objective = objective_of(config, config_path)
    if objective is FinetuneObjective:
        run_finetune(config, data_dir, exp_dir, device=device, max_steps=max_steps)
    else:
        Trainer(objective(data_dir), config, data_dir, exp_dir, device=device).run(max_steps)
