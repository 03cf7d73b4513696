"""The fine-tuned network: a backbone with a new classification head, and what each stage trains."""

import torch
from torch import nn

from pyspk.config import ConfigError
from pyspk.models.freeze import frozen_module_names, trained_parameters


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


def set_trainable(classifier, what, prefixes):
    """Mark parameters trainable for a stage; return the names of the backbone modules to keep in eval mode.

    ``what``: ``head``, ``last`` (head + parameters under ``prefixes``) or ``all``.
    A frozen module runs in eval mode so its BatchNorm statistics stay as they were.
    """
    trained = trained_parameters(classifier.backbone, what, prefixes)
    for name, param in classifier.backbone.named_parameters():
        param.requires_grad_(name in trained)
    for param in classifier.head.parameters():
        param.requires_grad_(True)
    return frozen_module_names(classifier.backbone, trained)
