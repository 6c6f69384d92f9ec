"""Spoken digit strings synthesised with Debian's espeak-ng and flite, and log-mel features.

No recorded spoken-digit corpus ships in the registries this project can reach, so the speech
task synthesises one: ``espeak-ng -v <accent>+<speaker> -s <words per minute> -p <pitch>`` (formant
synthesis) and ``flite -voice <voice>`` (diphone and statistical-parametric synthesis, with its
pitch and duration set) speak strings of one to three digits. Training uses seven English espeak
accents x nine speaker variants and flite's five voices; validation and test each use an espeak
voice never heard in training (a held-out accent with held-out speaker variants).

The training clips can be augmented (:func:`augment`) so that a model trained on them transfers
to a real voice over a telephone line (:func:`real_digits`): half the clips are spoken a word at a
time and spliced with pauses, and each is sped up or slowed down, band limited as 8 kHz audio is,
tilted in spectrum, given a gain and silence, and mixed with noise. Speed perturbation is Ko et
al., Interspeech 2015; added noise as in Deep Speech (Hannun et al. 2014).

Clips are cached as ``.npz`` arrays (no pickle) under ``$RNNKIT_CACHE`` (default ``~/.cache/rnnkit``).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import torch

from rnnkit.data.bundled import DatasetInfo, DataUnavailable

__all__ = ["ASTERISK_DIGITS", "DIGIT_WORDS", "FLITE_VOICES", "REAL_DIGITS", "SPEECH", "VOICES", "augment",
           "band_mask", "espeak_available", "flite_available", "log_mel", "read_pcm16", "real_digits",
           "real_digits_available", "resample", "spoken_digits", "synthesize", "voices_available"]

SPEECH = DatasetInfo(
    "espeak-flite-digits", "Debian packages espeak-ng (formant synthesis) and flite (diphone and statistical "
    "parametric synthesis), clips synthesised on first use and cached",
    "GPL-3.0-or-later (espeak-ng), BSD-style (flite); the synthesised clips are generated data",
    "digit strings of 1-3 words; by default 800 augmented training, 160 validation and 300 test clips (22.05 kHz, "
    "log-mel)",
    "train: 7 English espeak voices x 9 speaker variants and flite's 5 voices (a third of the clips), augmented; "
    "validation: accent en-gb-x-gbcwmd (speakers m5, f4); test: accent en-029 (Caribbean) with speakers m6, f5, "
    "croak, all held out, not augmented", "sudo apt-get install espeak-ng flite (or: bash scripts/setup_data.sh)",
    "Dunn et al., eSpeak NG; Black & Lenzo, Flite (2001); CTC: Graves et al., ICML 2006",
)

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
#: flite's built-in voices (``flite -lv``) and the range of mean pitch (Hz) each is given
FLITE_VOICES = {"kal": (85, 150), "kal16": (85, 150), "awb": (85, 150), "rms": (85, 150), "slt": (150, 240)}
#: each flite voice stands in the training list this many times, so that flite speaks about a third of the clips
_FLITE_WEIGHT = 6
VOICES = {
    "train": [f"{a}+{v}" for a in ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-us-nyc",
                                   "en") for v in ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "klatt")]
    + [f"flite:{v}" for v in FLITE_VOICES for _ in range(_FLITE_WEIGHT)],
    "val": ["en-gb-x-gbcwmd+m5", "en-gb-x-gbcwmd+f4"],
    "test": ["en-029+m6", "en-029+f5", "en-029+croak"],
}
SAMPLE_RATE = 22050
#: :func:`log_mel`'s dynamic range (dB below a clip's loudest mel energy)
TOP_DB: float | None = 60.0


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def flite_available() -> bool:
    return shutil.which("flite") is not None


def voices_available() -> bool:
    """Whether both synthesisers of the training voices (espeak-ng and flite) are installed."""
    return espeak_available() and flite_available()


def synthesize(text: str, voice: str, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """The waveform (float32 in [-1, 1], 22.05 kHz) of ``text`` spoken by espeak-ng, or by flite for a
    voice named ``flite:<voice>``. ``speed`` is in words per minute (espeak's scale, 160 normal);
    ``pitch`` is espeak's 0-99, mapped for flite onto its voice's range in :data:`FLITE_VOICES`."""
    if voice.startswith("flite:"):
        name = voice.removeprefix("flite:")
        if name not in FLITE_VOICES:
            raise ValueError(f"voice {voice!r}: flite's voices here are {', '.join(FLITE_VOICES)}")
        if not flite_available():
            raise DataUnavailable(f"flite is not installed; run: {SPEECH.install}")
        lo, hi = FLITE_VOICES[name]
        with tempfile.TemporaryDirectory() as tmp:  # flite writes a file only
            out = Path(tmp) / "clip.wav"
            subprocess.run(["flite", "-voice", name, "--setf", f"duration_stretch={160 / speed:.3f}",
                            "--setf", f"int_f0_target_mean={lo + (hi - lo) * pitch / 99:.1f}", "-t", text,
                            "-o", str(out)], check=True, capture_output=True)
            x, rate = read_pcm16(out)
        return resample(x, rate, SAMPLE_RATE)
    if not espeak_available():
        raise DataUnavailable(f"espeak-ng is not installed; run: {SPEECH.install}")
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
    return resample(np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768.0, rate, SAMPLE_RATE)


def resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    """``x`` (1-D) from ``rate`` to ``to`` samples per second: band limited to the lower of the two
    Nyquist frequencies (in the frequency domain), then linearly interpolated."""
    if rate == to:
        return np.asarray(x, dtype=np.float32)
    if to < rate:
        x = _filtered(x, rate, lambda f: (f <= to / 2).astype(np.float64))
    t = np.arange(int(len(x) * to / rate)) * (rate / to)
    return np.interp(t, np.arange(len(x)), x).astype(np.float32)


def _filtered(x: np.ndarray, rate: int, response) -> np.ndarray:
    """``x`` with its spectrum times ``response(frequencies in Hz)`` (a zero-phase FFT filter)."""
    spec = np.fft.rfft(np.asarray(x, dtype=np.float64))
    return np.fft.irfft(spec * response(np.fft.rfftfreq(len(x), 1.0 / rate)), n=len(x)).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A perturbed copy of waveform ``x`` (deterministic given ``rng``'s state):

    * speed x0.85-1.15 (tempo and pitch together, by resampling);
    * with probability 0.7, the telephone band: nothing above 3.3-4 kHz (what 8 kHz sampling keeps)
      nor below 100-300 Hz;
    * with probability 0.5, a spectral tilt: the spectrum times ``(1 + f / 1 kHz) ** s``, |s| <= 0.6;
    * 0-0.3 s of silence before and after, and a gain of 0.3-1;
    * with probability 0.5, white noise at a signal-to-noise ratio of 10-40 dB.
    """
    x = np.asarray(x, dtype=np.float32)
    factor = rng.uniform(0.85, 1.15)
    x = np.interp(np.arange(0, len(x) - 1, factor), np.arange(len(x)), x).astype(np.float32)
    if rng.random() < 0.7:
        top, bottom = rng.uniform(3300, 4000), rng.uniform(100, 300)
        x = _filtered(x, rate, lambda f: ((f <= top) & (f >= bottom)).astype(np.float64))
    if rng.random() < 0.5:
        slope = rng.uniform(-0.6, 0.6)
        x = _filtered(x, rate, lambda f: (1.0 + f / 1000.0) ** slope)
    x = np.concatenate([np.zeros(int(rate * rng.uniform(0, 0.3)), np.float32), x,
                        np.zeros(int(rate * rng.uniform(0, 0.3)), np.float32)])
    x = x * (rng.uniform(0.3, 1.0) / (np.abs(x).max() or 1.0))
    if rng.random() < 0.5:
        power = float(np.mean(x**2)) / 10 ** (rng.uniform(10, 40) / 10)
        x = x + rng.normal(0.0, np.sqrt(power), len(x))
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _mel_filters(n_fft: int, n_mels: int, sr: int, fmax: float = 8000.0) -> torch.Tensor:
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(0.0), mel(fmax), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((n_mels, len(bins)), dtype=np.float32)
    for i in range(n_mels):
        lo, mid, hi = edges[i : i + 3]
        fb[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0.0, None)
    return torch.from_numpy(fb)  # (M, F)


def band_mask(fmax_hz: float, n_mels: int = 40, stack: int = 2, top_hz: float = 8000.0) -> np.ndarray:
    """``(n_mels * stack,)`` 0/1: the :func:`log_mel` features whose mel band lies wholly below
    ``fmax_hz`` (in every stacked frame)."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    upper = hz(np.linspace(mel(0.0), mel(top_hz), n_mels + 2))[2:]  # each band's upper edge
    return np.tile((upper <= fmax_hz * (1 + 1e-9)).astype(np.float32), stack)  # (rounding at the top edge)


def log_mel(wave_: np.ndarray, sr: int = SAMPLE_RATE, n_mels: int = 40, hop_ms: float = 10.0,
            stack: int = 2, top_db: float | None = TOP_DB) -> np.ndarray:
    """Log-mel features ``(T, n_mels * stack)``: 25 ms windows every ``hop_ms``, ``stack`` frames
    concatenated (halving T), normalised per utterance (mean 0, deviation 1 per feature). Energies
    more than ``top_db`` below the clip's loudest are raised to that floor (as librosa's
    ``power_to_db(top_db=...)``), so that digital silence and a faint noise floor look alike."""
    n_fft, hop = 1024, int(sr * hop_ms / 1000)
    x = torch.from_numpy(np.ascontiguousarray(wave_))
    spec = torch.stft(x, n_fft, hop, win_length=int(0.025 * sr), window=torch.hann_window(int(0.025 * sr)),
                      return_complex=True).abs().pow(2)  # (F, T)
    mel = _mel_filters(n_fft, n_mels, sr) @ spec  # (M, T)
    if top_db is not None:
        mel = torch.maximum(mel, mel.max() * 10 ** (-top_db / 10))
    feats = torch.log(mel + 1e-6).T  # (T, M)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-5)
    T = feats.size(0) // stack * stack
    return feats[:T].reshape(T // stack, n_mels * stack).numpy()  # (T / stack, M * stack)


#: where Debian's asterisk-core-sounds-en-wav puts its recordings (one human voice, 8 kHz, 16-bit)
ASTERISK_DIGITS = Path("/usr/share/asterisk/sounds/en/digits")

REAL_DIGITS = DatasetInfo(
    "asterisk-digits", "Debian package asterisk-core-sounds-en-wav: the digits 0-9 recorded by one human speaker",
    "CC-BY-SA-3.0 (Digium's Asterisk core sound prompts)",
    "digit strings of 1-3 words spliced from the ten recordings, with 0.1-0.3 s pauses; 8 kHz audio upsampled",
    "test only: a real voice that the synthetic training never hears",
    "sudo apt-get install asterisk-core-sounds-en-wav (or: bash scripts/setup_data.sh)", "Digium, Asterisk",
)


def read_pcm16(path: str | Path) -> tuple[np.ndarray, int]:
    """The samples (float32 in [-1, 1], the first channel) and sample rate of a 16-bit PCM WAV file;
    ValueError (or OSError) for anything else."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{w.getsampwidth() * 8}-bit samples; rnnkit reads 16-bit PCM")
        rate, ch = w.getframerate(), w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)[::ch].astype(np.float32) / 32768.0
    return x, rate


def real_digits_available(root: Path = ASTERISK_DIGITS) -> bool:
    return all((root / f"{d}.wav").is_file() for d in range(10))


def _trimmed(x: np.ndarray, floor: float = 0.01) -> np.ndarray:
    """``x`` without its leading and trailing samples quieter than ``floor`` of its peak. At 1% (-40
    dB) the quiet fricatives stay: the recorded "six" is 0.56 s so trimmed, but only its vowel (0.31 s)
    at 5%, which made it sound like "eight". (The recordings' noise floor is near 0.01% of the peak.)"""
    loud = np.flatnonzero(np.abs(x) > floor * (np.abs(x).max() or 1.0))
    return x[loud[0] : loud[-1] + 1] if loud.size else x


def real_digits(n: int = 200, seed: int = 0, root: Path = ASTERISK_DIGITS) -> list[tuple[np.ndarray, str, str]]:
    """``n`` clips ``(features (T, 80), transcript, "asterisk")`` spliced from one human speaker's
    recordings of the ten digits: 1-3 words, as the synthetic clips, with pauses of 0.1-0.3 s,
    resampled from 8 kHz to the synthetic clips' 22.05 kHz (linear interpolation)."""
    if not real_digits_available(root):
        raise DataUnavailable(f"the real-voice digits are not installed; run: {REAL_DIGITS.install}")
    words, rate = {}, None
    for d, word in enumerate(DIGIT_WORDS):
        try:
            x, rate = read_pcm16(root / f"{d}.wav")
        except ValueError as err:
            raise DataUnavailable(f"{root / f'{d}.wav'}: {err}") from None
        words[word] = _trimmed(x)
    rng = random.Random(f"asterisk-{seed}")
    clips = []
    for _ in range(n):
        text = [rng.choice(DIGIT_WORDS) for _ in range(rng.randint(1, 3))]
        x = _with_pauses([words[word] for word in text], rate, rng)
        clips.append((log_mel(resample(x, rate, SAMPLE_RATE)), " ".join(text), "asterisk"))
    return clips


def _cache_dir() -> Path:
    return Path(os.environ.get("RNNKIT_CACHE", Path.home() / ".cache" / "rnnkit"))


def _with_pauses(words: list[np.ndarray], rate: int, rng: random.Random) -> np.ndarray:
    """The ``words``' audio joined by pauses of 0.1-0.3 s of silence, one before, between and after."""
    parts = [np.zeros(int(rate * rng.uniform(0.1, 0.3)), np.float32)]
    for word in words:
        parts += [word, np.zeros(int(rate * rng.uniform(0.1, 0.3)), np.float32)]
    return np.concatenate(parts)


def _spliced(words: list[str], voice: str, speed: int, pitch: int, rng: random.Random) -> np.ndarray:
    """``words`` synthesised one at a time, trimmed, and joined by pauses (as the real voice's clips
    are made: :func:`real_digits`)."""
    return _with_pauses([_trimmed(synthesize(word, voice, speed, pitch)) for word in words], SAMPLE_RATE, rng)


def _progress(items, what: str, show: bool):
    """``items`` with rich's progress bar (when ``show``, gone when done); plainly without rich."""
    try:
        from rich.progress import track
    except ImportError:
        return items
    return track(items, what, transient=True) if show else items


def spoken_digits(split: str, n: int, seed: int = 0, augmented: bool = False,
                  progress: bool = False) -> list[tuple[np.ndarray, str, str]]:
    """``n`` clips of ``split`` as ``(features (T, 80), transcript, voice)``, cached. ``augmented``:
    half the clips spoken a word at a time and spliced (:func:`_spliced`), and each perturbed by
    :func:`augment`, all seeded by ``seed``. ``progress``: a progress bar while synthesising."""
    if split not in VOICES:
        raise ValueError(f"split must be one of {list(VOICES)}, got {split!r}")
    key = hashlib.sha1(f"v3-{split}-{n}-{seed}-{augmented}-{TOP_DB}-{VOICES[split]}".encode()).hexdigest()[:12]
    path = _cache_dir() / f"speech-{split}-{key}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        feats = np.split(z["features"], z["offsets"][1:-1])
        return list(zip(feats, z["texts"].tolist(), z["voices"].tolist(), strict=True))
    rng = random.Random(f"{split}-{seed}")  # the texts, voices, speeds and pitches: alike with and without augmenting
    style, noise = random.Random(f"{split}-{seed}-augmented"), np.random.default_rng([seed, len(split), n])
    clips = []
    for _ in _progress(range(n), f"synthesising {n} {split} clips (cached after)", progress):
        words = [rng.choice(DIGIT_WORDS) for _ in range(rng.randint(1, 3))]
        voice = rng.choice(VOICES[split])
        speed, pitch = rng.randint(120, 220), rng.randint(20, 80)
        if augmented and style.random() < 0.5:
            wav = _spliced(words, voice, speed, pitch, style)
        else:
            wav = synthesize(" ".join(words), voice, speed, pitch)
        if augmented:
            wav = augment(wav, noise)
        clips.append((log_mel(wav), " ".join(words), voice))
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(f) for f, _, _ in clips])
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, features=np.concatenate([f for f, _, _ in clips]), offsets=offsets,
             texts=np.array([t for _, t, _ in clips]), voices=np.array([v for _, _, v in clips]))
    tmp.replace(path)
    return clips
