/* fp_send and fp_send_batch (fanout.c) through the process's io_uring (uring.c): the same
 * packets, built by the same fp_build, each consumer's send (or sendmmsg message) queued as one
 * SQE, FP_RING_DEPTH of them submitted per io_uring_enter() instead of a syscall each.
 *
 * Differences from the plain path, both harmless for RTP: a consumer's messages of one batch
 * are separate sends, so an error drops that message, not the rest of the consumer's batch;
 * and a path that refuses GSO gets that run's datagrams one by one at the completion.
 *
 * Included verbatim after fanout.c into the module cffi generates (sfu/fastpath/_build.py).
 */

/* Packet buffers one flush may hold: a batch (FP_MAX_BATCH) always fits beside others. */
#define FP_RING_BUFS (2 * FP_RING_DEPTH)

static unsigned char fp_rbufs[FP_RING_BUFS][FP_BUF_SIZE];
static struct iovec fp_riov[FP_RING_BUFS];
static struct mmsghdr fp_rmsgs[FP_RING_DEPTH];
static fp_cmsg fp_rctrl[FP_RING_DEPTH];

/* Per queued SQE of a batch: whose it is and which of fp_riov it carries. */
typedef struct {
    int entry;
    int first;
    int run;
} fp_rslot;

static fp_rslot fp_rslots[FP_RING_DEPTH];

typedef struct {
    fp_entry *e;
    int sent;
} fp_rctx;

static void fp_send_done(void *arg, uint64_t user, int res)
{
    fp_rctx *x = arg;

    if (res >= 0) {
        x->sent++;
        return;
    }
    x->e[user].errors++;
    x->e[user].last_errno = -res;
}

/* A message of one datagram, naming the address unless the socket is connected to it. */
static void fp_one_datagram(struct msghdr *h, const fp_entry *c, struct iovec *iov)
{
    memset(h, 0, sizeof *h);
    if (!c->connected) {
        h->msg_name = (void *)&c->addr.sa;
        h->msg_namelen = (socklen_t)c->addrlen;
    }
    h->msg_iov = iov;
    h->msg_iovlen = 1;
}

/* A datagram's SQE: send() on a connected socket, else sendmsg() naming the address through
 * fp_rmsgs[slot] (which lives until the flush). */
static void fp_ring_datagram(uint64_t user, unsigned slot, const fp_entry *c, int buf)
{
    struct msghdr *h = &fp_rmsgs[slot].msg_hdr;

    if (c->connected) {
        fp_ring_send(user, c->fd, fp_riov[buf].iov_base, (unsigned)fp_riov[buf].iov_len, NULL);
        return;
    }
    fp_one_datagram(h, c, &fp_riov[buf]);
    fp_ring_send(user, c->fd, NULL, 0, h);
}

static int fp_send_ring(fp_entry *e, int n, const char *tail, size_t tail_len, unsigned int b0,
                        unsigned int mark, unsigned int seq, uint32_t ts, fp_protect_fn protect)
{
    fp_rctx x = {e, 0};

    for (int i = 0; i < n; i++) {
        fp_entry *c = &e[i];
        unsigned q = fp_ring_queued();
        int l;

        if (c->addrlen == 0) {
            c->errors++;
            continue;
        }
        l = fp_build(fp_rbufs[q], c, b0, mark, seq, ts, tail, tail_len, protect);
        if (l < 0)
            continue;
        fp_riov[q].iov_base = fp_rbufs[q];
        fp_riov[q].iov_len = (size_t)l;
        fp_ring_datagram((uint64_t)i, q, c, (int)q);
        if (q + 1 == FP_RING_DEPTH && fp_ring_flush(fp_send_done, &x) < 0)
            /* The ring is gone (given up in fp_ring_flush): the rest as plain sends. */
            return x.sent + fp_send(e + i + 1, n - i - 1, tail, tail_len, b0, mark, seq, ts,
                                    (uintptr_t)protect);
    }
    fp_ring_flush(fp_send_done, &x);
    return x.sent;
}

static void fp_batch_done(void *arg, uint64_t user, int res)
{
    fp_rctx *x = arg;
    const fp_rslot *s = &fp_rslots[user];
    fp_entry *c = &x->e[s->entry];

    if (res >= 0) {
        x->sent += s->run;
        if (s->run > 1) {
            fp_gso_msgs++;
            fp_gso_pkts += (uint64_t)s->run;
        }
        return;
    }
    if (s->run > 1 && fp_gso_refused(-res)) {
        /* Not for this path: these datagrams one by one, now (their buffers are still ours
         * until the flush returns), and plain datagrams for it from now on. */
        if (!c->no_gso) {
            c->no_gso = 1;
            fp_gso_refusals++;
        }
        for (int j = s->first; j < s->first + s->run; j++) {
            struct msghdr h;
            fp_one_datagram(&h, c, &fp_riov[j]);
            if (sendmsg(c->fd, &h, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
                x->sent++;
            } else {
                c->errors++;
                c->last_errno = errno;
            }
        }
        return;
    }
    c->errors += (uint64_t)s->run;
    c->last_errno = -res;
}

static int fp_send_batch_ring(fp_entry *e, int n, const fp_pkt *pk, int k, const char *blob,
                              fp_protect_fn protect)
{
    fp_rctx x = {e, 0};
    int used = 0; /* of fp_rbufs, since the last flush */
    int first[FP_MAX_BATCH + 1];

    for (int i = 0; i < n; i++) {
        fp_entry *c = &e[i];
        int cnt = 0, nmsg;
        unsigned q;

        if (c->addrlen == 0) {
            c->errors += (uint64_t)k;
            continue;
        }
        if (used + k > FP_RING_BUFS || fp_ring_queued() + (unsigned)k > FP_RING_DEPTH) {
            if (fp_ring_flush(fp_batch_done, &x) < 0)
                return x.sent + fp_send_batch(e + i, n - i, pk, k, blob, (uintptr_t)protect);
            used = 0;
        }
        for (int j = 0; j < k; j++) {
            const fp_pkt *p = &pk[j];
            int l = fp_build(fp_rbufs[used + cnt], c, p->b0, p->mark, p->seq, p->ts,
                             blob + p->off, p->len, protect);
            if (l < 0)
                continue;
            fp_riov[used + cnt].iov_base = fp_rbufs[used + cnt];
            fp_riov[used + cnt].iov_len = (size_t)l;
            cnt++;
        }
        q = fp_ring_queued();
        nmsg = fp_messages(c, fp_riov + used, 0, cnt, fp_gso_enabled && !c->no_gso,
                           fp_rmsgs + q, fp_rctrl + q, first);
        for (int m = 0; m < nmsg; m++) {
            fp_rslot *s = &fp_rslots[q + m];
            s->entry = i;
            s->first = used + first[m];
            s->run = first[m + 1] - first[m];
            if (s->run == 1 && c->connected) /* a plain send: cheaper than a sendmsg */
                fp_ring_datagram(q + m, q + m, c, s->first);
            else
                fp_ring_send(q + m, c->fd, NULL, 0, &fp_rmsgs[q + m].msg_hdr);
        }
        used += cnt;
    }
    fp_ring_flush(fp_batch_done, &x);
    return x.sent;
}
