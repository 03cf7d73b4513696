"""Contrastive self-supervised speaker embeddings (SimCLR-style NT-Xent).

As in the first stage of Cai, Wang and Li's iterative framework: crops of one
utterance are positives of each other, crops of every other utterance in the
(global, all-process) batch are negatives; the loss is NT-Xent / InfoNCE over
cosine similarities of projection-head outputs divided by a temperature. An
optional channel-invariant term pulls together the embeddings of one segment
seen through two different random channels (mean squared distance of the
unit-length embeddings).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from pyspk.config import ConfigError, Map, Value, check_section, nullable
from pyspk.device import distributed_rank
from pyspk.models import build_model
from pyspk.ssl.dino import MultiCropNet
from pyspk.ssl.ntxent import PROJECTION_SECTION, ProjectionHead, nt_xent, projection_options
from pyspk.train.augment import CHANNEL_DEFAULTS, CHANNEL_SECTION, channel_augment, merged_options
from pyspk.train.objective import Objective

CHANNEL_INVARIANT_SECTION = Map({"weight": Value(float, 0), "channel": nullable(CHANNEL_SECTION)})
CONTRASTIVE_SECTION = Map({"head": nullable(PROJECTION_SECTION), "temperature": Value(float, 0, low_open=True),
                           "gather_negatives": Value(bool), "channel_invariant": nullable(CHANNEL_INVARIANT_SECTION)})


def crop_major(crops):
    """``{name: (B, n, T, D)}`` -> list of crop-major ``(n * B, T, D)`` groups and the total crop count."""
    groups = [c.transpose(0, 1).flatten(0, 1) for c in crops.values()]
    return groups, sum(c.shape[1] for c in crops.values())


def embedding_spread(embeddings):
    """Collapse monitor: per-dimension std of unit-length embeddings x sqrt(dim) (~1 when spread out)."""
    unit = F.normalize(embeddings.float(), dim=-1)
    return unit.std(0).mean() * math.sqrt(unit.shape[1])


class ChannelPerturbation:
    """Seeded random channels for the channel-invariant term (draws depend on seed, rank and step only)."""

    def __init__(self, cfg, seed, rank):
        self.opts = merged_options({"prob": 1.0, **dict(cfg or {})}, CHANNEL_DEFAULTS,
                                   "contrastive.channel_invariant.channel")
        self.seed, self.rank = int(seed), int(rank)
        self.generators = {}

    @torch.no_grad()
    def __call__(self, x, step):
        if x.device not in self.generators:
            self.generators[x.device] = torch.Generator(device=x.device)
        # The last entry keeps these draws apart from the trainer's crop augmentation.
        seed = int(np.random.SeedSequence([self.seed, step, self.rank, 7919]).generate_state(1)[0])
        return channel_augment(x, self.generators[x.device].manual_seed(seed), self.opts)


class ContrastiveObjective(Objective):
    """Contrastive SSL as an :class:`~pyspk.train.objective.Objective`.

    Config section ``contrastive``: ``head`` (PROJECTION_DEFAULTS),
    ``temperature`` (0.1), ``gather_negatives`` (true: under DDP, the other
    processes' crops are negatives too), ``channel_invariant: {weight, channel}``
    (weight 0 disables it; ``channel`` overrides data.channel-style options of
    the extra random channel). Every crop group of data.crops is used; the
    crops of one utterance (at least 2 in all) are each other's positives.
    """

    section = "contrastive"
    declaration = CONTRASTIVE_SECTION
    metric_names = ("nt_xent", "channel_inv", "pos_acc", "emb_std")

    def build(self, config, steps_per_epoch, total_steps, device):
        cfg = config.get(self.section)
        if not isinstance(cfg, dict):
            raise ConfigError("config needs a 'contrastive' section")
        check_section(cfg, self.declaration, "contrastive")
        crops = config["data"]["crops"]
        if sum(int(c["count"]) for c in crops.values()) < 2:
            raise ConfigError("contrastive needs at least 2 crops per utterance in data.crops")
        self.temperature = float(cfg.get("temperature", 0.1))
        self.gather = bool(cfg.get("gather_negatives", True))
        inv = dict(cfg.get("channel_invariant") or {})
        check_section(inv, CHANNEL_INVARIANT_SECTION, "contrastive.channel_invariant")
        self.inv_weight = float(inv.get("weight", 0.0))
        rank = distributed_rank()
        self.perturb = ChannelPerturbation(inv.get("channel"), config.get("seed", 0), rank)
        backbone = build_model(config["model"])
        head = ProjectionHead(backbone.embed_dim, **projection_options(cfg.get("head"), "contrastive.head"))
        self.net = MultiCropNet(backbone, head).to(device)

    def trainable(self):
        return self.net

    def backbones(self):
        return {"encoder": self.net.backbone}, "encoder"

    def compute_loss(self, model, batch, step):
        groups, n_views = crop_major(batch["crops"])
        batch_size = next(iter(batch["crops"].values())).shape[0]
        if self.inv_weight > 0:
            # One crop per utterance again through a different random channel: appended as an extra group.
            first = groups[0][:batch_size]
            groups = [*groups, self.perturb(first, step)]
        embeddings, projections = model(groups)
        n_rows = n_views * batch_size
        loss, accuracy = nt_xent(projections[:n_rows], n_views, self.temperature, self.gather)
        stats = {"nt_xent": loss.detach(), "pos_acc": accuracy}
        if self.inv_weight > 0:
            clean = F.normalize(embeddings[:batch_size].float(), dim=-1)
            other = F.normalize(embeddings[n_rows:].float(), dim=-1)
            invariance = (clean - other).pow(2).sum(-1).mean()
            loss = loss + self.inv_weight * invariance
            stats["channel_inv"] = invariance.detach()
        else:
            stats["channel_inv"] = torch.zeros((), device=loss.device)
        with torch.no_grad():
            stats["emb_std"] = embedding_spread(embeddings[:batch_size])
        return loss, stats

    def state_dict(self):
        return {"head": self.net.head.state_dict()}

    def load_state_dict(self, state):
        self.net.head.load_state_dict(state["head"])
