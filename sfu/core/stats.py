"""RFC 3550 receive statistics for one incoming stream: sequence tracking (A.1), interarrival
jitter (A.8) and the reception report block the SFU sends back to the publisher (§6.4.1)."""

from __future__ import annotations

from sfu.core.rtcp import ReportBlock, ntp_middle

__all__ = ["ReceiveStats"]

_SEQ_MOD = 0x10000
_MAX_DROPOUT = 3000  # A.1: a jump forward up to this is loss, not a restart
_MAX_MISORDER = 100  # A.1: a jump back up to this is reordering, not a restart
_LOST_MAX = 0x7FFFFF
_LOST_MIN = -0x800000


class ReceiveStats:
    """Counters for one SSRC; `add` per packet, `report_block` per RTCP interval."""

    __slots__ = (
        "_bad_seq",
        "_base_seq",
        "_clock_rate",
        "_cycles",
        "_expected_prior",
        "_jitter",
        "_last_arrival",
        "_last_ts",
        "_max_seq",
        "_received",
        "_received_prior",
    )

    def __init__(self, clock_rate: int) -> None:
        self._clock_rate = clock_rate
        self._max_seq = -1  # -1: no packet yet
        self._base_seq = 0
        self._cycles = 0  # count of seq wraps, times 2**16
        self._bad_seq = _SEQ_MOD + 1
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._jitter = 0.0  # in timestamp units, unscaled
        self._last_ts = 0
        self._last_arrival = 0.0

    def add(self, seq: int, ts: int, arrival_s: float) -> None:
        """Account one received packet (seq 16-bit, ts 32-bit, arrival in seconds)."""
        max_seq = self._max_seq
        if max_seq < 0:
            self._restart(seq, ts, arrival_s)
            return
        udelta = (seq - max_seq) & 0xFFFF
        if udelta == 0:
            self._received += 1  # duplicate: counted, as A.1 does (lost may go negative)
            return
        if udelta < _MAX_DROPOUT:
            if seq < max_seq:
                self._cycles += _SEQ_MOD
            self._max_seq = seq
            self._received += 1
            # Jitter only from in-order packets of a new frame, as libwebrtc does: a frame's
            # packets leave in one burst with one timestamp, and late/retransmitted packets
            # would measure the NACK round trip, not the network's jitter.
            if ts != self._last_ts:
                rate = self._clock_rate
                # Differences, not absolute transit: immune to 32-bit ts wrap and float size.
                dts = ((ts - self._last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                d = (arrival_s - self._last_arrival) * rate - dts
                self._jitter += (abs(d) - self._jitter) / 16.0
                self._last_ts = ts
                self._last_arrival = arrival_s
            return
        if udelta <= _SEQ_MOD - _MAX_MISORDER:
            # A very large jump: believe it only when the next packet follows it.
            if seq == self._bad_seq:
                self._restart(seq, ts, arrival_s)
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
            return
        self._received += 1  # late (reordered) packet

    def _restart(self, seq: int, ts: int, arrival_s: float) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = _SEQ_MOD + 1
        self._cycles = 0
        self._received = 1
        self._received_prior = 0
        self._expected_prior = 0
        self._last_ts = ts
        self._last_arrival = arrival_s

    @property
    def packets(self) -> int:
        return self._received

    @property
    def expected(self) -> int:
        if self._max_seq < 0:
            return 0
        return self._cycles + self._max_seq - self._base_seq + 1

    @property
    def extended_highest_seq(self) -> int:
        return (self._cycles + max(self._max_seq, 0)) & 0xFFFFFFFF

    @property
    def lost(self) -> int:
        """Cumulative loss; duplicates can make RFC 3550's count negative, shown here as 0."""
        return max(0, self.expected - self._received)

    @property
    def loss_fraction(self) -> float:
        """Cumulative fraction lost, 0.0 to 1.0."""
        expected = self.expected
        return self.lost / expected if expected > 0 else 0.0

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units, as carried in a report block."""
        return int(self._jitter)

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000.0 / self._clock_rate

    def report_block(
        self,
        ssrc: int,
        now_s: float,
        last_sr_ntp: int | None,
        last_sr_arrival_s: float | None,
    ) -> ReportBlock:
        """The report block for `ssrc` now; starts a new interval for `fraction_lost`."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        if last_sr_ntp is None or last_sr_arrival_s is None:
            lsr = dlsr = 0
        else:
            lsr = ntp_middle(last_sr_ntp)
            dlsr = min(0xFFFFFFFF, max(0, int((now_s - last_sr_arrival_s) * 65536)))
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            packets_lost=max(_LOST_MIN, min(expected - self._received, _LOST_MAX)),
            highest_seq=self.extended_highest_seq,
            jitter=min(int(self._jitter), 0xFFFFFFFF),
            lsr=lsr,
            dlsr=dlsr,
        )
