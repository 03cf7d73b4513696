"""Write a randomly initialised backbone file (the "untrained network" baseline).

Usage:
  python -m pyspk.bin.init_model --config <train.yaml> [--seed 0] [--name model] [key.sub=value ...] <out.pt>
Builds the model described by the config's ``model:`` section (overrides such
as ``model.channels=256`` apply first; a MeMo config's first architecture) and
saves it as a backbone file that steps/extract_embeddings.sh reads.
e.g.:
  python -m pyspk.bin.init_model --config conf/dino_demo.yaml --seed 0 exp/untrained/final.pt
"""

import argparse
import sys

import torch

from pyspk.config import ConfigError, load_config, load_yaml
from pyspk.logutil import setup_logging
from pyspk.models import build_model, save_backbones


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML with a 'model:' section")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the initialisation (default 0)")
    parser.add_argument("--name", default="model", help="backbone name in the file (default model)")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    parser.add_argument("out", help="backbone file to write")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        if "objective" in load_yaml(args.config):  # a training config: overrides as pyspk.bin.train takes them
            from pyspk.train.objectives import load_training_config
            config = load_training_config(args.config, args.overrides)
        else:
            config = load_config(args.config, args.overrides)
        if not isinstance(config.get("model"), dict):
            raise ConfigError(f"{args.config}: no 'model:' section")
        model_cfg = config["model"]
        if "archs" in model_cfg:  # a MeMo config: its default (first) architecture, as its default teacher
            from pyspk.ssl.memo import arch_configs
            model_cfg = next(iter(arch_configs(model_cfg).values()))
        torch.manual_seed(args.seed)
        model = build_model(model_cfg)
    except ConfigError as e:
        print(f"init_model: error: {e}", file=sys.stderr)
        sys.exit(1)
    save_backbones(args.out, {args.name: model}, default=args.name, extra={"seed": args.seed})
    print(f"init_model: wrote {model.config['name']} backbone '{args.name}' (seed {args.seed}) to {args.out}")


if __name__ == "__main__":
    main()
