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


@needs_glibc
def test_a_worker_process_keeps_the_heap_after_every_task() -> None:
    """retain_heap_for_process (what warm_worker sets): a task's retained_heap exit leaves it
    on. In a child process: the setting is process-wide."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import ctypes, ctypes.util
        import numpy as np
        from modelyard._memory import retain_heap_for_process, retained_heap

        class Info(ctypes.Structure):
            _fields_ = [(f"f{i}", ctypes.c_size_t) for i in range(10)]

        lib = ctypes.CDLL(ctypes.util.find_library("c"))
        lib.mallinfo2.restype = Info

        def _mapped_blocks():
            return lib.mallinfo2().f3  # hblks
        assert retain_heap_for_process()
        with retained_heap():
            pass
        before = _mapped_blocks()
        block = np.ones(20_000_000)
        assert _mapped_blocks() == before, "mapped again after a task"
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
