/* The per-subscriber half of the SFU fan-out, in C.
 *
 * For one forwarded packet and one group of consumers that share a header-extension layout, each
 * consumer gets: its own 12-byte RTP header, the shared tail (extension block + payload), SRTP
 * protection with its connection's libsrtp context, and one non-blocking sendto() on its
 * connection's UDP socket. Python (sfu/fastpath/__init__.py) fills the entries and owns
 * everything they point at; this file only reads them, and counts errors in them.
 *
 * libsrtp is NOT linked here: pylibsrtp links its own copy statically into its cffi module, and
 * the SRTP contexts aiortc created live in that copy. The caller passes that copy's
 * srtp_protect as a function pointer (libsrtp 2 signature; checked on the Python side).
 *
 * Included verbatim into the module cffi generates (sfu/fastpath/_build.py).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sendmmsg (Python.h, included first, normally defines it already) */
#endif
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/uio.h>

/* UDP GSO (Linux 4.18+): one sendmsg carries a run of equal-sized datagrams (the last may be
 * shorter) that the kernel splits, paying its per-packet route, IP and loopback-delivery work
 * once per run. A video frame's packets to one subscriber are such a run. */
#if defined(__linux__)
#define FP_HAVE_GSO 1
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#else
#define FP_HAVE_GSO 0
#endif

#define FP_BUF_SIZE 2048
/* libsrtp 2 may append up to SRTP_MAX_TRAILER_LEN bytes: a 16-byte tag + a 128-byte MKI. */
#define FP_MAX_TRAILER 144
#define FP_MAX_PACKET (FP_BUF_SIZE - FP_MAX_TRAILER)

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

/* srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr) -- libsrtp 2.x */
typedef int (*fp_protect_fn)(void *ctx, void *buf, int *len);

typedef struct {
    uint64_t ctx;          /* srtp_t of the subscriber's connection (pylibsrtp's libsrtp) */
    int fd;                /* that connection's UDP socket: a dup owned by Python */
    uint32_t ssrc;
    uint32_t ts_off;
    uint16_t seq_off;
    uint8_t pt;
    uint64_t errors;       /* packets not sent: SRTP failure, EAGAIN, any sendto error */
    int last_errno;        /* errno of the last failed sendto; -status for an SRTP failure */
    uint32_t addrlen;      /* 0: no address set, the entry is skipped and counted as an error */
    /* The destination as Python hands it over (filled by a cffi initializer, no call per
     * entry); fp_prepare() turns it into the sockaddr below. */
    char ip[16];           /* 4 bytes (IPv4) or 16 (IPv6), network order */
    uint8_t ip_len;
    uint16_t port;
    uint32_t scope_id;
    uint8_t no_gso;        /* its path refused a GSO send once: plain datagrams from then on */
    uint8_t connected;     /* the socket is connected to this address: sends name none */
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } addr;
} fp_entry;

/* Sets the destination from raw address bytes: 4 (IPv4) or 16 (IPv6). Done in C so the
 * platform's sockaddr layout (sin_len on BSDs, byte order of the family) is never guessed. */
static int fp_set_addr(fp_entry *e, const char *ip, int ip_len, unsigned int port,
                       uint32_t scope_id)
{
    memset(&e->addr, 0, sizeof e->addr);
    e->addrlen = 0;
    if (ip_len == 4) {
        e->addr.v4.sin_family = AF_INET;
        e->addr.v4.sin_port = htons((uint16_t)port);
        memcpy(&e->addr.v4.sin_addr, ip, 4);
        e->addrlen = (uint32_t)sizeof(struct sockaddr_in);
        return 0;
    }
    if (ip_len == 16) {
        e->addr.v6.sin6_family = AF_INET6;
        e->addr.v6.sin6_port = htons((uint16_t)port);
        memcpy(&e->addr.v6.sin6_addr, ip, 16);
        e->addr.v6.sin6_scope_id = scope_id;
        e->addrlen = (uint32_t)sizeof(struct sockaddr_in6);
        return 0;
    }
    return -1;
}

/* Whether the entry's socket is connected to exactly its address (sfu/adapters/
 * direct_ingress.py connects subscribers' sockets to their peer). Then sends name no address
 * and the kernel uses the route it cached at connect(), instead of looking one up per
 * message: ~1.5 us less per datagram on loopback in a VM. Unconnected, or connected to
 * another peer: the address is named, as always (Linux sends a connected UDP socket's
 * datagram wherever msg_name says). */
static int fp_is_peer(const fp_entry *e)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
        struct sockaddr_storage ss;
    } peer;
    socklen_t len = sizeof peer;

    memset(&peer, 0, sizeof peer);
    if (getpeername(e->fd, &peer.sa, &len) != 0 || len != e->addrlen
        || peer.sa.sa_family != e->addr.sa.sa_family)
        return 0;
    if (peer.sa.sa_family == AF_INET)
        return peer.v4.sin_port == e->addr.v4.sin_port
               && memcmp(&peer.v4.sin_addr, &e->addr.v4.sin_addr, 4) == 0;
    return peer.v6.sin6_port == e->addr.v6.sin6_port
           && memcmp(&peer.v6.sin6_addr, &e->addr.v6.sin6_addr, 16) == 0
           && peer.v6.sin6_scope_id == e->addr.v6.sin6_scope_id;
}

/* Builds every entry's sockaddr from ip/ip_len/port/scope_id and notes whether its socket is
 * connected there; returns how many are usable. */
static int fp_prepare(fp_entry *e, int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        e[i].connected = 0;
        if (fp_set_addr(&e[i], e[i].ip, e[i].ip_len, e[i].port, e[i].scope_id) == 0) {
            e[i].connected = (uint8_t)fp_is_peer(&e[i]);
            ok++;
        }
    }
    return ok;
}

/* Writes the consumer's packet into buf: its 12-byte header, the tail, SRTP protection in place.
 * Returns the protected length, or -1 with the failure counted in the entry. b0 is the first
 * header byte as it leaves (version, padding and extension bits), mark is 0 or 0x80. */
static int fp_build(unsigned char *buf, fp_entry *c, unsigned int b0, unsigned int mark,
                    unsigned int seq, uint32_t ts, const char *tail, size_t tail_len,
                    fp_protect_fn protect)
{
    uint16_t s = (uint16_t)(seq + c->seq_off);
    uint32_t t = ts + c->ts_off;
    uint32_t ssrc = c->ssrc;
    int l = (int)(12 + tail_len);
    int rc;

    if (12 + tail_len > FP_MAX_PACKET) {
        c->errors++;
        c->last_errno = EMSGSIZE;
        return -1;
    }
    buf[0] = (unsigned char)b0;
    buf[1] = (unsigned char)((mark & 0x80) | (c->pt & 0x7F));
    buf[2] = (unsigned char)(s >> 8);
    buf[3] = (unsigned char)s;
    buf[4] = (unsigned char)(t >> 24);
    buf[5] = (unsigned char)(t >> 16);
    buf[6] = (unsigned char)(t >> 8);
    buf[7] = (unsigned char)t;
    buf[8] = (unsigned char)(ssrc >> 24);
    buf[9] = (unsigned char)(ssrc >> 16);
    buf[10] = (unsigned char)(ssrc >> 8);
    buf[11] = (unsigned char)ssrc;
    memcpy(buf + 12, tail, tail_len);
    rc = protect((void *)(uintptr_t)c->ctx, buf, &l);
    if (rc != 0) {
        c->errors++;
        c->last_errno = -rc;
        return -1;
    }
    return l;
}

/* One packet of a batch: its tail lies at blob + off (len bytes). Layout fixed (16 bytes, no
 * padding) because Python packs it with struct "=IIBBHI" (sfu/fastpath/__init__.py). */
typedef struct {
    uint32_t off;
    uint32_t len;
    uint8_t b0;
    uint8_t mark;
    uint16_t seq;
    uint32_t ts;
} fp_pkt;
_Static_assert(sizeof(fp_pkt) == 16, "fp_pkt must match struct '=IIBBHI' in Python");

/* The same sends queued on the process's io_uring (fanout_ring.c), where it is up. */
static int fp_send_ring(fp_entry *e, int n, const char *tail, size_t tail_len, unsigned int b0,
                        unsigned int mark, unsigned int seq, uint32_t ts, fp_protect_fn protect);
static int fp_send_batch_ring(fp_entry *e, int n, const fp_pkt *pk, int k, const char *blob,
                              fp_protect_fn protect);

/* Sends one packet to every entry; returns how many were handed to the kernel. */
static int fp_send(fp_entry *e, int n, const char *tail, size_t tail_len, unsigned int b0,
                   unsigned int mark, unsigned int seq, uint32_t ts, uintptr_t protect_addr)
{
    fp_protect_fn protect = (fp_protect_fn)protect_addr;
    /* One scratch buffer on the stack: protect works in place, so the tail is copied again for
     * every consumer; that memcpy is ~1 % of the protect+sendto that follow. */
    union {
        uint64_t align;
        unsigned char b[FP_BUF_SIZE];
    } scratch;
    unsigned char *buf = scratch.b;
    int sent = 0;

    if (fp_ring_up())
        return fp_send_ring(e, n, tail, tail_len, b0, mark, seq, ts, protect);
    for (int i = 0; i < n; i++) {
        fp_entry *c = &e[i];
        int l;
        ssize_t r;

        if (c->addrlen == 0) {
            c->errors++;
            continue;
        }
        l = fp_build(buf, c, b0, mark, seq, ts, tail, tail_len, protect);
        if (l < 0)
            continue;
        /* Never block the event loop: a full socket buffer drops this one packet, as a
         * congested network would; RTP recovers (NACK, next frame). */
        do {
            r = sendto(c->fd, buf, (size_t)l, MSG_DONTWAIT | MSG_NOSIGNAL,
                       c->connected ? NULL : &c->addr.sa,
                       c->connected ? 0 : (socklen_t)c->addrlen);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            c->errors++;
            c->last_errno = errno;
            continue;
        }
        sent++;
    }
    return sent;
}

#ifdef __linux__
static int fp_sendmmsg(int fd, struct mmsghdr *m, int cnt)
{
    return sendmmsg(fd, m, (unsigned int)cnt, MSG_DONTWAIT | MSG_NOSIGNAL);
}
#else
/* No sendmmsg: one sendmsg per packet, same semantics (count sent, or -1 on the first). */
struct mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
static int fp_sendmmsg(int fd, struct mmsghdr *m, int cnt)
{
    int i;
    for (i = 0; i < cnt; i++)
        if (sendmsg(fd, &m[i].msg_hdr, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            return i ? i : -1;
    return cnt;
}
#endif


#define FP_MAX_BATCH 32

static int fp_gso_enabled = FP_HAVE_GSO;
static uint64_t fp_gso_msgs, fp_gso_pkts; /* GSO sends the kernel took, and their datagrams */
static uint64_t fp_gso_refusals;          /* paths that refused one (then sent plain) */

/* Off (0) or on (1, where the platform has it): HOINGHI_GSO=0 turns it off for A/B runs. */
static void fp_set_gso(int on)
{
    fp_gso_enabled = on && FP_HAVE_GSO;
}

/* out[0]: GSO messages sent, out[1]: datagrams they carried, out[2]: paths that refused GSO;
 * returns whether GSO is on. */
static int fp_gso_stats(uint64_t *out)
{
    out[0] = fp_gso_msgs;
    out[1] = fp_gso_pkts;
    out[2] = fp_gso_refusals;
    return fp_gso_enabled;
}

typedef union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
} fp_cmsg;

/* Messages for the protected datagrams iov[from..cnt): with gso, each run of equal-sized ones
 * (a shorter one may end a run) is one message with a UDP_SEGMENT of that size; without, one
 * message per datagram. first[m]: index of message m's first datagram (first[count] = cnt). */
static int fp_messages(const fp_entry *c, struct iovec *iov, int from, int cnt, int gso,
                       struct mmsghdr *msgs, fp_cmsg *ctrl, int *first)
{
    int m = 0;

    for (int j = from; j < cnt; m++) {
        struct msghdr *h = &msgs[m].msg_hdr;
        size_t seg = iov[j].iov_len;
        int run = 1;

        while (gso && j + run < cnt && iov[j + run].iov_len <= seg) {
            run++;
            if (iov[j + run - 1].iov_len < seg)
                break; /* a shorter datagram can only be a run's last */
        }
        memset(&msgs[m], 0, sizeof msgs[m]);
        if (!c->connected) {
            h->msg_name = (void *)&c->addr.sa;
            h->msg_namelen = (socklen_t)c->addrlen;
        }
        h->msg_iov = &iov[j];
        h->msg_iovlen = (size_t)run;
#if FP_HAVE_GSO
        if (run > 1) {
            uint16_t size = (uint16_t)seg;
            struct cmsghdr *cm;

            h->msg_control = ctrl[m].buf;
            h->msg_controllen = sizeof ctrl[m].buf;
            cm = CMSG_FIRSTHDR(h);
            cm->cmsg_level = SOL_UDP;
            cm->cmsg_type = UDP_SEGMENT;
            cm->cmsg_len = CMSG_LEN(sizeof size);
            memcpy(CMSG_DATA(cm), &size, sizeof size);
        }
#else
        (void)ctrl;
#endif
        first[m] = j;
        j += run;
    }
    first[m] = cnt;
    return m;
}

/* A GSO send refused by the path (no checksum offload, an MTU below the segment, an old
 * kernel): the datagrams themselves are fine, sent one by one they go. */
static int fp_gso_refused(int err)
{
    return err == EIO || err == EINVAL || err == EOPNOTSUPP || err == ENOPROTOOPT;
}

/* Sends k packets to every entry: per entry, all k are rewritten and protected first, then
 * handed to the kernel with one sendmmsg() (runs of equal size as GSO messages), so a
 * receiver is woken once per batch, not once per packet. Returns how many packets were
 * handed to the kernel in all. */
static int fp_send_batch(fp_entry *e, int n, const fp_pkt *pk, int k, const char *blob,
                         uintptr_t protect_addr)
{
    fp_protect_fn protect = (fp_protect_fn)protect_addr;
    static unsigned char bufs[FP_MAX_BATCH][FP_BUF_SIZE]; /* one event loop per process */
    struct mmsghdr msgs[FP_MAX_BATCH];
    struct iovec iov[FP_MAX_BATCH];
    fp_cmsg ctrl[FP_MAX_BATCH];
    int first[FP_MAX_BATCH + 1];
    int sent = 0;

    if (k > FP_MAX_BATCH)
        k = FP_MAX_BATCH;
    if (fp_ring_up())
        return fp_send_batch_ring(e, n, pk, k, blob, protect);
    for (int i = 0; i < n; i++) {
        fp_entry *c = &e[i];
        int cnt = 0, off = 0, nmsg, gso;

        if (c->addrlen == 0) {
            c->errors += (uint64_t)k;
            continue;
        }
        for (int j = 0; j < k; j++) {
            const fp_pkt *p = &pk[j];
            int l = fp_build(bufs[cnt], c, p->b0, p->mark, p->seq, p->ts, blob + p->off, p->len,
                             protect);
            if (l < 0)
                continue;
            iov[cnt].iov_base = bufs[cnt];
            iov[cnt].iov_len = (size_t)l;
            cnt++;
        }
        gso = fp_gso_enabled && !c->no_gso;
        nmsg = fp_messages(c, iov, 0, cnt, gso, msgs, ctrl, first);
        while (off < nmsg) {
            int r = fp_sendmmsg(c->fd, msgs + off, nmsg - off);
            if (r <= 0) {
                int err = errno;
                if (r < 0 && err == EINTR)
                    continue;
                if (r < 0 && gso && msgs[off].msg_hdr.msg_iovlen > 1 && fp_gso_refused(err)) {
                    /* Not for this path: the rest again, one message per datagram. */
                    int done = first[off];
                    c->no_gso = 1;
                    fp_gso_refusals++;
                    gso = 0;
                    nmsg = fp_messages(c, iov, done, cnt, 0, msgs, ctrl, first);
                    off = 0;
                    continue;
                }
                /* A full buffer or any other error drops the rest, as in fp_send. */
                c->errors += (uint64_t)(cnt - first[off]);
                c->last_errno = err;
                break;
            }
            for (int m = off; m < off + r; m++) {
                int run = first[m + 1] - first[m];
                sent += run;
                if (run > 1) {
                    fp_gso_msgs++;
                    fp_gso_pkts += (uint64_t)run;
                }
            }
            off += r;
        }
    }
    return sent;
}

static int fp_max_batch(void)
{
    return FP_MAX_BATCH;
}

static int fp_max_packet(void)
{
    return FP_MAX_PACKET;
}
