"""Lock-free single-producer/single-consumer buffers between PortAudio callbacks and the
processing thread: a float32 sample ring and a clock that stamps each written block.

Both are preallocated: the producer's side (``SampleRing.write``, ``BlockClock.record``) only
copies into existing memory, so it is safe to call from an audio callback. The counters and
positions are plain Python ints, each written by one side only; under the GIL an int assignment
is atomic, so the producer publishes data by moving its position after the copy and the
consumer can never see a half-written block.

Overrun policy: **drop newest.** A block that does not fit whole is dropped whole and counted.
Dropping the oldest samples instead would make the producer move the consumer's position, which
needs a lock; with drop-newest the consumer keeps what it has, and the gap stays visible
because the ``BlockClock`` stamp of the next accepted block jumps forward in time.
"""

from __future__ import annotations

import numpy as np


class SampleRing:
    """A fixed-capacity FIFO of mono float32 samples for one producer and one consumer.

    Positions count samples since construction: ``written`` (producer) and ``consumed``
    (consumer, including samples skipped by ``clear``). Sample ``i`` of the stream lives at
    ``buffer[i % capacity]``.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"ring capacity must be positive, got {capacity}")
        self._buf = np.zeros(capacity, np.float32)  # (capacity,)
        self._capacity = capacity
        self._written = 0  # producer's position
        self._consumed = 0  # consumer's position
        self._clear_to = 0  # producer-side clear mark: the consumer skips up to here
        self.overruns = 0  # blocks dropped because they did not fit (producer side)
        self.dropped_samples = 0  # samples in those blocks
        self.underruns = 0  # reads that got fewer samples than asked for (consumer side)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def written(self) -> int:
        """Stream index of the next sample the producer will write."""
        return self._written

    @property
    def consumed(self) -> int:
        """Stream index of the next sample the consumer will read."""
        return max(self._consumed, self._clear_to)

    def available(self) -> int:
        """Samples the consumer can read now."""
        return self._written - self.consumed

    def free(self) -> int:
        """Samples the producer can write now without an overrun."""
        return self._capacity - (self._written - self._consumed)

    def write(self, block: np.ndarray) -> bool:
        """Producer: append ``block`` (n,) float32 whole, or drop it whole when it does not fit.

        Returns whether it was written. Never allocates a buffer: it copies into the ring.
        """
        n = block.shape[0]
        if n > self._capacity - (self._written - self._consumed):
            self.overruns += 1
            self.dropped_samples += n
            return False
        start = self._written % self._capacity
        first = min(n, self._capacity - start)
        np.copyto(self._buf[start : start + first], block[:first])
        if first < n:
            np.copyto(self._buf[: n - first], block[first:])
        self._written += n  # publish after the copy
        return True

    def read_into(self, out: np.ndarray) -> int:
        """Consumer: fill ``out`` (m,) with up to m samples, zeros after the last one.

        Returns how many samples were real; a short read counts as an underrun.
        """
        start_pos = self.consumed
        m = out.shape[0]
        n = min(m, self._written - start_pos)
        start = start_pos % self._capacity
        first = min(n, self._capacity - start)
        np.copyto(out[:first], self._buf[start : start + first])
        if first < n:
            np.copyto(out[first:n], self._buf[: n - first])
        if n < m:
            out[n:] = 0.0
            self.underruns += 1
        self._consumed = start_pos + n  # release after the copy
        return n

    def read(self, n: int) -> np.ndarray:
        """Consumer: up to ``n`` samples as a new (k,) float32 array, k <= n (allocates)."""
        out = np.empty(min(n, self.available()), np.float32)
        self.read_into(out)
        if out.shape[0] < n:
            self.underruns += 1
        return out

    def clear(self) -> None:
        """Drop everything written so far. Call it from the producer's side (or while holding
        whatever serialises the producers): the consumer skips to the mark on its next read,
        so nothing written before the call is read after it returns."""
        self._clear_to = self._written


class BlockClock:
    """Per-block stream timestamps for a ``SampleRing``: (first sample index, time, tag).

    The producer records each block just before writing it to the ring; the consumer asks the
    time of any sample it has read and forgets blocks it no longer needs. ``tag`` is free for
    the producer (the output callback stores how many of the block's samples were queued audio
    rather than underrun zeros). Preallocated: a record for a full clock is dropped and
    counted, and its samples are then timed from the previous block.
    """

    def __init__(self, capacity: int, rate: float) -> None:
        if capacity <= 1:
            raise ValueError(f"clock capacity must be at least 2, got {capacity}")
        self._starts = np.zeros(capacity, np.int64)  # (capacity,) first sample index per block
        self._times = np.zeros(capacity, np.float64)  # (capacity,) stream time of that sample
        self._tags = np.zeros(capacity, np.int64)  # (capacity,)
        self._capacity = capacity
        self._rate = rate
        self._recorded = 0  # producer: records published
        self._oldest = 0  # consumer: oldest record still kept
        self.dropped = 0  # records dropped because the clock was full

    @property
    def rate(self) -> float:
        return self._rate

    def record(self, start: int, time: float, tag: int = 0) -> None:
        """Producer: the block whose first sample has stream index ``start`` is stamped
        ``time``. Recording the same ``start`` again (the ring dropped that block) replaces
        the stamp: no sample at that index was published, so no reader is looking at it."""
        last = self._recorded - 1
        if last >= self._oldest and self._starts[last % self._capacity] == start:
            slot = last % self._capacity
        elif self._recorded - self._oldest >= self._capacity:
            self.dropped += 1
            return
        else:
            slot = self._recorded % self._capacity
        self._starts[slot] = start
        self._times[slot] = time
        self._tags[slot] = tag
        if last < self._oldest or slot != last % self._capacity:
            self._recorded += 1  # publish after the stamp is complete

    def _find(self, index: float) -> int:
        """Slot of the newest kept record with start <= index (the oldest if none is)."""
        lo, hi = self._oldest, self._recorded
        if lo == hi:
            raise LookupError("no block has been recorded")
        while lo < hi:
            mid = (lo + hi) // 2
            if self._starts[mid % self._capacity] <= index:
                lo = mid + 1
            else:
                hi = mid
        return max(lo - 1, self._oldest) % self._capacity

    def lookup(self, index: float) -> tuple[float, int]:
        """Consumer: (stream time of sample ``index``, tag of its block); ``index`` may be
        fractional, and samples of a block are ``1 / rate`` apart."""
        slot = self._find(index)
        return (
            float(self._times[slot]) + (index - int(self._starts[slot])) / self._rate,
            int(self._tags[slot]),
        )

    def time_at(self, index: float) -> float:
        """Consumer: stream time of sample ``index``."""
        return self.lookup(index)[0]

    def forget_before(self, index: float) -> None:
        """Consumer: drop the records of blocks that end before sample ``index``."""
        while (
            self._oldest + 1 < self._recorded
            and self._starts[(self._oldest + 1) % self._capacity] <= index
        ):
            self._oldest += 1
