"""Make a model bundle from an experiment dir (run by steps/export_model.sh).

Usage:
  python -m pyspk.bin.export_model [options] <exp-dir> <out-dir>
e.g.:
  python -m pyspk.bin.export_model --fbank-conf conf/fbank.conf --vad-conf conf/vad.conf \\
      --torchscript true --onnx true exp/pl_dino_r2 exported/dino_r2

Writes <out-dir>/model.pt: <exp-dir>/final.pt's backbone with the fbank and
VAD options (Kaldi conf files, read from the recipe directory), whether it
embeds voiced frames only (default: the training config's data.use_vad),
the chunking of extraction, and the scoring back-end the pipeline trained
with it: the train-set mean of <exp-dir>/xvectors_<train-set> (cosine) and
the PLDA of <exp-dir>/plda, when they exist. Also <out-dir>/fbank.conf,
vad.conf (the options as stored) and README.md, the model card: where the
model comes from, its training, the front-end and back-end, and the
recipe's result lines of its system (<exp-dir>/../results.txt). With
--torchscript/--onnx true also model.torchscript.pt and model.onnx, checked
against the backbone (pyspk/models/export.py).

Use it with: pyspk embed|score <out-dir>/model.pt ..., or pyspk.load().
"""

import json
import logging
import os
import sys

import yaml

from pyspk.cli import bool_arg, new_parser, positive_int, user_errors_exit
from pyspk.config import ConfigError
from pyspk.data.datadir import DataDirError
from pyspk.features.fbank import FBANK_SPEC, KaldiOptionError
from pyspk.features.vad import VAD_SPEC
from pyspk.fileutil import atomic_open, no_space_message
from pyspk.logutil import setup_logging
from pyspk.models import BackboneFileError, load_backbone, write_backbone_file
from pyspk.models.bundle import bundle_from_experiment, kaldi_conf_text
from pyspk.models.export import INPUT_NAME, OUTPUT_NAME, ExportError, export_onnx, export_torchscript

log = logging.getLogger("export_model")

BUNDLE_NAME = "model.pt"
GRAPH_NAMES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}


def get_parser():
    parser = new_parser(__doc__)
    parser.add_argument("--fbank-conf", default="conf/fbank.conf",
                        help="fbank conf of the model (default: %(default)s)")
    parser.add_argument("--vad-conf", default="conf/vad.conf", help="VAD conf (default: %(default)s)")
    parser.add_argument("--use-vad", choices=("auto", "true", "false"), default="auto",
                        help="embed voiced frames only; auto: the training config's data.use_vad (default: auto)")
    parser.add_argument("--backbone", default=None, help="backbone of final.pt (default: its default backbone)")
    parser.add_argument("--train-set", default="train",
                        help="cosine mean from <exp-dir>/xvectors_[<backbone>_]<train-set> (default: %(default)s)")
    parser.add_argument("--mean-dir", default=None, help="x-vector dir of the cosine mean instead; 'none': no mean")
    parser.add_argument("--plda-dir", default=None,
                        help="PLDA dir of the back-end (default: <exp-dir>/plda when present); 'none': no PLDA")
    parser.add_argument("--results", default=None, help="results file (default: <exp-dir>/../results.txt)")
    parser.add_argument("--system", default=None, help="system name of the results lines (default: as "
                                                        "steps/sv_pipeline.sh names <exp-dir>)")
    parser.add_argument("--chunk-size", type=positive_int, default=1000, help="frames per chunk (default 1000)")
    parser.add_argument("--min-chunk-size", type=positive_int, default=100,
                        help="shorter tails dropped, shorter utterances padded by repetition (default 100)")
    parser.add_argument("--torchscript", type=bool_arg, default=False, help="also write model.torchscript.pt "
                                                                             "(default false)")
    parser.add_argument("--onnx", type=bool_arg, default=False, help="also write model.onnx (default false)")
    parser.add_argument("exp_dir")
    parser.add_argument("out_dir")
    return parser


def _off_or(value):
    """An option's value: None (its default), '' for 'none' (left out), else the value."""
    return "" if value == "none" else value


def model_card(bundle, graphs):
    """The README.md of an exported model."""
    card, frontend, backend = bundle["card"], bundle["frontend"], bundle["backend"]
    config = bundle["backbones"][bundle["default_backbone"]]["config"]
    fbank = frontend["fbank"]
    training = card.get("training_config") or {}
    lines = [f"# {card['system']}: a pyspk speaker-embedding model",
             "",
             f"Exported by pyspk.bin.export_model (steps/export_model.sh) from `{card['exp_dir']}` "
             f"(backbone `{card['backbone']}` of `{card['model_file']}`), bundle format {bundle['format_version']}, "
             f"pyspk {bundle['pyspk_version']}.",
             "",
             "## Model",
             "",
             f"- backbone: {config['name']} ({json.dumps(config, sort_keys=True)}), "
             f"{bundle['embed_dim']}-dim embeddings",
             f"- training: objective {card.get('objective') or 'unknown'}, {card.get('steps') or '?'} steps "
             f"({card.get('epochs') or '?'} epochs), data dir {card.get('data_dir') or 'unknown'} "
             f"(config: `{card['exp_dir']}/config.yaml`, below)",
             f"- front-end: {fbank['sample-frequency']:g} Hz audio, {fbank['num-mel-bins']}-bin Kaldi fbank "
             f"(fbank.conf, from {card['fbank_conf']}), "
             + ("voiced frames only (Kaldi energy VAD, vad.conf, from " + card["vad_conf"] + ")"
                if frontend["use_vad"] else "all frames (no VAD)")
             + f"; chunks of {frontend['chunk_size']} frames, shorter tails than {frontend['min_chunk_size']} "
               "dropped, shorter utterances padded by repetition",
             "- back-end: cosine"
             + (f" after subtracting the mean of {card['mean_dir']}" if backend["mean"] is not None else
                " (no train-set mean)")
             + (f"; PLDA of {card['plda_dir']} ({json.dumps(card.get('plda_info') or {}, sort_keys=True)})"
                if backend["plda"] is not None else "; no PLDA"),
             "",
             f"## Results of `{card['system']}` (from {card['results_file']})",
             ""]
    lines += [f"    {line}" for line in card["results"]] or ["none found"]
    lines += ["",
              "## Use",
              "",
              "    pyspk embed model.pt a.wav b.flac --out emb.ark",
              "    pyspk score model.pt enrol.wav test.wav",
              "",
              "    import pyspk",
              "    model = pyspk.load(\"model.pt\")",
              "    embedding = model.embed(\"a.wav\")",
              ""]
    if graphs:
        lines += ["## Exported graphs", "",
                  f"{', '.join(f'`{name}`' for name in graphs)}: input `{INPUT_NAME}` (batch, frames, "
                  f"{config['feat_dim']}) float32 log-mel fbank as fbank.conf computes it"
                  + (", voiced frames only (vad.conf)" if frontend["use_vad"] else "")
                  + f", at least {frontend['min_chunk_size']} frames (pad shorter utterances by repeating them); "
                  f"output `{OUTPUT_NAME}` (batch, {bundle['embed_dim']}). Mean normalisation is inside the graph; "
                  "fbank, VAD and the averaging of chunk embeddings are the caller's (pyspk/models/export.py).", ""]
    lines += ["## Training config", "", "```yaml",
              yaml.safe_dump(training, sort_keys=False).rstrip() if training else "# not found", "```", ""]
    return "\n".join(lines)


def export(args):
    use_vad = None if args.use_vad == "auto" else args.use_vad == "true"
    bundle = bundle_from_experiment(
        args.exp_dir, args.fbank_conf, args.vad_conf, use_vad, args.backbone, args.train_set,
        _off_or(args.mean_dir), _off_or(args.plda_dir), args.results, args.system, args.chunk_size,
        args.min_chunk_size)
    os.makedirs(args.out_dir, exist_ok=True)
    write_backbone_file(os.path.join(args.out_dir, BUNDLE_NAME), dict(bundle))
    frontend = bundle["frontend"]
    for name, values, spec in (("fbank.conf", frontend["fbank"], FBANK_SPEC), ("vad.conf", frontend["vad"], VAD_SPEC)):
        with atomic_open(os.path.join(args.out_dir, name), "w", encoding="utf-8") as f:
            f.write(kaldi_conf_text(values, spec))
    card = bundle["card"]
    log.info("%s: %s backbone '%s' of %s, use_vad %s, cosine mean %s, PLDA %s, %d result lines of system %s",
             BUNDLE_NAME, bundle["backbones"][card["backbone"]]["config"]["name"], card["backbone"], card["model_file"],
             frontend["use_vad"], card["mean_dir"] or "none", card["plda_dir"] or "none", len(card["results"]),
             card["system"])
    graphs = []
    backbone = load_backbone(os.path.join(args.out_dir, BUNDLE_NAME)) if args.torchscript or args.onnx else None
    for kind, wanted, write in (("torchscript", args.torchscript, export_torchscript),
                                ("onnx", args.onnx, export_onnx)):
        if wanted:
            difference = write(backbone, os.path.join(args.out_dir, GRAPH_NAMES[kind]))
            log.info("%s: max abs difference to the backbone on a new input %.2g", GRAPH_NAMES[kind], difference)
            graphs.append(GRAPH_NAMES[kind])
    with atomic_open(os.path.join(args.out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(model_card(bundle, graphs))


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()

    def describe(error):
        return (isinstance(error, OSError) and no_space_message(error, args.out_dir)) or str(error).splitlines()[0]

    with user_errors_exit("export_model", (BackboneFileError, ConfigError, DataDirError, KaldiOptionError,
                                           ExportError, ValueError, OSError), describe):
        export(args)


if __name__ == "__main__":
    sys.exit(main())
