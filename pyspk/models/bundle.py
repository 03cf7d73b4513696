"""Model bundles: one file with a backbone and the front-end and back-end it is used with.

A bundle is a backbone file (see pyspk.models: ``backbones``, ``default_backbone``,
so ``load_backbone`` and steps/extract_embeddings.sh read it as they read a
final.pt) with these keys more, all plain values or tensors so that
``torch.load(..., weights_only=True)`` reads it::

    format          "pyspk-model"
    format_version  FORMAT_VERSION; a reader refuses any other
    pyspk_version   the pyspk that wrote it
    frontend        {"fbank": {Kaldi option: value} (conf/fbank.conf),
                     "vad": {Kaldi option: value} (conf/vad.conf),
                     "use_vad": embed the voiced frames only,
                     "chunk_size", "min_chunk_size": extraction's chunking (frames)}
    embed_dim       the embedding dimension
    backend         {"mean": the train-set mean subtracted before cosine scoring, or None,
                     "plda": None or {"mean", "lda" (tensor or None), "lnorm",
                              "plda_mean", "plda_transform", "plda_psi"}}
    card            what the model card says (experiment, training, results)

:func:`bundle_from_experiment` makes one from an experiment dir as
steps/sv_pipeline.sh leaves it (final.pt, config.yaml, log/launch.log,
xvectors_<train-set>/, plda/, ../results.txt).
"""

import os
import re
import shlex
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from pyspk.backend.embeddings import EmbeddingDir
from pyspk.backend.pipeline import PldaBackend
from pyspk.backend.plda import Plda
from pyspk.config import load_yaml
from pyspk.features.fbank import FBANK_SPEC, FbankConfig, Option, read_kaldi_conf
from pyspk.features.vad import VAD_SPEC, VadConfig
from pyspk.fileutil import PathLike
from pyspk.models import BackboneFileError, read_backbone_file
from pyspk.version import __version__

FORMAT = "pyspk-model"
FORMAT_VERSION = 1
BUNDLE_KEYS = ("format", "format_version", "pyspk_version", "frontend", "embed_dim", "backend", "card")
# Result lines of a system's back-ends in results.txt (steps/sv_pipeline.sh names them <system>_<back-end>[_<list>]).
BACKEND_RESULT_NAMES = ("cosine", "cosine_adapt", "plda", "plda_adapt")


class BundleError(BackboneFileError):
    """A model file that is missing, truncated, of another format version or inconsistent; names the file."""


def _tensor(array):
    return None if array is None else torch.from_numpy(np.asarray(array, dtype=np.float64).copy())


def _array(tensor):
    return None if tensor is None else tensor.numpy()


def plda_to_dict(backend: PldaBackend) -> dict:
    """A PLDA back-end (global mean, LDA, length norm, PLDA) as plain values and tensors."""
    return {"mean": _tensor(backend.mean), "lda": _tensor(backend.lda), "lnorm": bool(backend.lnorm),
            "plda_mean": _tensor(backend.plda.mean), "plda_transform": _tensor(backend.plda.transform),
            "plda_psi": _tensor(backend.plda.psi)}


def plda_from_dict(stored: Mapping[str, Any]) -> PldaBackend:
    plda = Plda(_array(stored["plda_mean"]), _array(stored["plda_transform"]), _array(stored["plda_psi"]))
    return PldaBackend(plda, _array(stored["mean"]), _array(stored["lda"]), bool(stored["lnorm"]))


def make_bundle(entry: Mapping[str, Any], fbank: Mapping[str, Any], vad: Mapping[str, Any], use_vad: bool,
                chunk_size: int = 1000, min_chunk_size: int = 100, mean: np.ndarray | None = None,
                plda: PldaBackend | None = None, card: Mapping[str, Any] | None = None,
                backbone_name: str = "model") -> dict:
    """The bundle dict of backbone ``entry`` ({"config", "state_dict"}) with its front-end and back-end.

    ``fbank`` and ``vad`` map Kaldi option names to values (as read from
    conf/fbank.conf and conf/vad.conf); they are validated here.
    """
    fbank_config = FbankConfig(dict(fbank))
    VadConfig(dict(vad))
    feat_dim, embed_dim = entry["config"]["feat_dim"], entry["config"]["embed_dim"]
    if fbank_config.dim != feat_dim:
        raise BundleError(f"the fbank options give {fbank_config.dim}-dim features but the backbone takes {feat_dim}; "
                          "give the fbank conf the model was trained with")
    if min_chunk_size > chunk_size:
        raise BundleError(f"min_chunk_size ({min_chunk_size}) must not exceed chunk_size ({chunk_size})")
    if mean is not None and np.asarray(mean).size != embed_dim:
        raise BundleError(f"the cosine mean has dimension {np.asarray(mean).size}, the embeddings {embed_dim}")
    if plda is not None and plda.input_dim not in (None, embed_dim):
        raise BundleError(f"the PLDA back-end takes {plda.input_dim}-dim embeddings, the backbone gives {embed_dim}")
    return {"backbones": {backbone_name: {"config": dict(entry["config"]), "state_dict": entry["state_dict"]}},
            "default_backbone": backbone_name,
            "format": FORMAT, "format_version": FORMAT_VERSION, "pyspk_version": __version__,
            "frontend": {"fbank": dict(fbank_config.values), "vad": dict(vad), "use_vad": bool(use_vad),
                         "chunk_size": int(chunk_size), "min_chunk_size": int(min_chunk_size)},
            "embed_dim": int(embed_dim),
            "backend": {"mean": _tensor(None if mean is None else np.asarray(mean).ravel()),
                        "plda": None if plda is None else plda_to_dict(plda)},
            "card": dict(card or {})}


def is_bundle(content: Mapping[str, Any]) -> bool:
    """True for a bundle's content, False for a plain backbone file (a trainer's final.pt)."""
    return content.get("format") == FORMAT


def read_model_file(path: PathLike) -> dict:
    """The content of a bundle or of a plain backbone file, checked; BundleError (one line) otherwise."""
    path = os.fspath(path)
    try:
        content = read_backbone_file(path)
    except BackboneFileError as e:  # torch's messages for a truncated file run over several lines
        first_line = str(e).splitlines()[0]
        if "cannot read" not in first_line:
            raise BundleError(first_line) from None
        reason = first_line.split(": ", 2)[-1].split(". ")[0]  # torch's first sentence; the rest is advice
        raise BundleError(f"{path}: cannot read the model file (truncated, or not a pyspk model): {reason}") from None
    if not is_bundle(content):
        if "format" in content:
            raise BundleError(f"{path}: not a pyspk model bundle (format '{content['format']}')")
        return content
    version = content.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: model bundle format version {version!r}, this pyspk ({__version__}) reads "
                          f"version {FORMAT_VERSION}; re-export it with this pyspk's steps/export_model.sh")
    missing = [key for key in BUNDLE_KEYS if key not in content]
    if missing:
        raise BundleError(f"{path}: model bundle lacks {', '.join(missing)}")
    return content


def frontend_configs(frontend: Mapping[str, Any], source: str) -> tuple[FbankConfig, VadConfig]:
    """The FbankConfig and VadConfig of a bundle's front-end; ``source`` names it in messages."""
    return (FbankConfig(dict(frontend["fbank"]), source=f"{source} (fbank options)"),
            VadConfig(dict(frontend["vad"]), source=f"{source} (VAD options)"))


def kaldi_conf_text(values: Mapping[str, Any], spec: Mapping[str, Option]) -> str:
    """Kaldi conf lines (``--name=value``) of the options pyspk implements, read back exactly by read_kaldi_conf."""
    def text(value):
        if isinstance(value, bool):
            return "true" if value else "false"
        return repr(value) if isinstance(value, float) else str(value)

    return "".join(f"--{name}={text(values[name])}\n" for name, option in spec.items() if option.target is not None)


def pipeline_system_name(exp_dir: PathLike, backbone: str | None = None) -> str:
    """The system name steps/sv_pipeline.sh gives an experiment dir's results lines: the dir's name.

    <exp>/dino_rdino -> dino_rdino, <exp>/pl_dino_r2 -> pl_dino_r2,
    untrained, supervised_upper_bound; a MeMo teacher: <dir>_<teacher>
    (memo_demo_teacher_ecapa).
    """
    name = os.path.basename(os.path.normpath(os.fspath(exp_dir)))
    if backbone and backbone.startswith("teacher_"):
        return f"{name}_{backbone}"
    return name


def legacy_pipeline_system_name(exp_dir: PathLike, objective: str | None, backbone: str | None) -> str:
    """The name results lines had before they were named after the experiment dir (issue 28).

    pl_<ssl>[_<tag>]_r<r> -> <ssl>_pl[_<tag>]_r<r>; untrained and
    supervised_upper_bound keep their names; the SSL model's dir: the method
    (MeMo: memo_<teacher>).
    """
    name = os.path.basename(os.path.normpath(os.fspath(exp_dir)))
    match = re.fullmatch(r"pl_([^_]+)(_.+)?_r(\d+)", name)
    if match:
        return f"{match[1]}_pl{match[2] or ''}_r{match[3]}"
    if name in ("untrained", "supervised_upper_bound") or not objective:
        return name
    if backbone and backbone.startswith("teacher_"):
        return f"{objective}_{backbone}"
    return objective


def system_result_lines(results_path: PathLike, system: str) -> list[str]:
    """The lines of ``results_path`` for ``system``'s back-ends (none when the file is absent)."""
    if not os.path.isfile(results_path):
        return []
    pattern = re.compile(rf"system={re.escape(system)}_({'|'.join(BACKEND_RESULT_NAMES)})(_\S+)?\s")
    with open(results_path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if pattern.match(line)]


def experiment_result_lines(results_path: PathLike, exp_dir: PathLike, objective: str | None,
                            backbone: str | None) -> tuple[str, list[str]]:
    """``(system, lines)`` of an experiment dir in a results file: lines named after the dir, else (a results
    file written before they were) the lines of its old name that do not name their scores file."""
    system = pipeline_system_name(exp_dir, backbone)
    lines = system_result_lines(results_path, system)
    if lines:
        return system, lines
    legacy = legacy_pipeline_system_name(exp_dir, objective, backbone)
    old_lines = [line for line in system_result_lines(results_path, legacy) if " scores=" not in line]
    return (legacy, old_lines) if old_lines else (system, [])


def training_data_dir(exp_dir: PathLike) -> str | None:
    """The data dir the training command of ``<exp-dir>/log/launch.log`` (its first line) was given."""
    from pyspk.bin.train import get_parser

    path = os.path.join(exp_dir, "log", "launch.log")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        words = shlex.split(f.readline().lstrip("# "))
    if "pyspk.bin.train" not in words:
        return None
    args, _ = get_parser().parse_known_args(words[words.index("pyspk.bin.train") + 1:])
    if hasattr(args, "data_dir"):
        return args.data_dir
    # <data-dir> <exp-dir> [section.key=value ...] as one list: the first word without '='.
    return next((word for word in getattr(args, "args", []) if "=" not in word), None)


def bundle_from_experiment(exp_dir: PathLike, fbank_conf: PathLike, vad_conf: PathLike, use_vad: bool | None = None,
                           backbone: str | None = None, train_set: str = "train", mean_dir: PathLike | None = None,
                           plda_dir: PathLike | None = None, results: PathLike | None = None,
                           system: str | None = None, chunk_size: int = 1000, min_chunk_size: int = 100) -> dict:
    """A bundle of ``<exp-dir>/final.pt`` with the recipe's confs and the back-end the pipeline trained.

    ``use_vad`` None: the training config's data.use_vad. ``mean_dir`` None:
    ``<exp-dir>/xvectors_[<backbone>_]<train-set>`` when it exists; ``plda_dir``
    None: ``<exp-dir>/plda`` when it exists (an empty string: none).
    ``results`` None: the results file of the experiments above (``../results.txt``).
    """
    exp_dir = os.fspath(exp_dir)
    model_file = os.path.join(exp_dir, "final.pt")
    content = read_model_file(model_file)
    name = backbone or content["default_backbone"]
    if name not in content["backbones"]:
        raise BundleError(f"{model_file}: no backbone '{name}'; available: {', '.join(content['backbones'])}")
    entry = content["backbones"][name]
    config_path = os.path.join(exp_dir, "config.yaml")
    config = load_yaml(config_path) if os.path.isfile(config_path) else content.get("config")
    data_config = (config or {}).get("data") or {}
    if use_vad is None:
        use_vad = bool(data_config.get("use_vad", False))
    fbank = read_kaldi_conf(fbank_conf, FBANK_SPEC)
    vad = read_kaldi_conf(vad_conf, VAD_SPEC)
    tag = f"{backbone}_" if backbone else ""
    if mean_dir is None:
        candidate = os.path.join(exp_dir, f"xvectors_{tag}{train_set}")
        mean_dir = candidate if os.path.isfile(os.path.join(candidate, "xvector.scp")) else ""
    mean = EmbeddingDir(mean_dir).mean() if mean_dir else None
    if plda_dir is None:
        plda_dir = os.path.join(exp_dir, "plda") if os.path.isfile(os.path.join(exp_dir, "plda", "plda")) else ""
    plda = PldaBackend.load(plda_dir) if plda_dir else None
    objective = (config or {}).get("objective")
    if results is None:
        results = os.path.join(os.path.dirname(os.path.abspath(exp_dir)), "results.txt")
    if system:
        lines = system_result_lines(results, system)
    else:
        system, lines = experiment_result_lines(results, exp_dir, objective, name)
    card = {"exp_dir": exp_dir, "model_file": model_file, "backbone": name, "system": system,
            "objective": objective, "training_config": config, "data_dir": training_data_dir(exp_dir),
            "steps": content.get("step"), "epochs": content.get("epoch"),
            "fbank_conf": os.fspath(fbank_conf), "vad_conf": os.fspath(vad_conf),
            "mean_dir": os.fspath(mean_dir) or None, "plda_dir": os.fspath(plda_dir) or None,
            "plda_info": None if plda is None else dict(plda.info),
            "results_file": os.fspath(results), "results": lines}
    return make_bundle(entry, fbank, vad, use_vad, chunk_size, min_chunk_size, mean, plda, card, name)
