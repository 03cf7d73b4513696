"""pyspk: Kaldi-style recipes for self-supervised speaker embeddings."""

from pyspk.version import __version__

__all__ = ["__version__", "load"]


def load(path, device="auto", **options):
    """A trained model, ready to embed and score audio: ``pyspk.load("model.pt").embed("a.wav")``.

    ``path`` is a model bundle (steps/export_model.sh) or a trainer's final.pt
    with ``fbank_conf=`` (see pyspk.models.speaker_model.SpeakerModel.load for
    the options); ``device`` is auto (CUDA when available), cpu, cuda or cuda:N.
    """
    # torch loads here, not at "import pyspk": the package's light users stay fast.
    from pyspk.models.speaker_model import SpeakerModel

    return SpeakerModel.load(path, device=device, **options)
