"""Fixtures of the fan-out's tests (test_fastpath*.py, test_frame_hold.py): the send paths a
test runs on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sfu import fastpath

# Whether this kernel lets the C path send through an io_uring (sfu/fastpath/uring.c); where
# it does not (a seccomp profile, io_uring_disabled), the ring cases skip and the plain
# syscalls are what runs.
URING_OK = fastpath.uring_available()
_NEEDS_C = pytest.mark.skipif(not fastpath.COMPILED, reason=fastpath.reason())
_NEEDS_RING = pytest.mark.skipif(not URING_OK, reason="io_uring refused on this machine")


@pytest.fixture(params=[pytest.param(True, id="ring", marks=_NEEDS_RING),
                        pytest.param(False, id="syscalls")])
def sends(request: pytest.FixtureRequest) -> Iterator[bool]:
    """The C path's sends through the io_uring, or one syscall each."""
    fastpath.set_uring(request.param)
    yield request.param
    fastpath.set_uring(fastpath.URING_DEFAULT)


@pytest.fixture(params=[pytest.param("ring", id="c-ring", marks=[_NEEDS_C, _NEEDS_RING]),
                        pytest.param("syscalls", id="c-syscalls", marks=_NEEDS_C),
                        pytest.param("python", id="python")])
def native(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Every send path the same test runs on: C through the io_uring, C with plain syscalls,
    and the Python fallback (the value: whether a group is asked for C)."""
    fastpath.set_uring(request.param == "ring")
    yield request.param != "python"
    fastpath.set_uring(fastpath.URING_DEFAULT)
