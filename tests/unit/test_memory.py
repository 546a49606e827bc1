"""retained_heap: large blocks come from the heap inside, from fresh mappings outside."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest

from modelyard._memory import _glibc, retained_heap


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mapped_blocks() -> int:
    lib = ctypes.CDLL(ctypes.util.find_library("c"))
    lib.mallinfo2.restype = _Mallinfo2
    return int(lib.mallinfo2().hblks)


needs_glibc = pytest.mark.skipif(
    _glibc() is None or not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2"),
    reason="glibc with mallinfo2 only",
)


@needs_glibc
def test_large_blocks_come_from_the_heap_inside_and_are_mapped_again_after() -> None:
    with retained_heap() as active:
        assert active
        with retained_heap() as nested:  # nested uses keep it on
            assert nested
        before = _mapped_blocks()
        block = np.ones(20_000_000)  # 160 MB: far above glibc's largest mmap threshold
        assert _mapped_blocks() == before
        del block
    before = _mapped_blocks()
    block = np.ones(20_000_000)
    assert _mapped_blocks() == before + 1  # the defaults are back
    del block


@needs_glibc
def test_the_environment_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_RETAIN_HEAP", "0")
    with retained_heap() as active:
        assert not active
        before = _mapped_blocks()
        block = np.ones(20_000_000)
        assert _mapped_blocks() == before + 1
        del block
