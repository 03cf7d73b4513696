"""The training objectives, by the name a config gives in ``objective:``.

Adding a training method takes a module with its :class:`~pyspk.train.objective.Objective`
(its ``section`` and that section's ``declaration``), one line in :data:`OBJECTIVES` and a
config; the schema (pyspk.train.schema) reads the declaration from here, and
``pyspk.bin.train`` and ``steps/train.sh`` then train it like every other method.
"""

from pyspk.ssl.contrastive import ContrastiveObjective
from pyspk.ssl.dino import DINOObjective
from pyspk.ssl.memo import MeMoObjective
from pyspk.supervised.classifier import ClassifierObjective
from pyspk.train.objective import Objective
from pyspk.transfer.objective import FinetuneObjective

OBJECTIVES: dict[str, type[Objective]] = {
    "dino": DINOObjective,
    "contrastive": ContrastiveObjective,
    "memo": MeMoObjective,
    "classifier": ClassifierObjective,
    "finetune": FinetuneObjective,  # trained in stages, each a Trainer run (pyspk.transfer.stages)
}
