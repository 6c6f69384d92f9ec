"""Spoken digit strings synthesised with Debian's espeak-ng, and log-mel features.

No recorded spoken-digit corpus ships in the registries this project can reach, so the speech
task synthesises one: ``espeak-ng -v <accent>+<speaker> -s <words per minute> -p <pitch>``
speaks strings of one to three digits. Training uses seven English voices x nine speaker
variants; validation and test each use a voice never heard in training (a held-out accent with
held-out speaker variants). Clips are cached as ``.npz`` arrays (no pickle) under
``$RNNKIT_CACHE`` (default ``~/.cache/rnnkit``).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import torch

from rnnkit.data.bundled import DatasetInfo, DataUnavailable

__all__ = ["ASTERISK_DIGITS", "DIGIT_WORDS", "REAL_DIGITS", "SPEECH", "VOICES", "espeak_available", "log_mel",
           "band_mask", "read_pcm16", "real_digits", "real_digits_available", "spoken_digits", "synthesize"]

SPEECH = DatasetInfo(
    "espeak-digits", "Debian package espeak-ng (formant synthesis), clips synthesised on first use and cached",
    "GPL-3.0-or-later (espeak-ng); the synthesised clips are generated data",
    "digit strings of 1-3 words; by default 800 training, 160 validation and 300 test clips (22.05 kHz, log-mel)",
    "train: 7 English voices x 9 speaker variants; validation: accent en-gb-x-gbcwmd (speakers m5, f4); test: accent "
    "en-029 (Caribbean) with speakers m6, f5, croak, all held out", "sudo apt-get install espeak-ng "
    "(or: bash scripts/setup_data.sh)", "Dunn et al., eSpeak NG; CTC: Graves et al., ICML 2006",
)

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = {
    "train": [f"{a}+{v}" for a in ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-us-nyc",
                                   "en") for v in ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "klatt")],
    "val": ["en-gb-x-gbcwmd+m5", "en-gb-x-gbcwmd+f4"],
    "test": ["en-029+m6", "en-029+f5", "en-029+croak"],
}
SAMPLE_RATE = 22050


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, voice: str, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """The waveform (float32 in [-1, 1], 22.05 kHz) of ``text`` spoken by espeak-ng."""
    if not espeak_available():
        raise DataUnavailable(f"espeak-ng is not installed; run: {SPEECH.install}")
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        frames = w.readframes(w.getnframes())
    return np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768.0


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
            stack: int = 2) -> np.ndarray:
    """Log-mel features ``(T, n_mels * stack)``: 25 ms windows every ``hop_ms``, ``stack`` frames
    concatenated (halving T), normalised per utterance (mean 0, deviation 1 per feature)."""
    n_fft, hop = 1024, int(sr * hop_ms / 1000)
    x = torch.from_numpy(np.ascontiguousarray(wave_))
    spec = torch.stft(x, n_fft, hop, win_length=int(0.025 * sr), window=torch.hann_window(int(0.025 * sr)),
                      return_complex=True).abs().pow(2)  # (F, T)
    feats = torch.log(_mel_filters(n_fft, n_mels, sr) @ spec + 1e-6).T  # (T, M)
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


def _trimmed(x: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """``x`` without its leading and trailing samples quieter than ``floor`` of its peak."""
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
        parts = [np.zeros(int(rate * rng.uniform(0.1, 0.3)), np.float32)]
        for word in text:
            parts += [words[word], np.zeros(int(rate * rng.uniform(0.1, 0.3)), np.float32)]
        x = np.concatenate(parts)
        t = np.arange(int(len(x) * SAMPLE_RATE / rate)) * (rate / SAMPLE_RATE)
        clips.append((log_mel(np.interp(t, np.arange(len(x)), x).astype(np.float32)), " ".join(text), "asterisk"))
    return clips


def _cache_dir() -> Path:
    return Path(os.environ.get("RNNKIT_CACHE", Path.home() / ".cache" / "rnnkit"))


def spoken_digits(split: str, n: int, seed: int = 0) -> list[tuple[np.ndarray, str, str]]:
    """``n`` clips of ``split`` as ``(features (T, 80), transcript, voice)``, cached."""
    if split not in VOICES:
        raise ValueError(f"split must be one of {list(VOICES)}, got {split!r}")
    key = hashlib.sha1(f"v1-{split}-{n}-{seed}-{VOICES[split]}".encode()).hexdigest()[:12]
    path = _cache_dir() / f"speech-{split}-{key}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        feats = np.split(z["features"], z["offsets"][1:-1])
        return list(zip(feats, z["texts"].tolist(), z["voices"].tolist(), strict=True))
    rng = random.Random(f"{split}-{seed}")
    clips = []
    for _ in range(n):
        text = " ".join(rng.choice(DIGIT_WORDS) for _ in range(rng.randint(1, 3)))
        voice = rng.choice(VOICES[split])
        wav = synthesize(text, voice, speed=rng.randint(120, 220), pitch=rng.randint(20, 80))
        clips.append((log_mel(wav), text, voice))
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(f) for f, _, _ in clips])
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, features=np.concatenate([f for f, _, _ in clips]), offsets=offsets,
             texts=np.array([t for _, t, _ in clips]), voices=np.array([v for _, _, v in clips]))
    tmp.replace(path)
    return clips
