"""Use a trained model: embed or score audio, export the backbone (the ``pyspk`` command).

Usage:
  pyspk embed [options] <model> <audio>...          embeddings of audio files
  pyspk embed [options] --wav-scp <wav.scp> <model>  of every entry of a Kaldi wav.scp
  pyspk score [options] <model> <enrol-audio> <test-audio>
  pyspk score [options] --wav-scp <wav.scp> --trials <trials> <model>
  pyspk export [--torchscript <file>] [--onnx <file>] <model>
e.g.:
  pyspk embed exported/dino_r2/model.pt a.wav b.flac --out emb.ark
  pyspk embed --wav-scp data/test/wav.scp --out emb.npy exported/dino_r2/model.pt
  pyspk score exported/dino_r2/model.pt enrol.wav test.wav
  pyspk score --wav-scp data/test/wav.scp --trials data/test/trials --out scores exported/dino_r2/model.pt
  pyspk export --torchscript model.ts --onnx model.onnx exported/dino_r2/model.pt
(python -m pyspk ... is the same command.)

<model> is a model bundle made by steps/export_model.sh, which carries its
fbank and VAD options and scoring back-end, or a trainer's final.pt with
--fbank-conf (and --vad-conf --use-vad true if it was trained on voiced frames).
Audio is any file soundfile reads (wav, flac, ogg ...) or a wav.scp pipe
("sox in.sph -t wav - |"); audio at another sample rate is resampled to the
model's, said once per rate on stderr (--no-resample: an error instead).

embed writes Kaldi vectors: --out x.ark (binary, with x.scp), --out x.npy
(float32 rows in input order, their keys in x.keys), or without --out a
text ark on stdout. Keys are the paths given, or the wav.scp ids. With
audio paths the first bad file stops it with an error naming the file; with
--wav-scp a bad entry is reported and the rest embedded, ending with "Done N,
failed M" (exit status 1 when M > 0).

score prints the PLDA score when the model has a PLDA back-end, else the
cosine score after subtracting the model's train-set mean (--backend picks);
with --trials it writes "<enrol> <test> <score>" per scored trial (in the
trials' order; trials of utterances that failed are skipped and counted).

export writes the backbone as TorchScript and/or ONNX: input "feats"
(batch, frames, feat_dim) fbank, output "embedding"; the features (and VAD,
chunking) are the caller's job, see pyspk/models/export.py and the bundle's
model card.
"""

import logging
import sys

import numpy as np

from pyspk.cli import bool_arg, new_parser, positive_int, user_errors_exit
from pyspk.config import ConfigError
from pyspk.data.datadir import DataDirError, read_scp, read_trials
from pyspk.features.audio import UtteranceError
from pyspk.features.fbank import KaldiOptionError
from pyspk.fileutil import atomic_open, no_space_message

log = logging.getLogger("pyspk")


class InputFailures(Exception):
    """Some --wav-scp entries failed (already reported); exit status 1."""


def _model_options(parser):
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="chunks per forward pass (default 32)")
    parser.add_argument("--no-resample", action="store_true",
                        help="audio at another sample rate than the model's is an error, not resampled")
    parser.add_argument("--fbank-conf", default=None, help="plain backbone files only: the fbank conf it was trained "
                                                           "with (a bundle carries its own)")
    parser.add_argument("--vad-conf", default=None, help="plain backbone files only: the VAD conf (with --use-vad)")
    parser.add_argument("--use-vad", type=bool_arg, default=False,
                        help="plain backbone files only: embed voiced frames only (default false)")
    parser.add_argument("--wav-scp", default=None, help="Kaldi wav.scp of the utterances (instead of audio paths)")


def build_parser():
    parser = new_parser(__doc__)
    parser.prog = "pyspk"
    sub = parser.add_subparsers(dest="command", required=True)
    embed = sub.add_parser("embed", help="embeddings of audio files or of a wav.scp")
    _model_options(embed)
    embed.add_argument("--out", default=None, help="x.ark (+ x.scp) or x.npy (+ x.keys); default: text on stdout")
    embed.add_argument("model")
    embed.add_argument("audio", nargs="*")
    score = sub.add_parser("score", help="score two audio files, or a trials file of a wav.scp")
    _model_options(score)
    score.add_argument("--backend", choices=("auto", "cosine", "plda"), default="auto",
                       help="auto: PLDA when the model has one, else cosine (default auto)")
    score.add_argument("--trials", default=None, help="Kaldi trials file (with --wav-scp)")
    score.add_argument("--out", default=None, help="with --trials: score file (default: stdout)")
    score.add_argument("model")
    score.add_argument("audio", nargs="*")
    export = sub.add_parser("export", help="TorchScript and/or ONNX of the backbone")
    export.add_argument("--torchscript", default=None, help="TorchScript file to write")
    export.add_argument("--onnx", default=None, help="ONNX file to write (needs: pip install -e '.[export]')")
    export.add_argument("model")
    return parser


def _load(args):
    from pyspk.device import pick_device
    from pyspk.models.speaker_model import SpeakerModel

    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        raise ValueError(str(e)) from None
    return SpeakerModel.load(args.model, device=str(device), fbank_conf=args.fbank_conf, vad_conf=args.vad_conf,
                             use_vad=args.use_vad, resample_audio=not args.no_resample)


def _inputs(args, prog):
    """``[(key, audio)]`` from the audio paths or the --wav-scp."""
    if args.wav_scp:
        if args.audio:
            raise ValueError("give either audio paths or --wav-scp, not both")
        return list(read_scp(args.wav_scp).items())
    if not args.audio:
        raise ValueError(f"no audio given (see {prog} --help)")
    return [(path, path) for path in args.audio]


def _embed_all(model, items, batch_size, keep_going, prog):
    """``([(key, embedding)], failures)``; without ``keep_going`` the first failure raises UtteranceError."""
    failed = []
    embeddings = list(model.iter_embeddings(items, failed=failed, batch_size=batch_size))
    if failed and not keep_going:
        key, reason = failed[0]
        raise UtteranceError(f"{key}: {reason}")
    if keep_going:
        for key, reason in failed:
            print(f"{prog}: {key}: {reason}", file=sys.stderr)
        print(f"{prog}: Done {len(embeddings)}, failed {len(failed)}", file=sys.stderr)
    return embeddings, failed


def _check_keys(keys, out):
    spaced = next((key for key in keys if any(c.isspace() for c in key)), None)
    if spaced is not None:
        raise ValueError(f"key '{spaced}' holds white space, which a Kaldi archive cannot; give a --wav-scp")
    if out and not out.endswith((".ark", ".npy")):
        raise ValueError(f"--out {out}: must end in .ark (Kaldi ark + scp) or .npy (numpy + keys)")


def _write_embeddings(embeddings, out):
    from pyspk.models.extract import write_vectors

    if out is None:
        for key, vector in embeddings:
            print(f"{key}  [ {' '.join(f'{v:.7g}' for v in vector.tolist())} ]")
    elif out.endswith(".ark"):
        write_vectors(out, out[:-len(".ark")] + ".scp", embeddings)
    else:
        with atomic_open(out[:-len(".npy")] + ".keys", "w", encoding="utf-8") as f:
            f.writelines(f"{key}\n" for key, _ in embeddings)
        matrix = np.stack([vector for _, vector in embeddings]) if embeddings else np.zeros((0, 0), dtype=np.float32)
        with atomic_open(out, "wb") as f:
            np.save(f, matrix)


def run_embed(args, prog):
    items = _inputs(args, prog)
    _check_keys([key for key, _ in items], args.out)
    model = _load(args)
    embeddings, failed = _embed_all(model, items, args.batch_size, bool(args.wav_scp), prog)
    _write_embeddings(embeddings, args.out)
    if failed:
        raise InputFailures


def run_score(args, prog):
    if not args.trials:
        if args.wav_scp or len(args.audio) != 2:
            raise ValueError("score takes <model> <enrol-audio> <test-audio>, or --wav-scp with --trials")
        model = _load(args)
        embeddings, _ = _embed_all(model, [(path, path) for path in args.audio], args.batch_size, False, prog)
        (_, enrol), (_, test) = embeddings
        print(f"{float(model.score_embeddings(enrol, test, args.backend)[0]):.6f}")
        return
    if not args.wav_scp or args.audio:
        raise ValueError("--trials scores the utterances of a --wav-scp; give no audio paths with it")
    from pyspk.backend.scoring import index_trials, write_scores

    trials = read_trials(args.trials)
    wanted = {key for enrol, test, _ in trials for key in (enrol, test)}
    items = [(key, entry) for key, entry in read_scp(args.wav_scp).items() if key in wanted]
    model = _load(args)
    model.scorer(args.backend)  # a missing PLDA fails before any audio is read
    embeddings, failed = _embed_all(model, items, args.batch_size, True, prog)
    keys = [key for key, _ in embeddings]
    kept, enrol_index, test_index = index_trials(trials, args.trials, keys, keys, args.wav_scp, args.wav_scp,
                                                 skip_missing=True)
    matrix = np.stack([vector for _, vector in embeddings]) if keys else np.zeros((0, model.embed_dim))
    scores = model.score_embeddings(matrix[enrol_index], matrix[test_index], args.backend)
    kept_trials = [trials[k] for k in kept.tolist()]
    if args.out:
        write_scores(args.out, [t[0] for t in kept_trials], [t[1] for t in kept_trials], scores)
    else:
        for (enrol, test, _), value in zip(kept_trials, scores.tolist(), strict=True):
            print(f"{enrol} {test} {value:.6f}")
    print(f"{prog}: scored {len(kept_trials)} of {len(trials)} trials", file=sys.stderr)
    if failed or len(kept_trials) < len(trials):
        raise InputFailures


def run_export(args, prog):
    if not args.torchscript and not args.onnx:
        raise ValueError("give --torchscript <file> and/or --onnx <file>")
    from pyspk.models import load_backbone
    from pyspk.models.bundle import read_model_file
    from pyspk.models.export import export_onnx, export_torchscript

    read_model_file(args.model)  # a truncated or foreign-version file fails with its one-line message
    backbone = load_backbone(args.model)
    for path, export in ((args.torchscript, export_torchscript), (args.onnx, export_onnx)):
        if path:
            difference = export(backbone, path)
            print(f"{prog}: wrote {path} (max abs difference to the backbone on a new input: {difference:.2g})")


def _describe(error):
    """One line: a full disk said so, any other message with its lines joined."""
    return (isinstance(error, OSError) and no_space_message(error, ".")) or " ".join(str(error).split("\n"))


def main(argv=None):
    args = build_parser().parse_args(argv)
    prog = f"pyspk {args.command}"
    # Messages of the library (resampling, skipped trials) as "<prog>: ..." lines; the root logger stays
    # without a handler so that user_errors_exit prints an error once.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False
    # torch loads only now, once the arguments are parsed: --help and usage errors stay fast.
    from pyspk.models import BackboneFileError
    from pyspk.models.export import ExportError

    errors = (BackboneFileError, ConfigError, DataDirError, KaldiOptionError, UtteranceError, ExportError, ValueError,
              OSError)
    run = {"embed": run_embed, "score": run_score, "export": run_export}[args.command]
    with user_errors_exit(prog, errors, _describe):
        try:
            run(args, prog)
        except InputFailures:
            sys.exit(1)


if __name__ == "__main__":
    main()
