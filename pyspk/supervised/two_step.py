"""Two-step fine-tuning of the pseudo-label classifier (config ``classifier.two_step``).

The seed paper's transfer finding, used by JHU hyperion in every pseudo-label
round: a backbone that already embeds well (the SSL model, or the previous
round's) is first adapted with its trunk frozen, so the randomly initialised
AAM head does not wreck it with large early gradients; then the whole network
trains at a lower learning rate::

    two_step:
      freeze_epochs: 2     # step one: epochs with the trunk frozen
      lr_scale: 0.1        # step two: optim.lr's schedule times this
      train: last          # step one trains the head and the backbone's last_layers (or only the head: head)
      last_layers: null    # parameter-name prefixes; null: those the model class declares

Both steps are one run of the trainer and the step number alone says which
one a step is in, so a killed run resumes exactly in either. Step one keeps
every trunk parameter requires_grad (DistributedDataParallel fixes the set of
reduced parameters when it wraps the model) and drops the trunk's gradients
after backward instead, so the optimiser skips them (no update, no weight
decay, no momentum). The frozen modules run in eval mode, so their BatchNorm
statistics stay those of the initial model, as in pyspk.transfer; the trunk is
exactly unchanged after step one.
"""

import logging

from pyspk.config import ANY, ConfigError, Map, Text, Value, check_section
from pyspk.models import freeze

log = logging.getLogger(__name__)

TWO_STEP_SECTION = Map({"freeze_epochs": Value(float, 0, low_open=True), "lr_scale": Value(float, 0, low_open=True),
                         "train": Text(), "last_layers": ANY})
FIRST_STEP = tuple(what for what in freeze.TRAIN_WHAT if what != "all")


class TwoStep:
    """Which parameters learn at a step, and the learning-rate factor of the step."""

    def __init__(self, backbone, cfg, steps_per_epoch, epochs):
        if not isinstance(cfg, dict):
            raise ConfigError("classifier.two_step must be a mapping {freeze_epochs, lr_scale, train} or null")
        check_section(cfg, TWO_STEP_SECTION, "classifier.two_step")
        if "freeze_epochs" not in cfg:
            raise ConfigError("classifier.two_step needs freeze_epochs")
        freeze_epochs = float(cfg["freeze_epochs"])
        if freeze_epochs >= epochs:
            raise ConfigError(f"classifier.two_step.freeze_epochs ({freeze_epochs:g}) must be below train.epochs "
                              f"({epochs}), or step two never starts")
        what = cfg.get("train", "last")
        if what not in FIRST_STEP:
            raise ConfigError(f"classifier.two_step.train must be one of {', '.join(FIRST_STEP)}, got {what!r}")
        prefixes = freeze.last_layer_prefixes(backbone, cfg.get("last_layers"), "classifier.two_step.last_layers")
        trained = freeze.trained_parameters(backbone, what, prefixes)
        self.freeze_steps = round(freeze_epochs * steps_per_epoch)
        self.lr_scale = float(cfg.get("lr_scale", 0.1))
        self.frozen_parameters = [p for name, p in backbone.named_parameters() if name not in trained]
        self.backbone = backbone
        self.frozen_modules = freeze.frozen_module_names(backbone, trained)
        log.info("two-step fine-tuning: steps 1-%d train the head and %s (%d of %d backbone parameters), then "
                 "all at optim.lr x %g", self.freeze_steps, "nothing of the backbone" if what == "head" else prefixes,
                 sum(p.numel() for p in backbone.parameters()) - sum(p.numel() for p in self.frozen_parameters),
                 sum(p.numel() for p in backbone.parameters()), self.lr_scale)

    def frozen(self, step):
        return step < self.freeze_steps

    def set_modes(self, step):
        """Frozen modules in eval mode during step one, back in train mode after (the trainer sets train mode)."""
        freeze.set_frozen_modes(self.backbone, self.frozen_modules, self.frozen(step))

    def drop_frozen_gradients(self, step):
        if self.frozen(step):
            for param in self.frozen_parameters:
                param.grad = None

    def lr_factor(self, step):
        return 1.0 if self.frozen(step) else self.lr_scale
