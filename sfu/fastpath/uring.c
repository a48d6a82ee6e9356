/* One io_uring per process for the fan-out's sends (Linux 5.6+), without liburing.
 *
 * Why: a subscriber has a UDP socket of its own (its ICE pair), so a packet to N subscribers is
 * N send syscalls, and sendmmsg cannot span sockets. Queued on a ring, N sends cost one
 * io_uring_enter(): ~0.7 us less per send on the development VM (4.1 -> 3.4 us per 200-byte
 * datagram to a loopback receiver, a scratch C loop; the kernel's UDP and loopback work stays).
 * Every send carries MSG_DONTWAIT, which io_uring honours (REQ_F_NOWAIT): a full socket buffer
 * completes at once with -EAGAIN instead of waiting for room, so a flush never blocks the event
 * loop for longer than the sends themselves, and the buffers are free again when it returns.
 *
 * The ring is made on first use; where the kernel or a seccomp profile refuses io_uring, or
 * lacks IORING_OP_SEND/SENDMSG, it is never used and the sends are plain syscalls, as before.
 * A forked child drops the ring it inherited (it shares the parent's) and makes its own.
 *
 * Included verbatim, first, into the module cffi generates (sfu/fastpath/_build.py).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#if defined(__linux__) && defined(__has_include)
#if __has_include(<linux/io_uring.h>)
#define FP_HAVE_URING 1
#endif
#endif
#ifndef FP_HAVE_URING
#define FP_HAVE_URING 0
#endif

/* Sends queued per io_uring_enter(): past ~64 the saving per send no longer grows, while the
 * buffers they occupy (one each) leave the CPU's cache. */
#define FP_RING_DEPTH 64

static int fp_uring_wanted = 1;            /* HOINGHI_URING=0 turns it off (A/B runs) */
static int fp_uring_state;                 /* 0: not tried, 1: up, -errno: refused */
static uint64_t fp_uring_enters, fp_uring_sqes, fp_uring_lost;

/* Called for every completion: user is what the SQE carried, res the send's result. */
typedef void (*fp_done_fn)(void *arg, uint64_t user, int res);

#if FP_HAVE_URING
#include <linux/io_uring.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct {
    int fd;
    unsigned queued; /* SQEs written since the last flush, not yet published */
    unsigned *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *sq_map, *cq_map;
    size_t sq_len, cq_len, sqe_len;
} fp_ring_t;

static fp_ring_t fp_ring = {.fd = -1};

static void fp_ring_close(void)
{
    if (fp_ring.sqes)
        munmap(fp_ring.sqes, fp_ring.sqe_len);
    if (fp_ring.cq_map && fp_ring.cq_map != fp_ring.sq_map)
        munmap(fp_ring.cq_map, fp_ring.cq_len);
    if (fp_ring.sq_map)
        munmap(fp_ring.sq_map, fp_ring.sq_len);
    if (fp_ring.fd >= 0)
        close(fp_ring.fd);
    memset(&fp_ring, 0, sizeof fp_ring);
    fp_ring.fd = -1;
}

/* The child of a fork shares its parent's ring: submitting to it would interleave with the
 * parent's sends. Drop it; the child's first send makes its own. */
static void fp_ring_after_fork(void)
{
    fp_ring_close();
    if (fp_uring_state == 1)
        fp_uring_state = 0;
}

static int fp_ring_supports(int fd)
{
    /* IORING_REGISTER_PROBE (5.6+): room for every opcode up to SENDMSG/SEND. */
    union {
        struct io_uring_probe p;
        char room[sizeof(struct io_uring_probe) + 64 * sizeof(struct io_uring_probe_op)];
    } probe;

    memset(&probe, 0, sizeof probe);
    if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_PROBE, &probe, 64) < 0)
        return 0;
    return probe.p.ops_len > IORING_OP_SEND
           && (probe.p.ops[IORING_OP_SEND].flags & IO_URING_OP_SUPPORTED)
           && (probe.p.ops[IORING_OP_SENDMSG].flags & IO_URING_OP_SUPPORTED);
}

/* One of the ring's shared regions, or NULL. */
static void *fp_ring_map(int fd, size_t len, long long offset)
{
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, offset);

    return m == MAP_FAILED ? NULL : m;
}

static int fp_ring_setup(void)
{
    static int atfork_done;
    struct io_uring_params p;
    unsigned flags[] = {
#if defined(IORING_SETUP_SUBMIT_ALL) && defined(IORING_SETUP_COOP_TASKRUN)
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
#endif
        0,
    };
    int fd = -1;

    for (size_t i = 0; i < sizeof flags / sizeof flags[0] && fd < 0; i++) {
        memset(&p, 0, sizeof p);
        p.flags = flags[i];
        fd = (int)syscall(__NR_io_uring_setup, FP_RING_DEPTH, &p);
        if (fd < 0 && errno != EINVAL)
            return -errno; /* ENOSYS, EPERM (seccomp, io_uring_disabled): not here */
    }
    if (fd < 0)
        return -errno;
    fp_ring.fd = fd;
    if (!fp_ring_supports(fd)) {
        fp_ring_close();
        return -EOPNOTSUPP;
    }
    fp_ring.sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    fp_ring.cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (fp_ring.cq_len > fp_ring.sq_len)
            fp_ring.sq_len = fp_ring.cq_len;
        fp_ring.cq_len = fp_ring.sq_len;
    }
    fp_ring.sqe_len = p.sq_entries * sizeof(struct io_uring_sqe);
    fp_ring.sq_map = fp_ring_map(fd, fp_ring.sq_len, IORING_OFF_SQ_RING);
    fp_ring.cq_map = (p.features & IORING_FEAT_SINGLE_MMAP)
                         ? fp_ring.sq_map
                         : fp_ring_map(fd, fp_ring.cq_len, IORING_OFF_CQ_RING);
    fp_ring.sqes = fp_ring_map(fd, fp_ring.sqe_len, IORING_OFF_SQES);
    if (!fp_ring.sq_map || !fp_ring.cq_map || !fp_ring.sqes) {
        fp_ring_close();
        return -ENOMEM;
    }
    {
        char *sq = fp_ring.sq_map, *cq = fp_ring.cq_map;
        fp_ring.sq_tail = (unsigned *)(sq + p.sq_off.tail);
        fp_ring.sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
        fp_ring.sq_array = (unsigned *)(sq + p.sq_off.array);
        fp_ring.cq_head = (unsigned *)(cq + p.cq_off.head);
        fp_ring.cq_tail = (unsigned *)(cq + p.cq_off.tail);
        fp_ring.cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
        fp_ring.cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    }
    if (!atfork_done && pthread_atfork(NULL, NULL, fp_ring_after_fork) == 0)
        atfork_done = 1;
    return 0;
}

/* Whether sends go through the ring now (made on the first call that wants it). */
static int fp_ring_up(void)
{
    if (!fp_uring_wanted)
        return 0;
    if (fp_uring_state == 0) {
        int rc = fp_ring_setup();
        fp_uring_state = rc == 0 ? 1 : rc < 0 ? rc : -EINVAL; /* refused: never retried */
    }
    return fp_uring_state == 1;
}

/* The next free SQE, zeroed, carrying `user`. The caller queues at most FP_RING_DEPTH between
 * flushes (the SQ has that many entries, the CQ twice as many). */
static struct io_uring_sqe *fp_ring_sqe(uint64_t user)
{
    unsigned idx = (*fp_ring.sq_tail + fp_ring.queued) & *fp_ring.sq_mask;
    struct io_uring_sqe *s = &fp_ring.sqes[idx];

    memset(s, 0, sizeof *s);
    s->user_data = user;
    fp_ring.sq_array[idx] = idx;
    fp_ring.queued++;
    return s;
}

static unsigned fp_ring_queued(void)
{
    return fp_ring.queued;
}

/* Submits what was queued, waits for every completion (MSG_DONTWAIT: they come during the
 * submission itself) and hands each to `done`. Returns 0, or -errno if io_uring_enter()
 * failed: the ring is then given up for good (sends go back to plain syscalls) and the sends
 * not completed are counted in fp_uring_lost, as packets a full buffer would have dropped. */
static int fp_ring_flush(fp_done_fn done, void *arg)
{
    unsigned n = fp_ring.queued, submitted = 0, reaped = 0;

    if (n == 0)
        return 0;
    __atomic_store_n(fp_ring.sq_tail, *fp_ring.sq_tail + n, __ATOMIC_RELEASE);
    fp_ring.queued = 0;
    fp_uring_sqes += n;
    while (reaped < n) {
        unsigned head, tail;
        long r = syscall(__NR_io_uring_enter, fp_ring.fd, n - submitted, n - reaped,
                         IORING_ENTER_GETEVENTS, NULL, 0);
        if (r < 0) {
            int err = errno;
            if (err == EINTR)
                continue;
            fp_uring_lost += n - reaped;
            fp_ring_close();
            fp_uring_state = -err;
            return -err;
        }
        fp_uring_enters++;
        submitted += (unsigned)r;
        head = *fp_ring.cq_head;
        tail = __atomic_load_n(fp_ring.cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++, reaped++) {
            struct io_uring_cqe *cqe = &fp_ring.cqes[head & *fp_ring.cq_mask];
            done(arg, cqe->user_data, cqe->res);
        }
        __atomic_store_n(fp_ring.cq_head, head, __ATOMIC_RELEASE);
    }
    return 0;
}

/* An SQE for one datagram: send() where the socket is connected to its destination, sendmsg()
 * naming it otherwise (msg, and what it points at, must live until the flush). */
static void fp_ring_send(uint64_t user, int fd, const void *buf, unsigned len,
                         const struct msghdr *msg)
{
    struct io_uring_sqe *s = fp_ring_sqe(user);

    s->fd = fd;
    s->msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
    if (msg == NULL) {
        s->opcode = IORING_OP_SEND;
        s->addr = (uint64_t)(uintptr_t)buf;
        s->len = len;
    } else {
        s->opcode = IORING_OP_SENDMSG;
        s->addr = (uint64_t)(uintptr_t)msg;
        s->len = 1;
    }
}
#else  /* no io_uring on this platform: the plain syscalls only */
static int fp_ring_up(void)
{
    if (fp_uring_state == 0)
        fp_uring_state = -ENOSYS;
    return 0;
}
static unsigned fp_ring_queued(void) { return 0; }
static int fp_ring_flush(fp_done_fn done, void *arg)
{
    (void)done;
    (void)arg;
    return -ENOSYS;
}
static void fp_ring_send(uint64_t user, int fd, const void *buf, unsigned len,
                         const struct msghdr *msg)
{
    (void)user, (void)fd, (void)buf, (void)len, (void)msg;
}
#endif

/* Makes the ring now if it is wanted and not made yet; returns whether sends use it. */
static int fp_uring_up(void)
{
    return fp_ring_up();
}

/* Whether this process can have the ring (made now if need be), whatever the switch says. */
static int fp_uring_available(void)
{
    int wanted = fp_uring_wanted, up;

    fp_uring_wanted = 1;
    up = fp_ring_up();
    fp_uring_wanted = wanted;
    return up;
}

/* HOINGHI_URING=0 / set_uring(): off or on (where the kernel allows it). */
static void fp_set_uring(int on)
{
    fp_uring_wanted = on;
}

/* out[0]: state (1 up, 0 not tried yet, -errno refused), out[1]: io_uring_enter() calls,
 * out[2]: sends submitted, out[3]: sends lost to a failed io_uring_enter(). Returns whether
 * the next send would use the ring. */
static int fp_uring_stats(int64_t *out)
{
    out[0] = fp_uring_state;
    out[1] = (int64_t)fp_uring_enters;
    out[2] = (int64_t)fp_uring_sqes;
    out[3] = (int64_t)fp_uring_lost;
    return fp_uring_wanted && fp_uring_state == 1;
}
