"""Compute Kaldi fbank features for one job's share of a data dir (run by steps/make_fbank.sh).

Usage:
  python -m pyspk.bin.compute_fbank [options] <data-dir> <ark-out> <scp-out>
e.g.:
  python -m pyspk.bin.compute_fbank --config conf/fbank.conf --job 2 --num-jobs 4 \\
      data/train data/train/data/raw_fbank_train.2.ark data/train/data/raw_fbank_train.2.scp

The job takes the ``--job``-th of ``--num-jobs`` contiguous blocks of the
sorted utterances (from segments if present, else wav.scp). Utterances that
fail (unreadable audio, failing pipe, wrong sample rate, too short, bad
segment) are logged by id and skipped; it ends with "Done N utterances,
failed M" and exits 0 unless the job itself cannot run.

``--backend torch`` computes the same features with pyspk's torch fbank (the
code the training side uses), on ``--device``; they agree with the default
kaldi-native-fbank to float32 rounding (max abs difference under 2e-3 on real speech).
"""

import argparse
import logging
import sys

from pyspk.cli import bool_arg
from pyspk.data.datadir import DataDirError, write_table
from pyspk.features.audio import shard, utterance_sources
from pyspk.features.fbank import (
    ArkScpWriter,
    FbankConfig,
    KaldiOptionError,
    compute_fbank,
    prepare_waveform,
    run_feature_job,
)
from pyspk.logutil import setup_logging


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/fbank.conf", help="Kaldi-style fbank conf (default: %(default)s)")
    parser.add_argument("--job", type=int, default=1, help="this job's index, 1-based (default: %(default)s)")
    parser.add_argument("--num-jobs", type=int, default=1, help="number of jobs (default: %(default)s)")
    parser.add_argument("--compress", type=bool_arg, default=True,
                        help="store Kaldi compressed matrices: true|false (default: true)")
    parser.add_argument("--backend", choices=("kaldi-native", "torch"), default="kaldi-native",
                        help="fbank implementation: kaldi-native (kaldi-native-fbank) or torch "
                             "(pyspk.features.torch_fbank) (default: %(default)s)")
    parser.add_argument("--device", default="cpu",
                        help="device of the torch backend: cpu, cuda, cuda:N (default: %(default)s)")
    parser.add_argument("--utt2num-frames-out", help="also write 'utt num_frames' lines here")
    parser.add_argument("--utt2dur-out", help="also write 'utt duration_seconds' lines here")
    parser.add_argument("data_dir")
    parser.add_argument("ark_out")
    parser.add_argument("scp_out")
    return parser


def fbank_function(backend, config, device):
    """``wave -> features`` for the chosen backend."""
    if backend == "kaldi-native":
        return lambda wave: compute_fbank(wave, config)
    # imported here so that the default backend does not pay for torch's start-up
    import torch

    from pyspk.device import pick_device
    from pyspk.features.torch_fbank import TorchFbank, compute_fbank_torch

    if device != "auto":
        try:
            torch.device(device)
        except RuntimeError:
            raise ValueError(f"--device {device}: not a device (cpu, cuda, cuda:N)") from None
    device = pick_device(device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # one core per job, as Kaldi's jobs: make_fbank.sh parallelises with --nj
    module = TorchFbank(config).to(device)
    return lambda wave: compute_fbank_torch(wave, module)


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    log = logging.getLogger("compute_fbank")
    try:
        config = FbankConfig.from_file(args.config)
        sources = shard(utterance_sources(args.data_dir), args.job, args.num_jobs)
        fbank = fbank_function(args.backend, config, args.device)
    except (KaldiOptionError, DataDirError, ValueError, RuntimeError) as e:
        sys.exit(f"compute_fbank: {e}")
    log.info("job %d/%d: %d utterances, %d-dim fbank from %s (%s backend)", args.job, args.num_jobs, len(sources),
             config.dim, args.config, args.backend)

    def compute(source, samples, rate):
        wave = prepare_waveform(samples, rate, config, source.utt)
        feats = fbank(wave)
        return feats, (feats.shape[0], wave.shape[0] / rate)

    try:
        with ArkScpWriter(args.ark_out, args.scp_out, compress=args.compress) as writer:
            infos, _ = run_feature_job(sources, compute, writer, desc=f"fbank job {args.job}")
        if args.utt2num_frames_out:
            write_table(args.utt2num_frames_out, {utt: frames for utt, (frames, _) in infos.items()})
        if args.utt2dur_out:
            write_table(args.utt2dur_out, {utt: f"{dur:g}" for utt, (_, dur) in infos.items()})
    except OSError as e:
        sys.exit(f"compute_fbank: cannot write output: {e}")


if __name__ == "__main__":
    main()
