"""TorchScript and ONNX graphs of a backbone, for use without pyspk.

The graph maps float32 features ``feats`` (batch, frames, feat_dim) to
``embedding`` (batch, embed_dim), batch and frames dynamic. It holds the
backbone with its per-chunk mean normalisation; the caller computes the
features: Kaldi fbank with the model's options (the bundle's fbank.conf),
the voiced frames only when the bundle uses VAD (vad.conf, Kaldi's
compute-vad on the frame log energy), and for utterances longer than
chunk_size frames the frame-weighted average of the chunk embeddings
(pyspk.models.extract.chunk_plan); an utterance shorter than min_chunk_size
frames is padded by repeating it.

Both are made by tracing (torch.jit.trace, and torch.onnx.export's TorchScript
exporter, ``dynamo=False``, which in torch 2.13 needs the ``onnx`` package and
not onnxscript as the dynamo exporter does); after export each graph is run on
another batch size and length and must agree with the backbone.
"""

import contextlib
import importlib.util
import io
import warnings

import numpy as np
import torch

from pyspk.fileutil import PathLike, atomic_path
from pyspk.models.frontend import Backbone

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "feats", "embedding"
# The export must reproduce the backbone to this (max abs difference), on inputs other than the traced one.
EXPORT_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """An export that cannot run here (a missing package) or whose graph disagrees with the backbone."""


def _example(backbone: Backbone, batch: int, frames: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    device = next(backbone.parameters()).device
    return torch.randn(batch, max(frames, backbone.min_frames), backbone.feat_dim, generator=generator).to(device)


@contextlib.contextmanager
def _quiet_tracing():
    """Silence what tracing says of every export: the input checks of Backbone.forward become
    constants of the trace (the graph's caller gives (batch, frames >= min_frames, feat_dim) input),
    and torch 2.13 calls TorchScript and its ONNX exporter deprecated in favour of torch.export."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*(deprecated|legacy TorchScript-based ONNX export|"
                                                  r"will be removed).*")
        yield


def _check(name: str, run, backbone: Backbone) -> float:
    """Max abs difference between ``run(feats)`` and the backbone on an input the trace did not see."""
    feats = _example(backbone, 3, 137, seed=1)
    with torch.inference_mode():
        expected = backbone(feats).float().cpu().numpy()
    difference = float(np.abs(run(feats) - expected).max())
    if difference > EXPORT_TOLERANCE:
        raise ExportError(f"the {name} graph differs from the backbone by {difference:.3g} on a new batch size "
                          f"and length: {type(backbone).__name__} does not trace with dynamic shapes")
    return difference


def export_torchscript(backbone: Backbone, path: PathLike) -> float:
    """Write the traced backbone to ``path`` (torch.jit.load reads it); return the check's max abs difference."""
    backbone = backbone.eval()
    with _quiet_tracing():
        traced = torch.jit.trace(backbone, _example(backbone, 2, 200, seed=0))
        with atomic_path(path) as tmp:
            torch.jit.save(traced, tmp)
        loaded = torch.jit.load(path, map_location=next(backbone.parameters()).device)

    def run(feats):
        with torch.inference_mode():
            return loaded(feats).float().cpu().numpy()

    return _check("TorchScript", run, backbone)


def onnx_session(model: bytes | PathLike, num_threads: int = 0):
    """An onnxruntime CPU session of an exported graph, ``num_threads`` intra-op threads (0: onnxruntime's
    default); ExportError when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("onnxruntime is not installed: pip install -e '.[export]'") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.log_severity_level = 3  # errors only: it warns about initialisers it cannot fold
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def export_onnx(backbone: Backbone, path: PathLike) -> float:
    """Write the backbone as ONNX (opset ONNX_OPSET) to ``path``; return the check's max abs difference."""
    if importlib.util.find_spec("onnx") is None:
        raise ExportError("ONNX export needs the onnx package: pip install -e '.[export]'")
    backbone = backbone.eval()
    buffer = io.BytesIO()
    with _quiet_tracing():
        torch.onnx.export(backbone, (_example(backbone, 2, 200, seed=0),), buffer, dynamo=False,
                          opset_version=ONNX_OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch", 1: "frames"}, OUTPUT_NAME: {0: "batch"}})
    session = onnx_session(buffer.getvalue())
    difference = _check("ONNX", lambda feats: session.run(None, {INPUT_NAME: feats.cpu().numpy()})[0], backbone)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buffer.getbuffer())
    return difference
