"""Memory accounting that works on CPU, where torch has no allocator statistics."""

from __future__ import annotations

import torch


def saved_tensor_bytes(fn) -> int:
    """Bytes of distinct tensors autograd saves for backward while `fn()` runs.

    This is the memory a training step holds beyond its inputs and weights, and
    what would grow if a step kept one weight copy per basis value.
    """
    seen, alive, total = set(), [], 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape))
        if key not in seen:
            seen.add(key)
            alive.append(t)  # a freed storage's address could be reused and miscounted as seen
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total
