"""What the VoxCeleb recipe's training would take on GPUs: a projection from FLOPs and CPU timings.

No GPU was available; this measures on the CPU what can be measured and projects the rest:

  1. per config (egs/voxceleb/v1's conf/dino_ecapa.yaml, conf/dino_resnet34.yaml,
     conf/classifier_ecapa.yaml): the FLOPs of one training step (the objective's
     forward, backward and update on one batch of the config's crops, counted by
     torch.utils.flop_counter.FlopCounterMode at --batch and scaled linearly to the
     config's data.batch_size), and the CPU seconds of that step at --batch
     (bench/train_step.py's BareStep, medians of --steps);
  2. per backbone: FLOPs of embedding one --seconds utterance and CPU utterances/s on
     one thread (bench/train_step.py's extraction_speed);
  3. the projection: steps per epoch = training items / global batch (data.batch_size
     x GPUs), SSL training = train.epochs of them, a pseudo-label round = the classifier's
     epochs on --kept-fraction of the utterances plus re-extracting every set, at
     --gpu-tflops x --utilisation per GPU (8 GPUs: --scaling of linear).

Usage: python bench/gpu_projection.py [--batch 4] [--steps 3] [--gpu-tflops 989] [--utilisation 0.25]
e.g.:  python bench/gpu_projection.py --configs egs/voxceleb/v1/conf/dino_resnet34.yaml --steps 2
"""

import argparse
import os
import statistics
import sys
import tempfile

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_step import BareStep, extraction_speed

from pyspk.config import load_config
from pyspk.models.extract import extract_embeddings
from pyspk.train.objectives import objective_of
from pyspk.train.synthetic import make_feats_data_dir

RECIPE_CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "egs", "voxceleb", "v1",
                           "conf")
CONFIGS = [os.path.join(RECIPE_CONF, name) for name in ("dino_ecapa.yaml", "dino_resnet34.yaml",
                                                        "classifier_ecapa.yaml")]
VOX2_UTTS, VOX1_UTTS = 1_092_009, 153_516


def step_flops(bare):
    """FLOPs of one of ``bare``'s steps (forward + backward; the update's elementwise work is not counted)."""
    with FlopCounterMode(display=False) as counter:
        loss, _ = bare.objective.compute_loss(bare.model, bare.batch, bare.step)
        loss.backward()
    bare.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def extraction_flops(backbone, feat_dim, seconds):
    feats = [("u", torch.randn(int(seconds * 100), feat_dim).numpy() + 8.0)]
    with FlopCounterMode(display=False) as counter:
        list(extract_embeddings(backbone, feats, device=torch.device("cpu")))
    return counter.get_total_flops()


def hours(flops, tflops):
    return flops / (tflops * 1e12) / 3600


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--batch", type=int, default=4, help="batch of the CPU measurements (scaled to the config's)")
    parser.add_argument("--steps", type=int, default=3, help="timed CPU steps after one warm-up step")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the utterances embedded")
    parser.add_argument("--gpu-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s of one GPU "
                        "(989: an H100 SXM)")
    parser.add_argument("--utilisation", type=float, default=0.25, help="share of the peak the training reaches")
    parser.add_argument("--scaling", type=float, default=0.9, help="8 GPUs' speed-up over one, as a share of 8")
    parser.add_argument("--kept-fraction", type=float, default=0.8 * 0.98,
                        help="utterances a round trains on (--keep-fraction 0.8 of the clusters kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    effective = args.gpu_tflops * args.utilisation
    print(f"CPU: 1 torch thread on a shared machine (timings are upper bounds); projection at {args.gpu_tflops:g} "
          f"TFLOP/s x {args.utilisation:g} = {effective:g} TFLOP/s per GPU, 8 GPUs at {args.scaling:g} of linear")
    with tempfile.TemporaryDirectory(prefix="pyspk-bench-") as tmp:
        data_dir = make_feats_data_dir(os.path.join(tmp, "data"), n_spk=16, n_utt=4, min_frames=400, max_frames=800)
        for path in args.configs:
            config = load_config(path, [f"data.batch_size={args.batch}"])
            batch = int(load_config(path)["data"]["batch_size"])
            objective_class = objective_of(config, path)
            bare = BareStep(objective_class, config, data_dir, torch.device("cpu"), 100)
            flops = step_flops(bare) * batch / args.batch
            seconds = statistics.median(bare.time_steps(args.steps + 1)[1:])
            train = config["train"]
            epochs = int(train["epochs"])
            kept = args.kept_fraction if config["objective"] == "classifier" else 1.0
            steps_per_epoch = {n: int(VOX2_UTTS * kept) // (batch * n) for n in (1, 8)}
            total = {n: epochs * steps_per_epoch[n] * flops * n for n in (1, 8)}
            name = os.path.basename(path)
            print(f"{name}: {config['model']['name']}, step of {batch} (global {batch} x GPUs): "
                  f"{flops / 1e9:.0f} GFLOP; CPU {seconds:.2f} s per step of {args.batch} "
                  f"({flops * args.batch / batch / seconds / 1e9:.1f} GFLOP/s achieved)")
            print(f"  {epochs} epochs over {int(VOX2_UTTS * kept)} items: {steps_per_epoch[1]} steps/epoch on 1 GPU, "
                  f"{steps_per_epoch[8]} on 8; {total[1] / 1e18:.0f} EFLOP in all (1 GPU)")
            print(f"  projected: 1 GPU {hours(total[1], effective):.0f} h; 8 GPUs "
                  f"{hours(total[8], effective * 8 * args.scaling):.1f} h; at 1 GPU "
                  f"{effective * 1e12 / flops:.1f} steps/s against {1 / seconds * args.batch / batch:.4f} on this CPU")
            backbones, default = bare.objective.backbones()
            backbone = backbones[default]
            feat_dim = int(config["model"].get("feat_dim", 80))
            per_utt = extraction_flops(backbone, feat_dim, args.seconds)
            speed = extraction_speed(backbone, torch.device("cpu"), feat_dim, n_utts=24, seconds=args.seconds)
            utts_per_second = speed / args.seconds
            all_utts = VOX2_UTTS + VOX1_UTTS
            print(f"  extraction ({default}): {per_utt / 1e9:.1f} GFLOP per {args.seconds:g} s utterance; CPU "
                  f"{utts_per_second:.2f} utterances/s per core ({speed:.0f}x real time): the {all_utts} of "
                  f"VoxCeleb2 dev + VoxCeleb1 take {all_utts / utts_per_second / 3600:.0f} core-hours; "
                  f"1 GPU (projected) {all_utts * per_utt / (effective * 1e12) / 60:.1f} min")


if __name__ == "__main__":
    main()
