"""The fine-tuned network: a backbone with a new classification head, and what each stage trains."""

import torch
from torch import nn

from pyspk.config import ConfigError

TRAIN_WHAT = ("head", "last", "all")


class UtteranceClassifier(nn.Module):
    """Backbone -> [BatchNorm] -> dropout -> linear over ``num_classes``.

    Dropout draws from the ``generator`` passed to forward, not the global
    generator, so a resumed run draws the same masks (the data loader also
    takes numbers from the global generator each time it starts iterating).
    """

    def __init__(self, backbone, num_classes, batchnorm=True, dropout=0.0):
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"finetune.head.dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.dropout = float(dropout)
        layers = [nn.BatchNorm1d(backbone.embed_dim)] if batchnorm else []
        self.head = nn.Sequential(*layers, nn.Linear(backbone.embed_dim, num_classes))

    def forward(self, feats, generator=None):
        x = self.backbone(feats)
        if self.head[0] is not self.head[-1]:
            x = self.head[0](x)
        if self.training and self.dropout > 0:
            keep = torch.rand(x.shape, generator=generator, device=x.device) >= self.dropout
            x = x * keep / (1.0 - self.dropout)
        return self.head[-1](x)

    def classify(self, embeddings):
        """Logits of (already averaged) embeddings, in eval mode."""
        return self.head(embeddings)


def last_layer_prefixes(backbone, prefixes=None):
    """The parameter-name prefixes of ``backbone``'s last layers (its class's ``last_layers`` when None), checked."""
    name = backbone.config["name"] if backbone.config else type(backbone).__name__
    if prefixes is None:
        if not backbone.last_layers:
            raise ConfigError(f"model '{name}' declares no last layers; set finetune.last_layers")
        prefixes = list(backbone.last_layers)
    if isinstance(prefixes, str) or not isinstance(prefixes, list) or not prefixes:
        raise ConfigError(f"finetune.last_layers must be a non-empty list of parameter-name prefixes, "
                          f"got {prefixes!r}")
    names = [n for n, _ in backbone.named_parameters()]
    for prefix in prefixes:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            top = sorted({n.split(".")[0] for n in names})
            raise ConfigError(f"finetune.last_layers: '{prefix}' names no parameter of model '{name}'; "
                              f"its top-level modules are {', '.join(top)}")
    return list(prefixes)


def set_trainable(classifier, what, prefixes):
    """Mark parameters trainable for a stage; return the backbone modules to keep in eval mode.

    ``what``: ``head``, ``last`` (head + parameters under ``prefixes``) or ``all``.
    A frozen module runs in eval mode so its BatchNorm statistics stay as they were.
    """
    if what not in TRAIN_WHAT:
        raise ConfigError(f"finetune stage 'train' must be one of {', '.join(TRAIN_WHAT)}, got {what!r}")
    trainable = set()
    for name, param in classifier.backbone.named_parameters():
        on = what == "all" or (what == "last" and any(name == p or name.startswith(p + ".") for p in prefixes))
        param.requires_grad_(on)
        if on:
            trainable.add(name)
    for param in classifier.head.parameters():
        param.requires_grad_(True)
    if what == "all":
        return []
    if not trainable:
        return [classifier.backbone]
    # A module is frozen when no trainable parameter lives under it (so eval() on it spares the rest).
    return [module for mname, module in classifier.backbone.named_modules()
            if mname and not any(t.startswith(mname + ".") for t in trainable)]
