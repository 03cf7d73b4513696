"""Extract utterance embeddings (x-vectors) with a backbone, Kaldi-style.

Usage:
  python -m pyspk.bin.extract_embeddings extract [options] <model-file> <data-dir> <out-dir>
      Job JOB of --num-jobs over the sorted utterances of <data-dir>/feats.scp;
      writes <out-dir>/xvector.JOB.ark and xvector.JOB.scp (atomically) and
      prints "Done N, failed M".
  python -m pyspk.bin.extract_embeddings merge [options] <data-dir> <out-dir>
      Merges xvector.1..N.scp into xvector.scp (sorted) and writes the speaker
      means spk_xvector.ark/.scp and num_utts.ark (as Kaldi's ivector-mean).
  python -m pyspk.bin.extract_embeddings list <model-file>
      Prints the names of the backbones in <model-file>, one per line, the
      default one first (for --backbone).
e.g.:
  python -m pyspk.bin.extract_embeddings extract --job 1 --num-jobs 4 exp/dino/final.pt data/test exp/xv_test
  python -m pyspk.bin.extract_embeddings merge --num-jobs 4 data/test exp/xv_test
Normally run through steps/extract_embeddings.sh.
"""

import argparse
import logging
import os
import sys

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from pyspk.backend.embeddings import write_kaldi_object
from pyspk.cli import bool_arg
from pyspk.config import ConfigError
from pyspk.data.datadir import DataDir, DataDirError, c_sort_key, read_scp, utt2spk_to_spk2utt
from pyspk.device import pick_device
from pyspk.fileutil import atomic_open, no_space_message
from pyspk.logutil import setup_logging
from pyspk.models import BackboneFileError, load_backbone, read_backbone_file
from pyspk.models.extract import extract_embeddings, iter_features, job_share, write_vectors

log = logging.getLogger("extract_embeddings")

__all__ = ["extract_embeddings", "main"]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ext = sub.add_parser("extract", help="embed one job's share of the utterances")
    ext.add_argument("--backbone", default=None, help="backbone name in the model file (default: its default)")
    ext.add_argument("--chunk-size", type=int, default=1000, help="frames per chunk (default 1000)")
    ext.add_argument("--min-chunk-size", type=int, default=100,
                     help="shorter tails are dropped, shorter utterances padded by repetition (default 100)")
    ext.add_argument("--batch-size", type=int, default=32, help="chunks per forward pass (default 32)")
    ext.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N (default auto)")
    ext.add_argument("--use-vad", type=bool_arg, default=False, help="drop frames that vad.scp marks 0 (default false)")
    ext.add_argument("--num-threads", type=int, default=0, help="torch CPU threads, 0 = torch's default (default 0)")
    ext.add_argument("--job", type=int, default=1, help="this job's index, 1-based (default 1)")
    ext.add_argument("--num-jobs", type=int, default=1, help="number of jobs (default 1)")
    ext.add_argument("model_file")
    ext.add_argument("data_dir")
    ext.add_argument("out_dir")
    mrg = sub.add_parser("merge", help="merge the jobs' outputs and compute speaker means")
    mrg.add_argument("--num-jobs", type=int, default=1, help="number of jobs to merge (default 1)")
    mrg.add_argument("--max-fail-fraction", type=float, default=0.05,
                     help="fail when more than this fraction of utterances failed (default 0.05)")
    mrg.add_argument("data_dir")
    mrg.add_argument("out_dir")
    lst = sub.add_parser("list", help="print the backbone names in a model file, the default first")
    lst.add_argument("model_file")
    return parser


def run_list(args):
    content = read_backbone_file(args.model_file)
    default = content["default_backbone"]
    for name in [default] + [name for name in content["backbones"] if name != default]:
        print(name)
    return 0


def run_extract(args):
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    data = DataDir(args.data_dir)
    feats_scp = data.feats_scp()
    vad_scp = None
    if args.use_vad:
        if not data.has("vad.scp"):
            raise DataDirError(data.file("vad.scp"), 0, "no such file (needed by --use-vad true)")
        vad_scp = read_scp(data.file("vad.scp"))
    utts = job_share(sorted(feats_scp, key=c_sort_key), args.job, args.num_jobs)
    device = pick_device(args.device)
    model = load_backbone(args.model_file, args.backbone, map_location=device)
    log.info("job %d/%d: %d utterances, backbone %s (%s, embed_dim %d) on %s", args.job, args.num_jobs, len(utts),
             args.backbone or "default", model.config["name"], model.embed_dim, device)
    failed = []
    features = iter_features(feats_scp, tqdm(utts, desc=f"extract.{args.job}", mininterval=5),
                             model.feat_dim, vad_scp, failed)
    embeddings = extract_embeddings(model, features, args.chunk_size, args.min_chunk_size, args.batch_size, device)
    out = os.path.join(args.out_dir, f"xvector.{args.job}")
    done = write_vectors(out + ".ark", out + ".scp", embeddings)
    print(f"Done {done}, failed {len(failed)}")
    return 0


def _read_job_scps(out_dir, num_jobs):
    table = {}
    for job in range(1, num_jobs + 1):
        path = os.path.join(out_dir, f"xvector.{job}.scp")
        if not os.path.isfile(path):
            raise DataDirError(path, 0, f"no such file (did extraction job {job} finish?)")
        for utt, value in read_scp(path).items():
            if utt in table:
                raise DataDirError(path, 0, f"utterance '{utt}' also in another job's output")
            table[utt] = value
    return table


def run_merge(args):
    data = DataDir(args.data_dir)
    utts = set(data.feats_scp())
    spk2utt = data.spk2utt() if data.has("spk2utt") else utt2spk_to_spk2utt(data.utt2spk())
    xvector_scp = _read_job_scps(args.out_dir, args.num_jobs)
    failed = sorted(utts - set(xvector_scp), key=c_sort_key)
    print(f"Done {len(xvector_scp)}, failed {len(failed)}")
    if failed:
        shown = " ".join(failed[:10]) + (" ..." if len(failed) > 10 else "")
        log.warning("no embedding for %d utterance(s) (reasons in log/extract.*.log): %s", len(failed), shown)
    if not xvector_scp or len(failed) > args.max_fail_fraction * len(utts):
        log.error("%d of %d utterances failed, more than --max-fail-fraction %g", len(failed), len(utts),
                  args.max_fail_fraction)
        return 1
    with atomic_open(os.path.join(args.out_dir, "xvector.scp"), "w", encoding="utf-8") as f:
        for utt in sorted(xvector_scp, key=c_sort_key):
            f.write(f"{utt} {xvector_scp[utt]}\n")

    open_files = {}
    num_utts = {}
    total = [0.0]  # the sum of all embeddings, for mean.vec

    def speaker_means():
        for spk in sorted(spk2utt, key=c_sort_key):
            present = [utt for utt in spk2utt[spk] if utt in xvector_scp]
            if not present:
                log.warning("speaker %s: no embeddings, left out of spk_xvector.scp", spk)
                continue
            vectors = np.stack([kaldiio.load_mat(xvector_scp[utt], fd_dict=open_files) for utt in present])
            num_utts[spk] = len(present)
            total[0] = total[0] + vectors.sum(axis=0, dtype=np.float64)
            yield spk, vectors.astype(np.float64).mean(axis=0)

    try:
        write_vectors(os.path.join(args.out_dir, "spk_xvector.ark"), os.path.join(args.out_dir, "spk_xvector.scp"),
                      speaker_means())
    finally:
        for fd in open_files.values():
            fd.close()
    with atomic_open(os.path.join(args.out_dir, "num_utts.ark"), "w", encoding="utf-8") as f:
        for spk, count in num_utts.items():
            f.write(f"{spk} {count}\n")
    # mean.vec (ivector-mean of xvector.scp, as Kaldi's extract_xvectors.sh writes it): scoring with this dir's
    # mean (--mean-dir) reads it instead of every embedding again (1.09 M of them for VoxCeleb2 dev).
    mean_path = os.path.join(args.out_dir, "mean.vec")
    if sum(num_utts.values()) == len(xvector_scp):
        write_kaldi_object(mean_path, total[0] / len(xvector_scp))
    elif os.path.isfile(mean_path):  # embeddings of utterances without a speaker: the mean is xvector.scp's
        os.remove(mean_path)
    log.info("%d utterance and %d speaker embeddings in %s", len(xvector_scp), len(num_utts), args.out_dir)
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        if args.command == "extract":
            return_code = run_extract(args)
        elif args.command == "merge":
            return_code = run_merge(args)
        else:
            return_code = run_list(args)
    except (DataDirError, BackboneFileError, ConfigError, ValueError, RuntimeError, OSError) as e:
        message = no_space_message(e, getattr(args, "out_dir", ".")) if isinstance(e, OSError) else str(e)
        if message is None:
            raise
        print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
        return_code = 1
    sys.exit(return_code)


if __name__ == "__main__":
    main()
