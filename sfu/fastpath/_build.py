"""cffi builder for the optional C helper (`sfu.fastpath._fanout`): fan-out and ingress.

Used three ways:
- by setup.py at install time (`pip install -e .`): it loads this file by path, so nothing here may
  import `sfu` (the build environment has only setuptools and cffi);
- by the tests, which compile it into a temporary directory;
- by hand, `python sfu/fastpath/_build.py`, which builds it in place without reinstalling.

API mode (set_source), not ABI mode: the call into C then costs one cffi call per packet and
group instead of a libffi call, and the compiler checks the declarations against the source.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
MODULE = "sfu.fastpath._fanout"
SOURCES = tuple(HERE / name for name in (
    "uring.c", "fanout.c", "fanout_ring.c", "ingress.c"))  # one module, in this order

# What Python sees of fanout.c. `...;` lets the compiler place the fields (and hides the
# sockaddr union, which only C touches).
CDEF = """
typedef struct {
    uint64_t ctx;
    int fd;
    uint32_t ssrc;
    uint32_t ts_off;
    uint16_t seq_off;
    uint8_t pt;
    uint64_t errors;
    int last_errno;
    uint32_t addrlen;
    char ip[16];
    uint8_t ip_len;
    uint16_t port;
    uint32_t scope_id;
    uint8_t connected;
    ...;
} fp_entry;

int fp_prepare(fp_entry *e, int n);
int fp_send(fp_entry *e, int n, const char *tail, size_t tail_len, unsigned int b0,
            unsigned int mark, unsigned int seq, uint32_t ts, uintptr_t protect_addr);
typedef struct {
    uint32_t off;
    uint32_t len;
    uint8_t b0;
    uint8_t mark;
    uint16_t seq;
    uint32_t ts;
} fp_pkt;

int fp_send_batch(fp_entry *e, int n, const fp_pkt *pk, int k, const char *blob,
                  uintptr_t protect_addr);
int fp_max_batch(void);
int fp_max_packet(void);
void fp_set_gso(int on);
int fp_gso_stats(uint64_t *out);
void fp_set_uring(int on);
int fp_uring_up(void);
int fp_uring_available(void);
int fp_uring_stats(int64_t *out);

typedef struct {
    uint32_t kind, off, len, a, b, c, d, e;
} fp_rec;
int fp_rtcp_scan(const unsigned char *d, int len, fp_rec *recs, int max_recs);
int fp_read(int fd, uintptr_t ctx, uintptr_t unprotect_addr, uintptr_t unprotect_rtcp_addr,
            unsigned char *out, size_t out_size, fp_rec *recs, int max_recs,
            int max_datagrams, int *datagrams);
int fp_rec_size(void);
"""


def make_builder() -> FFI:
    builder = FFI()
    builder.cdef(CDEF)
    # The C text is inlined rather than listed in sources=[...] so the generated module is one
    # self-contained .c file, whatever directory the build runs in.
    builder.set_source(MODULE, "\n".join(src.read_text() for src in SOURCES))
    return builder


ffibuilder = make_builder()


def build_into(directory: Path) -> Path:
    """Compile into `directory` (a throwaway build tree); returns the built module's path."""
    directory.mkdir(parents=True, exist_ok=True)
    return Path(make_builder().compile(tmpdir=str(directory), verbose=False))


if __name__ == "__main__":
    # In-place build for a developer who changed fanout.c: compile under build/, copy the module
    # next to this file (where an editable install imports it from).
    built = build_into(HERE.parent.parent / "build" / "fastpath")
    target = HERE / built.name
    shutil.copy2(built, target)
    sys.stdout.write(f"built {target}\n")
