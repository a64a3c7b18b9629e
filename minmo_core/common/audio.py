"""Audio in: files or arrays of any rate, width and channel count -> mono float32 at the rate a
model wants, whole or streamed in bounded memory, with clear errors for unusable input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from minmo_core.errors import AudioError

SILENCE_DBFS = -50.0  # a clip whose loudest 10 ms frame is below this holds no speech
LEVEL_FRAME_S = 0.01


def to_mono_float32(data: np.ndarray) -> np.ndarray:
    """(N,) or (N, channels) samples of any int or float dtype -> (N,) float32 in [-1, 1]."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data.mean(axis=1, dtype=np.float64) if data.shape[1] > 1 else data[:, 0]
    elif data.ndim != 1:
        raise AudioError(f"audio must be (samples,) or (samples, channels), got {data.shape}")
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        offset = (info.max + 1) // 2 if info.min == 0 else 0  # unsigned PCM is offset
        data = (data.astype(np.float64) - offset) / (info.max + 1 - offset)
    elif not np.issubdtype(data.dtype, np.floating):
        raise AudioError(f"audio samples must be numbers, got dtype {data.dtype}")
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise AudioError("audio contains NaN or infinite samples")
    return data


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(N,) float32 -> (round(N * rate_out / rate_in),) float32 (soxr, high quality)."""
    if rate_in <= 0:
        raise AudioError(f"invalid sample rate {rate_in} Hz")
    if rate_in == rate_out:
        return audio
    return soxr.resample(audio, rate_in, rate_out).astype(np.float32, copy=False)


def _open(path: Path) -> sf.SoundFile:
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file {path} does not exist")
    if not path.is_file():
        raise AudioError(f"{path} is not a file")
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        reason = str(err).split("': ", 1)[-1].strip().rstrip(".")  # without the path again
        raise AudioError(f"{path} is not a readable audio file ({reason})") from err
    if handle.frames == 0:
        handle.close()
        raise AudioError(f"audio file {path} contains no samples")
    return handle


def probe_audio(path: Path) -> float:
    """Duration in seconds of an audio file, from its header; raises AudioError naming a
    missing, unreadable or empty file (damage past the header shows when it is decoded)."""
    with _open(path) as handle:
        return handle.frames / handle.samplerate


def read_audio(path: Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Whole file -> (N,) mono float32 at ``sample_rate``.

    ``max_seconds`` refuses longer files before reading them (use ``stream_audio`` for those).
    """
    with _open(path) as handle:
        seconds = handle.frames / handle.samplerate
        if max_seconds is not None and seconds > max_seconds:
            raise AudioError(
                f"{path} is {seconds:.0f} s long; at most {max_seconds:.0f} s is accepted here"
            )
        try:
            data = handle.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise _damaged(path, handle, err) from err
        rate = handle.samplerate
    return resample(to_mono_float32(data), rate, sample_rate)


def _damaged(path: Path, handle: sf.SoundFile, err: Exception) -> AudioError:
    """A file whose header opened but whose samples stop decoding part-way."""
    try:
        at = f" after {handle.tell() / handle.samplerate:.1f} s"
    except (sf.LibsndfileError, RuntimeError, ZeroDivisionError):
        at = ""
    reason = str(err).removeprefix("Error : ").strip().rstrip(".")
    return AudioError(f"{path} is damaged or truncated: decoding failed{at} ({reason})")


def stream_audio(path: Path, sample_rate: int, block_seconds: float = 10.0) -> Iterator[np.ndarray]:
    """Yield the file as consecutive (n,) mono float32 blocks at ``sample_rate``.

    Memory stays bounded by one block whatever the file's length.
    """
    handle = _open(path)
    with handle:
        rate = handle.samplerate
        resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32")
        block = max(1, int(block_seconds * rate))
        blocks = handle.blocks(blocksize=block, dtype="float32", always_2d=True)
        while True:
            try:
                data = next(blocks)
            except StopIteration:
                break
            except (sf.LibsndfileError, RuntimeError) as err:
                raise _damaged(path, handle, err) from err
            mono = to_mono_float32(data)
            out = mono if rate == sample_rate else resampler.resample_chunk(mono)
            if out.size:
                yield out
        if rate != sample_rate:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield tail


def frame_levels_dbfs(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS level of each 10 ms frame in dBFS: (ceil(N / frame),). No copy of the audio."""
    frame = max(1, int(sample_rate * LEVEL_FRAME_S))
    full = audio.size // frame * frame
    frames = audio[:full].reshape(-1, frame)  # (n, frame) view
    power = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / frame
    if full < audio.size:
        rest = audio[full:].astype(np.float64)
        power = np.append(power, (rest**2).mean())
    return 10 * np.log10(np.maximum(power, 1e-20))


def is_silent(audio: np.ndarray, sample_rate: int, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    return audio.size == 0 or float(frame_levels_dbfs(audio, sample_rate).max()) < threshold_dbfs


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the stream
    audio: np.ndarray  # (n,) float32
    silent: bool
    sample_rate: int

    @property
    def end(self) -> float:
        return self.start + self.audio.size / self.sample_rate


def split_stream(
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    max_seconds: float = 30.0,
    search_seconds: float = 5.0,
) -> Iterator[Segment]:
    """Cut a stream of blocks into segments of at most ``max_seconds``.

    Each cut falls at the quietest 10 ms frame of the segment's last ``search_seconds``,
    so words are rarely split. At most one segment plus one block is held in memory.
    """
    limit = int(max_seconds * sample_rate)
    search = min(int(search_seconds * sample_rate), limit // 2)
    frame = max(1, int(sample_rate * LEVEL_FRAME_S))
    pending: list[np.ndarray] = []
    held = 0
    start = 0
    for block in blocks:
        pending.append(block)
        held += block.size
        while held >= limit:
            buffer = np.concatenate(pending)
            tail = buffer[limit - search : limit]
            quietest = int(np.argmin(frame_levels_dbfs(tail, sample_rate)[: search // frame]))
            cut = limit - search + quietest * frame + frame // 2
            piece = buffer[:cut]
            yield Segment(start / sample_rate, piece, is_silent(piece, sample_rate), sample_rate)
            start += cut
            pending, held = [buffer[cut:]], buffer.size - cut
    if held:
        piece = np.concatenate(pending)
        yield Segment(start / sample_rate, piece, is_silent(piece, sample_rate), sample_rate)
