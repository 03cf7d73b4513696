#!/usr/bin/env python3
"""Synthesise the offline demo corpus: espeak-ng pseudo-speakers behind random channels.

usage:
  python local/synth_corpus.py synth [options] [--job J --nj N] <corpus-dir>
      Writes <corpus-dir>/wav/<spk>/<utt>.wav for utterances J, J+N, J+2N ...
      (1-based J); wavs already there are kept, so a killed run resumes.
  python local/synth_corpus.py datadirs [options] <corpus-dir> <data-root>
      Checks that every wav exists and writes the Kaldi data dirs
      <data-root>/train and <data-root>/test (wav.scp, utt2spk, spk2utt,
      utt2lang, spk2gender) and <corpus-dir>/speakers.txt.

options (identical for both commands, they define the corpus):
  --num-speakers 200 --test-speakers 40 --utts-per-speaker 20 --seed 777
  --min-sec 2.0 --max-sec 8.0

e.g.: python local/synth_corpus.py synth --job 1 --nj 2 corpus

A speaker is a fixed (language, espeak voice variant, base pitch, speed, word
gap, vocal-tract factor alpha); alpha rescales formants by resampling the
22.05 kHz synthesis as if it had been recorded at 22.05*alpha kHz. Each
utterance has random pseudo-word text, small jitter of the speaker's
parameters and its own channel: reverberation (exponentially decaying noise
RIR), coloured noise at a random SNR, and a random EQ applied to the whole
mixture (a convolutive channel shifts the log-mel mean, which is what makes
mean+std statistics unreliable). Everything random is drawn from generators
seeded by (seed, speaker or utterance id), so any split into jobs gives
identical audio.
"""

import argparse
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from tqdm import tqdm

from pyspk.data.datadir import c_sort_key, utt2spk_to_spk2utt, write_table
from pyspk.fileutil import atomic_open, atomic_path

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050

# Latin-script languages whose letter-to-sound rules read any pseudo-word
# (checked with espeak-ng 1.51; Maori, Hawaiian etc. spell unknown letters).
LANGUAGES = [
    "af", "an", "az", "ca", "cs", "cy", "da", "de", "en-029", "en-gb", "en-gb-scotland", "en-us", "eo", "es", "es-419",
    "et", "eu", "fi", "fr-be", "fr-fr", "ga", "gd", "hr", "hu", "ia", "id", "io", "is", "it", "la", "lb", "lt", "lv",
    "ms", "mt", "nb", "nl", "pl", "pt", "pt-br", "ro", "sk", "sl", "sq", "sv", "sw", "tn", "tr", "uz", "vi",
]

# espeak-ng voice variants (file names under voices/!v) by the gender that
# `espeak-ng --voices=variant` lists; whispering, speed and echo effects left out.
FEMALE_VARIANTS = [
    "Alicia", "Andrea", "Annie", "anika", "anikaRobot", "aunty", "belinda", "f1", "f2", "f3", "f4", "f5", "grandma",
    "linda", "steph", "steph2", "steph3",
]
MALE_VARIANTS = [
    "Alex", "Andy", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco",
    "Mario", "Michael", "Mike", "Nguyen", "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "adam",
    "antonio", "benjamin", "boris", "caleb", "croak", "david", "ed", "edward", "edward2", "grandpa", "gustave", "iven",
    "iven2", "iven3", "iven4", "john", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "m1",
    "m2", "m3", "m4", "m5", "m6", "m7", "m8", "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro",
    "quincy", "rob", "robert", "sandro", "shelby", "travis", "victor", "zac",
]
FEMALE_FRACTION = 0.4

ONSETS = [
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "h", "j", "br", "dr", "kr", "pl", "st", "tr",
    "gl", "sk", "fl", "gr", "sp", "", "", "",
]
NUCLEI = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "u", "ai", "au", "ei", "ou", "ia"]
CODAS = [""] * 8 + ["n", "r", "s", "l", "m", "t", "k"]


@dataclass(frozen=True)
class Speaker:
    spk: str
    gender: str  # 'm' or 'f'
    lang: str
    variant: str
    pitch: int  # espeak -p, 0-99
    speed: int  # espeak -s, words per minute
    word_gap: int  # espeak -g, 10 ms units
    alpha: float  # formant scale (vocal-tract length factor)
    subset: str  # 'train' or 'test'


@dataclass(frozen=True)
class Channel:
    """Ranges of the per-utterance channel; every value is drawn uniformly in its range.

    Tuned so that fbank mean+std cosine scoring stays at roughly 20-30 % EER
    while a small network on mean-normalised fbank separates the speakers well:
    noise and reverberation are moderate, EQ and level are the main nuisance.
    """

    reverb_prob: float = 0.3
    rt60: tuple = (0.15, 0.5)  # seconds
    drr_db: tuple = (0.0, 10.0)  # direct-to-reverberant ratio
    snr_db: tuple = (35.0, 55.0)
    noise_slope: tuple = (0.5, 1.5)  # noise PSD ~ 1/f**slope (0 white, 1 pink, 2 brown)
    eq_anchor_db: float = 3.5  # std of the EQ gain at 8 log-spaced anchor frequencies
    eq_tilt_db: tuple = (-2.0, 2.0)  # dB per octave around 1 kHz
    bandlimit_prob: float = 0.15
    highpass_hz: tuple = (100.0, 400.0)
    lowpass_hz: tuple = (3400.0, 7000.0)
    peak: tuple = (0.1, 0.8)


CHANNEL = Channel()


def derived_rng(seed, key):
    """A generator determined by (seed, key) alone, whatever the job split."""
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def make_speakers(num_speakers, test_speakers, seed):
    """The speaker table; languages and variants are cycled so all get used."""
    if num_speakers < 2 or not 0 < test_speakers < num_speakers:
        raise ValueError(f"need 0 < test-speakers ({test_speakers}) < num-speakers ({num_speakers})")
    rng = derived_rng(seed, "speakers")
    width = max(3, len(str(num_speakers)))
    num_female = round(FEMALE_FRACTION * num_speakers)
    genders = rng.permutation(["f"] * num_female + ["m"] * (num_speakers - num_female))
    variants = {g: list(rng.permutation(v)) for g, v in (("f", FEMALE_VARIANTS), ("m", MALE_VARIANTS))}
    langs = list(rng.permutation(LANGUAGES))
    test = set(rng.choice(num_speakers, test_speakers, replace=False).tolist())
    used = {"f": 0, "m": 0}
    speakers = []
    for i, gender in enumerate(genders):
        variant = variants[gender][used[gender] % len(variants[gender])]
        used[gender] += 1
        speakers.append(Speaker(
            spk=f"spk{i + 1:0{width}d}", gender=str(gender), lang=langs[i % len(langs)], variant=variant,
            pitch=int(rng.integers(10, 91)), speed=int(rng.integers(125, 196)), word_gap=int(rng.integers(0, 4)),
            alpha=round(float(np.exp(rng.uniform(np.log(0.88), np.log(1.14)))), 4),
            subset="test" if i in test else "train"))
    return speakers


def utterance_ids(speaker, utts_per_speaker):
    width = max(3, len(str(utts_per_speaker)))
    return [f"{speaker.spk}-u{u + 1:0{width}d}" for u in range(utts_per_speaker)]


def random_text(rng, num_words):
    """Pseudo-words (readable by any of LANGUAGES) with clause punctuation for prosody."""
    words = []
    for i in range(num_words):
        syllables = rng.integers(1, 4)
        word = "".join(ONSETS[rng.integers(len(ONSETS))] + NUCLEI[rng.integers(len(NUCLEI))]
                       + CODAS[rng.integers(len(CODAS))] for _ in range(syllables))
        if i < num_words - 1 and rng.random() < 0.15:
            word += ","
        words.append(word)
    return " ".join(words) + (". " if rng.random() < 0.8 else "? ")


def espeak(text, voice, pitch, speed, word_gap):
    """Run espeak-ng; return float32 samples at ESPEAK_RATE."""
    cmd = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-g", str(word_gap), "-z", "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or proc.stdout[:4] != b"RIFF":
        raise RuntimeError(f"espeak-ng failed ({' '.join(cmd[:-1])}): {proc.stderr.decode(errors='replace').strip()}")
    wav = proc.stdout
    # espeak-ng streams the wav, so the header's sizes are placeholders: find the data chunk by hand.
    pos = wav.find(b"data", 12)
    rate = int.from_bytes(wav[24:28], "little")
    if pos < 0 or rate != ESPEAK_RATE:
        raise RuntimeError(f"unexpected wav from espeak-ng (rate {rate})")
    samples = np.frombuffer(wav[pos + 8:pos + 8 + (len(wav) - pos - 8) // 2 * 2], dtype="<i2")
    return samples.astype(np.float32) / 32768.0


def trim_silence(x, threshold=0.02):
    if not x.size:
        return x
    loud = np.flatnonzero(np.abs(x) > threshold * np.abs(x).max())
    return x[loud[0]:loud[-1] + 1] if loud.size else x


# 7-smooth numbers: FFT sizes that numpy transforms fast.
SMOOTH = np.unique([2**a * 3**b * 5**c * 7**d for a in range(13) for b in range(8) for c in range(6) for d in range(5)])
SMOOTH = SMOOTH[SMOOTH <= 4096]


def smooth_fraction(ratio):
    """p/q close to ``ratio`` with p and q 7-smooth numbers up to 4096.

    The relative error is below 0.6 % (0.09 % on average), small next to the
    per-utterance jitter of alpha.
    """
    p = np.round(ratio * SMOOTH).astype(np.int64)
    ok = np.isin(p, SMOOTH)
    best = np.argmin(np.where(ok, np.abs(p / SMOOTH - ratio), np.inf))
    return int(p[best]), int(SMOOTH[best])


def vtlp_resample(x, alpha):
    """Treat the 22.05 kHz synthesis as recorded at 22.05*alpha kHz and resample to 16 kHz.

    Band-limited resampling in the frequency domain: the spectrum is cut at the
    new Nyquist frequency (anti-aliasing) or zero-extended and inverted at the
    new length; input and output FFT sizes are q*2^k and p*2^k, both fast.
    """
    if not x.size:
        return x
    p, q = smooth_fraction(SAMPLE_RATE / (ESPEAK_RATE * alpha))
    scale = 1 << max(0, int(np.ceil(np.log2(len(x) / q))))
    spec = np.fft.rfft(x, q * scale)
    out = np.zeros(p * scale // 2 + 1, dtype=spec.dtype)
    keep = min(len(spec), len(out))
    out[:keep] = spec[:keep]
    y = np.fft.irfft(out, p * scale)[:round(len(x) * p / q)]
    return (y * (p / q)).astype(np.float32)


def speech_power(x, frame=320):
    """Mean power of the louder half of the frames (speech without the pauses)."""
    n = len(x) // frame * frame
    energies = np.sort((x[:n].reshape(-1, frame) ** 2).mean(axis=1))
    return float(energies[len(energies) // 2:].mean()) + 1e-12


def room_impulse_response(rng, ch):
    rt60 = rng.uniform(*ch.rt60)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)  # -60 dB after rt60 seconds
    tail[0] = 0.0
    drr = 10 ** (rng.uniform(*ch.drr_db) / 10)
    rir = tail / np.sqrt((tail ** 2).sum() * drr)
    rir[0] = 1.0
    return rir


def channel_gain_db(rng, freqs, ch):
    """A random smooth EQ curve in dB at ``freqs`` (Hz): anchors, tilt, optional band limits."""
    octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)
    anchors = np.linspace(np.log2(60 / 1000), np.log2(7800 / 1000), 8)
    gain = np.interp(octaves, anchors, rng.normal(0.0, ch.eq_anchor_db, len(anchors)))
    gain += rng.uniform(*ch.eq_tilt_db) * octaves
    if rng.random() < ch.bandlimit_prob:
        low, high = rng.uniform(*ch.highpass_hz), rng.uniform(*ch.lowpass_hz)
        gain -= 24 * np.maximum(0, np.log2(low / np.maximum(freqs, 1.0)))
        gain -= 24 * np.maximum(0, np.log2(np.maximum(freqs, 1.0) / high))
    return np.maximum(gain, -60.0)


def apply_channel(rng, x, ch):
    """Reverberation, coloured noise at a random SNR, then a random EQ over the mix."""
    n = len(x)
    if rng.random() < ch.reverb_prob:
        rir = room_impulse_response(rng, ch)
        size = 1 << (n + len(rir) - 2).bit_length()
        x = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[:n]
    nfft = 1 << (n - 1).bit_length()
    freqs = np.fft.rfftfreq(nfft, 1.0 / SAMPLE_RATE)
    noise_spec = np.fft.rfft(rng.standard_normal(nfft))
    noise_spec *= np.maximum(freqs, 20.0) ** (-rng.uniform(*ch.noise_slope) / 2)
    noise = np.fft.irfft(noise_spec, nfft)[:n]
    snr = 10 ** (rng.uniform(*ch.snr_db) / 10)
    noise *= np.sqrt(speech_power(x) / (snr * np.mean(noise ** 2)))
    # Zero-phase EQ in the frequency domain; the zero padding to nfft keeps wrap-around negligible.
    spec = np.fft.rfft(x + noise, nfft) * 10 ** (channel_gain_db(rng, freqs, ch) / 20)
    y = np.fft.irfft(spec, nfft)[:n]
    return (y * (rng.uniform(*ch.peak) / (np.abs(y).max() + 1e-9))).astype(np.float32)


def synth_utterance(speaker, utt, seed, min_sec, max_sec, channel=CHANNEL):
    """Audio of one utterance (float32 at 16 kHz), a function of (speaker, utt, seed) only."""
    rng = derived_rng(seed, utt)
    num_samples = int(rng.uniform(min_sec, max_sec) * SAMPLE_RATE)
    pitch = int(np.clip(speaker.pitch + rng.integers(-4, 5), 0, 99))
    speed = round(speaker.speed * rng.uniform(0.92, 1.08))
    alpha = speaker.alpha * rng.uniform(0.985, 1.015)
    voice = f"{speaker.lang}+{speaker.variant}"
    pieces, have = [], 0
    while have < num_samples:
        # About 2 words per second at 150 wpm; ask for 30 % more than needed.
        num_words = int(np.ceil((num_samples - have) / SAMPLE_RATE * speed / 60 * 1.3)) + 2
        piece = vtlp_resample(trim_silence(espeak(random_text(rng, num_words), voice, pitch, speed,
                                                  speaker.word_gap)), alpha)
        pieces += [np.zeros(int(rng.uniform(0.1, 0.4) * SAMPLE_RATE), np.float32), piece]
        have += len(pieces[-2]) + len(piece)
    speech = np.concatenate(pieces)
    start = int(rng.integers(0, len(speech) - num_samples + 1))
    speech = speech[start:start + num_samples].copy()
    fade = np.linspace(0.0, 1.0, int(0.02 * SAMPLE_RATE), dtype=np.float32)
    speech[:len(fade)] *= fade
    speech[-len(fade):] *= fade[::-1]
    return apply_channel(rng, speech, channel)


def wav_path(corpus_dir, utt, spk):
    return os.path.join(os.path.abspath(corpus_dir), "wav", spk, utt + ".wav")


def all_utterances(speakers, utts_per_speaker):
    return [(speaker, utt) for speaker in speakers for utt in utterance_ids(speaker, utts_per_speaker)]


def synth(args):
    speakers = make_speakers(args.num_speakers, args.test_speakers, args.seed)
    todo = all_utterances(speakers, args.utts_per_speaker)[args.job - 1::args.nj]
    done = failed = 0
    for speaker, utt in tqdm(todo, desc=f"synth job {args.job}/{args.nj}", mininterval=10, file=sys.stderr):
        path = wav_path(args.corpus_dir, utt, speaker.spk)
        if os.path.isfile(path):
            done += 1
            continue
        try:
            audio = synth_utterance(speaker, utt, args.seed, args.min_sec, args.max_sec)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with atomic_path(path) as tmp:
                sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
            done += 1
        except (RuntimeError, OSError) as err:
            print(f"{utt}: {err}", file=sys.stderr)
            failed += 1
    print(f"Done {done}, failed {failed}", file=sys.stderr)
    return 1 if failed else 0


def datadirs(args):
    speakers = make_speakers(args.num_speakers, args.test_speakers, args.seed)
    utts = all_utterances(speakers, args.utts_per_speaker)
    missing = [utt for speaker, utt in utts if not os.path.isfile(wav_path(args.corpus_dir, utt, speaker.spk))]
    if missing:
        print(f"{args.corpus_dir}: {len(missing)} of {len(utts)} wavs missing (first: {missing[0]}); "
              "run the synth command first", file=sys.stderr)
        return 1
    for subset in ("train", "test"):
        subset_speakers = [s for s in speakers if s.subset == subset]
        subset_utts = [(s, u) for s, u in utts if s.subset == subset]
        out = os.path.join(args.data_root, subset)
        os.makedirs(out, exist_ok=True)
        utt2spk = {u: s.spk for s, u in subset_utts}
        write_table(os.path.join(out, "wav.scp"), {u: wav_path(args.corpus_dir, u, s.spk) for s, u in subset_utts})
        write_table(os.path.join(out, "utt2lang"), {u: s.lang for s, u in subset_utts})
        write_table(os.path.join(out, "spk2gender"), {s.spk: s.gender for s in subset_speakers})
        write_table(os.path.join(out, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
        write_table(os.path.join(out, "utt2spk"), utt2spk)  # last: its presence marks the dir complete
    with atomic_open(os.path.join(args.corpus_dir, "speakers.txt"), "w") as f:
        f.write("# spk gender lang variant pitch speed word_gap alpha subset\n")
        for s in sorted(speakers, key=lambda s: c_sort_key(s.spk)):
            f.write(f"{s.spk} {s.gender} {s.lang} {s.variant} {s.pitch} {s.speed} {s.word_gap} {s.alpha} {s.subset}\n")
    print(f"Wrote {args.data_root}/train ({sum(s.subset == 'train' for s in speakers)} speakers) and "
          f"{args.data_root}/test ({args.test_speakers} speakers), {len(utts)} utterances", file=sys.stderr)
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("synth", "datadirs"):
        p = sub.add_parser(name)
        p.add_argument("--num-speakers", type=int, default=200)
        p.add_argument("--test-speakers", type=int, default=40)
        p.add_argument("--utts-per-speaker", type=int, default=20)
        p.add_argument("--seed", type=int, default=777)
        p.add_argument("--min-sec", type=float, default=2.0)
        p.add_argument("--max-sec", type=float, default=8.0)
        if name == "synth":
            p.add_argument("--job", type=int, default=1, help="1-based job index")
            p.add_argument("--nj", type=int, default=1)
        p.add_argument("corpus_dir")
        if name == "datadirs":
            p.add_argument("data_root")
    args = parser.parse_args(argv)
    if args.command == "synth" and not 1 <= args.job <= args.nj:
        parser.error(f"--job must be in 1..--nj ({args.nj}), got {args.job}")
    if not 0.5 <= args.min_sec <= args.max_sec:
        parser.error("need 0.5 <= --min-sec <= --max-sec")
    if args.utts_per_speaker < 2:
        parser.error("--utts-per-speaker must be at least 2 (trials need same-speaker pairs)")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        make_speakers(args.num_speakers, args.test_speakers, args.seed)
    except ValueError as err:
        print(f"{sys.argv[0]}: {err}", file=sys.stderr)
        sys.exit(1)
    sys.exit(synth(args) if args.command == "synth" else datadirs(args))


if __name__ == "__main__":
    main()
