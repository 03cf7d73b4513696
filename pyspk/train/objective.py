"""The interface a training method implements for the generic trainer (pyspk.train.trainer).

A method (DINO, the pseudo-label classifier, contrastive, MeMo, fine-tuning) subclasses
:class:`Objective`: it builds its modules, says which module is optimised and which modules
are the backbones to export, computes the loss of a batch, and keeps any extra state
(teacher, centre ...). Its config section is declared once, in ``declaration`` (pyspk.config
spec nodes: keys, types, ranges); the registry (pyspk.train.registry) hands it to the schema,
which checks it with the rest of the config before any work.
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pyspk.config import Map


class Objective:
    """What the trainer needs from a training method; subclasses override the methods.

    ``section``: the method's own config section name. ``metric_names``: the
    extra per-step statistics ``compute_loss`` returns (logged averaged).
    ``schedule_names``: scheduled scalars ``schedule_values`` returns.
    ``declaration``: what the section may hold (pyspk.config spec nodes; None: taken as written).
    """

    section: str | None = None
    declaration: Map | None = None
    metric_names: tuple[str, ...] = ()
    schedule_names: tuple[str, ...] = ()

    def __init__(self, data_dir: str | None = None):
        # The training data dir, for objectives that read more than the crops (labels, utt2label).
        self.data_dir = data_dir

    def build(self, config: dict[str, Any], steps_per_epoch: int, total_steps: int, device: torch.device) -> None:
        """Create the modules (on ``device``) and the method's own schedules."""
        raise NotImplementedError

    def trainable(self) -> nn.Module:
        """The module whose parameters the optimiser updates (the trainer wraps it in DDP)."""
        raise NotImplementedError

    def backbones(self) -> tuple[dict[str, nn.Module], str]:
        """``({name: backbone module}, default_name)`` written to checkpoints and final.pt."""
        raise NotImplementedError

    def compute_loss(self, model: nn.Module, batch: dict[str, Any],
                     step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, {metric: scalar tensor})`` for one batch; ``model`` is trainable(), maybe DDP-wrapped.

        ``batch`` is already on the device and augmented: ``{"crops": {name:
        (B, count, frames, dim)}, "index": (B,)}``.
        """
        raise NotImplementedError

    def param_groups(self, module: nn.Module) -> list[dict[str, Any]]:
        """Parameter groups; by convention biases and norm weights (1-D) get no weight decay."""
        decay, no_decay = [], []
        for param in module.parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 else decay).append(param)
        return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]

    def schedule_values(self, step: int) -> dict[str, float]:
        """The values of the ``schedule_names`` scalars at ``step``."""
        return {}

    def lr_factor(self, step: int) -> float:
        """A factor on optim.lr's schedule at ``step`` (e.g. a lower rate in a later training step)."""
        return 1.0

    def sampling_labels(self, config: dict[str, Any]) -> Sequence[int] | None:
        """A class per dataset item when batches should draw classes uniformly, else None (plain shuffling).

        Called before :meth:`build`, with the whole config.
        """
        return None

    def after_backward(self, step: int) -> None:
        """Called after backward, before clipping and the optimiser step."""

    def after_step(self, step: int) -> None:
        """Called after the optimiser step (e.g. an EMA update)."""

    def final_backbones(self, content: dict[str, Any]) -> dict[str, Any]:
        """The backbone-file dict written to final.pt, given the trained one (e.g. mixed with the initial weights)."""
        return content

    def state_dict(self) -> dict[str, Any]:
        """Extra state to checkpoint besides the backbones (heads, teacher, centre ...)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def synchronise(self) -> None:
        """Make state that processes update independently equal before it is saved."""
