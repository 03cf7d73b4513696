"""Shared pieces of the VoxCeleb data preparation (imported by local/make_voxceleb{1,2}.py).

Layouts (as unpacked from the official archives):
  VoxCeleb1: <root>/wav/<spk>/<youtube-id>/00001.wav, <root>/vox1_meta.csv,
             trial lists <root>/veri_test2.txt, list_test_all2.txt, list_test_hard2.txt
  VoxCeleb2: <root>/dev/aac/<spk>/<youtube-id>/00001.m4a (or .../dev/wav/... once converted)
Utterance ids follow Kaldi's voxceleb recipe: <spk>-<youtube-id>-<segment>, so
they start with the speaker id and sort consistently with spk2utt.
"""

import os
import shlex

from pyspk.data.datadir import DataDirError, utt2spk_to_spk2utt, write_table


class PrepError(Exception):
    """A problem with the corpus on disk; the message says what and where."""


def scan_corpus(audio_root, extension):
    """``{utt_id: (spk, relative_path, absolute_path)}`` for ``<audio_root>/<spk>/<yt>/<seg><extension>``.

    ``relative_path`` is ``<spk>/<yt>/<seg><extension>``, the form trial lists use.
    """
    if not os.path.isdir(audio_root):
        raise PrepError(f"{audio_root}: no such directory")
    utts = {}
    with os.scandir(audio_root) as speakers:
        for spk in speakers:
            if not spk.is_dir():
                continue
            with os.scandir(spk.path) as videos:
                for video in videos:
                    if not video.is_dir():
                        continue
                    with os.scandir(video.path) as segments:
                        for seg in segments:
                            if not seg.name.endswith(extension) or not seg.is_file():
                                continue
                            stem = seg.name[:-len(extension)]
                            utt = f"{spk.name}-{video.name}-{stem}"
                            utts[utt] = (spk.name, f"{spk.name}/{video.name}/{seg.name}", seg.path)
    if not utts:
        raise PrepError(f"{audio_root}: no <speaker>/<video>/*{extension} files")
    bad = [u for u in utts if any(c.isspace() for c in utts[u][2])]
    if bad:
        raise PrepError(f"{utts[bad[0]][2]}: paths with whitespace cannot go into wav.scp")
    return utts


def m4a_pipe(path):
    """Kaldi's extended filename decoding an m4a to 16-bit wav on stdout."""
    return f"ffmpeg -v 8 -i {shlex.quote(path)} -f wav -acodec pcm_s16le - |"


def write_data_dir(out_dir, wav_scp, utt2spk, spk2gender=None):
    """Write wav.scp, utt2spk, spk2utt (and spk2gender for the speakers present), sorted and atomically."""
    os.makedirs(out_dir, exist_ok=True)
    write_table(os.path.join(out_dir, "wav.scp"), wav_scp)
    write_table(os.path.join(out_dir, "utt2spk"), utt2spk)
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    write_table(os.path.join(out_dir, "spk2utt"), spk2utt)
    if spk2gender:
        genders = {spk: spk2gender[spk] for spk in spk2utt if spk in spk2gender}
        if genders:
            write_table(os.path.join(out_dir, "spk2gender"), genders)


def read_meta(path, separator):
    """Rows of a VoxCeleb meta csv as lists of stripped fields, header skipped; ``[]`` if absent."""
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if lineno == 1 or not line.strip():
                continue
            fields = [x.strip() for x in line.rstrip("\n").split(separator)]
            if not fields[0].startswith("id"):
                raise DataDirError(path, lineno, f"expected a speaker id (idNNNNN) first, got '{fields[0]}'")
            rows.append(fields)
    return rows


def gender_of(value):
    """Kaldi's spk2gender wants m/f."""
    value = value.lower()
    return value if value in ("m", "f") else None
