/* The read half of a connection's socket, in C: what DirectIngress._read does in Python.
 *
 * One call drains up to max_datagrams datagrams from a connection's UDP socket into one
 * buffer: SRTP is unprotected in place, SRTCP too, and a compound RTCP packet that carries
 * nothing but reports and packets the SFU ignores (SR, RR, SDES, BYE, REMB, APP, XR...) is
 * reduced to its senders' clocks and report blocks here, so Python sees a few numbers per
 * report instead of a datagram to unprotect, parse and walk. Everything else (RTP, feedback
 * that needs an answer, anything malformed, STUN and DTLS) comes back as a record pointing
 * into the buffer, in arrival order, for Python to handle as it always has.
 *
 * Why: reports are most of what a connection without media costs (a subscriber's RRs, an
 * idle publisher's SRs: ~2 a second each), each read with cold caches. libsrtp is
 * pylibsrtp's statically linked copy, called through function pointers as in fanout.c.
 *
 * Appended to fanout.c in the module cffi generates (sfu/fastpath/_build.py).
 */
#include <sys/socket.h>

enum {
    FP_REC_RTP = 1,        /* off/len: decrypted RTP */
    FP_REC_RTCP = 2,       /* off/len: decrypted compound RTCP, for Python to parse */
    FP_REC_BLOCK = 3,      /* a: ssrc, b: fraction lost, c: jitter, d: LSR, e: DLSR */
    FP_REC_RAW = 4,        /* off/len: not SRTP; a: family, b: port, c: flowinfo, d: scope
                            * id; the 16 address bytes follow the data at off + len */
    FP_REC_SRTP_ERROR = 5, /* a: libsrtp status (replayed, forged, garbled: dropped) */
    FP_REC_OS_ERROR = 6,   /* a: errno of a failed recvfrom (ICMP unreachable...) */
    FP_REC_SENDER = 7,     /* an SR's sender info: a: ssrc, b/c: NTP high/low, d: RTP time */
};

typedef struct {
    uint32_t kind, off, len, a, b, c, d, e;
} fp_rec;
_Static_assert(sizeof(fp_rec) == 32, "fp_rec is read in Python as 8 native uint32");

#define FP_MAX_DATAGRAM 65536 /* loopback's MTU: nothing is ever truncated */
#define FP_MAX_BLOCKS 64      /* report blocks one compound may bring on the C path */

static uint32_t fp_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* SDES chunks as sfu/core/rtcp.py's _parse_sdes checks them: 0 if it would accept them. */
static int fp_sdes_ok(const unsigned char *d, int pos, int end, int count)
{
    for (int i = 0; i < count; i++) {
        int start = pos;
        if (end - pos < 4)
            return -1;
        pos += 4;
        for (;;) {
            if (pos >= end)
                return -1;
            if (d[pos] == 0) {
                pos++;
                break;
            }
            if (pos + 2 > end || pos + 2 + d[pos + 1] > end)
                return -1;
            pos += 2 + d[pos + 1];
        }
        pos = start + ((pos - start + 3) & ~3);
        if (pos > end)
            pos = end;
    }
    return 0;
}

/* Report blocks at b (count of them) as BLOCK records; -1 when recs cannot take them. */
static int fp_blocks(const unsigned char *b, int count, fp_rec *recs, int n, int max_recs)
{
    if (n + count > max_recs)
        return -1;
    for (int i = 0; i < count; i++, b += 24) {
        fp_rec *r = &recs[n++];
        memset(r, 0, sizeof *r);
        r->kind = FP_REC_BLOCK;
        r->a = fp_u32(b);
        r->b = b[4];
        r->c = fp_u32(b + 12);
        r->d = fp_u32(b + 16);
        r->e = fp_u32(b + 20);
    }
    return n;
}

/* A decrypted compound RTCP packet: when every packet in it is one the SFU only reads
 * reports from or ignores, and well-formed as sfu/core/rtcp.py's parse_rtcp checks it,
 * writes a SENDER record per SR and a BLOCK record per report block and returns how many
 * records; -1 when Python must see it (feedback to answer, anything parse_rtcp would reject
 * or not check). */
static int fp_rtcp_scan(const unsigned char *d, int len, fp_rec *recs, int max_recs)
{
    int pos = 0, n = 0;

    if (len <= 0)
        return -1;
    while (pos < len) {
        int start, end, count, pt;

        if (len - pos < 4 || (d[pos] >> 6) != 2)
            return -1;
        pt = d[pos + 1];
        count = d[pos] & 0x1F;
        start = pos + 4;
        end = start + 4 * (((int)d[pos + 2] << 8) | d[pos + 3]);
        if (end > len)
            return -1;
        pos = end;
        if (d[start - 4] & 0x20) { /* padding: its last octet counts it, itself included */
            int pad = end > start ? d[end - 1] : 0;
            if (pad == 0 || pad > end - start)
                return -1;
            end -= pad;
        }
        switch (pt) {
        case 200: /* SR: the sender's clock (a publisher's lip sync), then its blocks */
            if (end - start < 24 + 24 * count || n + 1 > max_recs)
                return -1;
            memset(&recs[n], 0, sizeof recs[n]);
            recs[n].kind = FP_REC_SENDER;
            recs[n].a = fp_u32(d + start);
            recs[n].b = fp_u32(d + start + 4);
            recs[n].c = fp_u32(d + start + 8);
            recs[n].d = fp_u32(d + start + 12);
            n = fp_blocks(d + start + 24, count, recs, n + 1, max_recs);
            if (n < 0)
                return -1;
            break;
        case 201: /* RR */
            if (end - start < 4 + 24 * count)
                return -1;
            n = fp_blocks(d + start + 4, count, recs, n, max_recs);
            if (n < 0)
                return -1;
            break;
        case 202: /* SDES */
            if (fp_sdes_ok(d, start, end, count) != 0)
                return -1;
            break;
        case 203: /* BYE */
            if (end - start < 4 * count)
                return -1;
            if (start + 4 * count < end && start + 4 * count + 1 + d[start + 4 * count] > end)
                return -1;
            break;
        case 206: /* PSFB: only REMB (application layer feedback) is ignored here */
            if (count != 15 || end - start < 12 || memcmp(d + start + 8, "REMB", 4) != 0)
                return -1;
            if (end - start < 16 || end - start < 16 + 4 * d[start + 12])
                return -1;
            break;
        case 205: /* RTPFB: NACK and the like */
            return -1;
        default: /* APP, XR, ...: parse_rtcp checks nothing in them either */
            break;
        }
    }
    return n;
}

/* Reads up to max_datagrams datagrams from fd into out (out_size bytes) and describes them in
 * recs (at most max_recs); returns the number of records, *datagrams the datagrams read. Stops
 * early, leaving the rest in the socket, when out or recs could not take one more. */
static int fp_read(int fd, uintptr_t ctx, uintptr_t unprotect_addr, uintptr_t unprotect_rtcp_addr,
                   unsigned char *out, size_t out_size, fp_rec *recs, int max_recs,
                   int max_datagrams, int *datagrams)
{
    fp_protect_fn unprotect = (fp_protect_fn)unprotect_addr;
    fp_protect_fn unprotect_rtcp = (fp_protect_fn)unprotect_rtcp_addr;
    size_t pos = 0;
    int n = 0, got = 0;

    while (got < max_datagrams && out_size - pos >= FP_MAX_DATAGRAM + 16
           && n + FP_MAX_BLOCKS + 1 <= max_recs) {
        union {
            struct sockaddr sa;
            struct sockaddr_in v4;
            struct sockaddr_in6 v6;
        } from;
        socklen_t fromlen = sizeof from;
        unsigned char *d = out + pos;
        ssize_t r = recvfrom(fd, d, FP_MAX_DATAGRAM, MSG_DONTWAIT, &from.sa, &fromlen);
        fp_rec *rec = &recs[n];
        int len, rc;

        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                memset(rec, 0, sizeof *rec);
                rec->kind = FP_REC_OS_ERROR;
                rec->a = (uint32_t)errno;
                n++;
            }
            break;
        }
        got++;
        len = (int)r;
        memset(rec, 0, sizeof *rec);
        if (len > 1 && d[0] > 127 && d[0] < 192) { /* SRTP/SRTCP (RFC 7983 demux) */
            int rtcp = d[1] > 191 && d[1] < 224; /* RTCP packet types 192-223 (RFC 5761) */
            rc = (rtcp ? unprotect_rtcp : unprotect)((void *)ctx, d, &len);
            if (rc != 0) {
                rec->kind = FP_REC_SRTP_ERROR;
                rec->a = (uint32_t)rc;
                n++;
                continue;
            }
            if (rtcp) {
                int blocks = fp_rtcp_scan(d, len, recs + n, FP_MAX_BLOCKS);
                if (blocks >= 0) { /* reports only: nothing of it stays in out */
                    n += blocks;
                    continue;
                }
                memset(rec, 0, sizeof *rec); /* the scan may have written over it */
            }
            rec->kind = rtcp ? FP_REC_RTCP : FP_REC_RTP;
        } else {
            rec->kind = FP_REC_RAW;
            rec->a = (uint32_t)from.sa.sa_family;
            memset(d + len, 0, 16);
            if (from.sa.sa_family == AF_INET6) {
                rec->b = ntohs(from.v6.sin6_port);
                rec->c = ntohl(from.v6.sin6_flowinfo);
                rec->d = from.v6.sin6_scope_id;
                memcpy(d + len, &from.v6.sin6_addr, 16);
            } else if (from.sa.sa_family == AF_INET) {
                rec->b = ntohs(from.v4.sin_port);
                memcpy(d + len, &from.v4.sin_addr, 4);
            }
        }
        rec->off = (uint32_t)pos;
        rec->len = (uint32_t)len;
        n++;
        pos += ((size_t)len + 16 + 7) & ~(size_t)7; /* room for an address, 8-byte aligned */
    }
    *datagrams = got;
    return n;
}

static int fp_rec_size(void)
{
    return (int)sizeof(fp_rec);
}
