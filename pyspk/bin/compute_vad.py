"""Compute Kaldi energy VAD decisions for one job's share of a data dir (run by steps/compute_vad_decision.sh).

Usage:
  python -m pyspk.bin.compute_vad [options] <data-dir> <ark-out> <scp-out>
e.g.:
  python -m pyspk.bin.compute_vad --config conf/vad.conf --fbank-config conf/fbank.conf --job 1 --num-jobs 4 \\
      data/train data/train/data/vad_train.1.ark data/train/data/vad_train.1.scp

Handles the utterances of feats.scp (the job takes the ``--job``-th of
``--num-jobs`` contiguous blocks of them, sorted). The log energy of each
frame is computed from the audio with the framing of the fbank conf that made
the features, so each decision vector (Kaldi float vector of 0/1) has one
entry per feature frame; a length different from utt2num_frames is an error
for that utterance. Ends with "Done N utterances, failed M".
"""

import argparse
import logging
import sys

from pyspk.data.arkio import load_matrix
from pyspk.data.datadir import DataDir, DataDirError
from pyspk.features.audio import UtteranceError, shard, utterance_sources
from pyspk.features.fbank import ArkScpWriter, FbankConfig, KaldiOptionError, prepare_waveform, run_feature_job
from pyspk.features.vad import VadConfig, compute_vad, frame_log_energy
from pyspk.logutil import setup_logging


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/vad.conf", help="Kaldi-style compute-vad conf (default: %(default)s)")
    parser.add_argument("--fbank-config", default="conf/fbank.conf",
                        help="the fbank conf the features were made with; gives the framing (default: %(default)s)")
    parser.add_argument("--job", type=int, default=1, help="this job's index, 1-based (default: %(default)s)")
    parser.add_argument("--num-jobs", type=int, default=1, help="number of jobs (default: %(default)s)")
    parser.add_argument("data_dir")
    parser.add_argument("ark_out")
    parser.add_argument("scp_out")
    return parser


def feature_lengths(data, feats_scp, utts):
    """utt -> number of feature frames, from utt2num_frames or else by reading the features."""
    if data.has("utt2num_frames"):
        return data.utt2num_frames()
    return {utt: load_matrix(feats_scp[utt], utt=utt).shape[0] for utt in utts}


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    log = logging.getLogger("compute_vad")
    try:
        vad_config = VadConfig.from_file(args.config)
        fbank_config = FbankConfig.from_file(args.fbank_config)
        data = DataDir(args.data_dir)
        feats_scp = data.feats_scp()
        sources = [s for s in utterance_sources(args.data_dir) if s.utt in feats_scp]
        sources = shard(sources, args.job, args.num_jobs)
        lengths = feature_lengths(data, feats_scp, [s.utt for s in sources])
    except (KaldiOptionError, DataDirError, ValueError) as e:
        sys.exit(f"compute_vad: {e}")
    log.info("job %d/%d: %d utterances", args.job, args.num_jobs, len(sources))

    def compute(source, samples, rate):
        wave = prepare_waveform(samples, rate, fbank_config, source.utt)
        log_energy = frame_log_energy(wave, fbank_config)
        expected = lengths.get(source.utt)
        if expected is not None and expected != log_energy.shape[0]:
            raise UtteranceError(f"{log_energy.shape[0]} VAD frames but {expected} feature frames: "
                                 f"is {args.fbank_config} the conf the features were made with?")
        decision = compute_vad(log_energy, vad_config)
        voiced = int(decision.sum())
        if voiced == 0:
            log.warning("%s: no voiced frames", source.utt)
        return decision, (voiced, decision.shape[0])

    try:
        with ArkScpWriter(args.ark_out, args.scp_out) as writer:
            infos, _ = run_feature_job(sources, compute, writer, desc=f"vad job {args.job}")
    except OSError as e:
        sys.exit(f"compute_vad: cannot write output: {e}")
    total_frames = sum(n for _, n in infos.values())
    if total_frames:
        log.info("Proportion of voiced frames was %.3f", sum(v for v, _ in infos.values()) / total_frames)


if __name__ == "__main__":
    main()
