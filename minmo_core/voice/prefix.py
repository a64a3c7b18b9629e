"""Chunk-causal sequences computed a region at a time: the attention mask and the prefix cache.

The flow's layers are causal at chunk granularity: a convolution reads only earlier frames,
and attention sees its own chunk and every chunk before it. Once a chunk is complete, its
frames never change again. So a stream computes only the *region* from the first
incomplete chunk to the end, and every layer keeps what it needs of the complete chunks
before it, in a ``Prefix``:

    frames     0 ......... start | start ....... start+keep ....... start+T
               kept by the layers | region: computed by this pass
                                  | complete chunks: kept for the next pass

Attention layers keep their keys and values; convolutions keep their last k - 1 input
frames. A pass over the region with the kept prefix gives exactly what a pass over the whole
sequence gives for the region's frames. With ``start = keep = 0`` a ``Prefix`` keeps nothing
and the layers compute a whole sequence: the same code serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def chunk_mask(size: int, chunk: int, device: torch.device, start: int = 0) -> torch.Tensor:
    """(size, start + size) bool: query start + i may attend key j iff j lies in the query's
    chunk or an earlier one. With ``start = 0`` it is square."""
    query = torch.arange(start, start + size, device=device)
    key = torch.arange(start + size, device=device)
    chunk_end = (query // chunk + 1) * chunk  # (size,) first position after each query's chunk
    return key[None, :] < chunk_end[:, None]


@dataclass
class Prefix:
    """One pass's view of one sequence's kept prefix.

    start : int
        frames before the region, already computed and kept by every layer
    keep : int
        the region's first ``keep`` frames are final after this pass (their chunks are
        complete); the layers add them to what they keep
    store : dict
        the layers' kept tensors, by (layer, name); shared by the passes of one sequence
    """

    start: int = 0
    keep: int = 0
    store: dict[tuple[object, str], torch.Tensor] = field(default_factory=dict)

    def extend(self, owner: object, name: str, x: torch.Tensor, dim: int) -> torch.Tensor:
        """[the kept frames ; x] along ``dim``: shape start + T there.

        The kept frames live in a buffer that grows by doubling, so a pass copies only its
        region, never the whole prefix again.
        """
        if self.start == 0 and self.keep == 0:
            return x
        key = (owner, name)
        end = self.start + x.size(dim)
        buffer = self.store.get(key)
        if buffer is None or buffer.size(dim) < end:
            shape = list(x.shape)
            shape[dim] = max(end, 2 * (buffer.size(dim) if buffer is not None else 0))
            grown = x.new_empty(shape)
            if buffer is not None:
                grown.narrow(dim, 0, self.start).copy_(buffer.narrow(dim, 0, self.start))
            buffer = self.store[key] = grown
        buffer.narrow(dim, self.start, x.size(dim)).copy_(x)
        return buffer.narrow(dim, 0, end)

    def history(self, owner: object, x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
        """[up to ``n`` kept frames just before the region ; x] along ``dim`` (fewer than
        ``n`` only at the sequence's start, where a causal layer pads)."""
        key = (owner, "history")
        past = self.store.get(key) if self.start else None
        full = x if past is None else torch.cat([past, x], dim)
        if self.keep and n:
            end = full.size(dim) - x.size(dim) + self.keep
            begin = max(0, end - n)
            self.store[key] = full.narrow(dim, begin, end - begin).clone()
        return full


__all__ = ["Prefix", "chunk_mask"]
