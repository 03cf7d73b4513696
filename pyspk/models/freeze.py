"""Training part of a backbone: its last layers only, or the head alone, with the rest frozen.

Shared by the staged fine-tuning of pyspk.transfer and the two-step training of
the pseudo-label classifier (pyspk.supervised). ``what`` names the trained part:
``head`` (none of the backbone), ``last`` (the parameters under the backbone's
``last_layers`` prefixes, by default those its model class declares) or ``all``.
Frozen modules run in eval mode, so their BatchNorm statistics stay
as they were.
"""

from pyspk.config import ConfigError

TRAIN_WHAT = ("head", "last", "all")


def _under(name, prefix):
    """Whether parameter ``name`` is ``prefix`` or lies in the module it names."""
    return name == prefix or name.startswith(prefix + ".")


def last_layer_prefixes(backbone, prefixes=None, key="finetune.last_layers"):
    """The parameter-name prefixes of ``backbone``'s last layers (its class's ``last_layers`` when None), checked.

    ``key`` is the config key that sets them, named in errors.
    """
    name = backbone.config["name"] if backbone.config else type(backbone).__name__
    if prefixes is None:
        if not backbone.last_layers:
            raise ConfigError(f"model '{name}' declares no last layers; set {key}")
        prefixes = list(backbone.last_layers)
    if isinstance(prefixes, str) or not isinstance(prefixes, list) or not prefixes:
        raise ConfigError(f"{key} must be a non-empty list of parameter-name prefixes, got {prefixes!r}")
    names = [n for n, _ in backbone.named_parameters()]
    for prefix in prefixes:
        if not any(_under(n, prefix) for n in names):
            top = sorted({n.split(".")[0] for n in names})
            raise ConfigError(f"{key}: '{prefix}' names no parameter of model '{name}'; "
                              f"its top-level modules are {', '.join(top)}")
    return list(prefixes)


def trained_parameters(backbone, what, prefixes):
    """Names of the backbone parameters that ``what`` trains (``prefixes``: the last layers)."""
    if what not in TRAIN_WHAT:
        raise ConfigError(f"'train' must be one of {', '.join(TRAIN_WHAT)}, got {what!r}")
    return {name for name, _ in backbone.named_parameters()
            if what == "all" or (what == "last" and any(_under(name, p) for p in prefixes))}


def frozen_module_names(backbone, trained):
    """Names of the backbone modules to keep in eval mode when only the parameters in ``trained`` learn.

    ``""`` is the whole backbone. Names rather than modules: the trainer may swap modules in place
    afterwards (SyncBatchNorm under DDP), so :func:`set_frozen_modes` looks them up each time.
    """
    if len(trained) == sum(1 for _ in backbone.parameters()):
        return []
    if not trained:
        return [""]
    # A module is frozen when no trained parameter lives under it (so eval() on it spares the rest).
    return [mname for mname, _ in backbone.named_modules()
            if mname and not any(t.startswith(mname + ".") for t in trained)]


def set_frozen_modes(backbone, names, frozen=True):
    """Put the modules ``names`` of ``backbone`` in eval mode (``frozen``) or back in train mode."""
    for name in names:
        backbone.get_submodule(name).train(not frozen)
