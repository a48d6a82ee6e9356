// Media helpers: local capture, codec choice, statistics, and the DOM pieces that show media.
// Standard WebRTC and DOM APIs only.

// Bridge cameras: 360p is plenty for a thumbnail wall and keeps a province node's uplink sane
// (the chair may send more; see chair.js).
export const BRIDGE_VIDEO = { width: { ideal: 640 }, height: { ideal: 360 },
  frameRate: { ideal: 25, max: 30 } };

// Returns [{track, source}] and an error text when something could not be captured. A bridge
// without a camera must still join with its microphone (and vice versa), so each kind is
// retried alone before giving up.
export async function getLocalMedia({ audio = true, video = BRIDGE_VIDEO } = {}) {
  const wrap = (stream) => stream.getTracks().map((track) => ({
    track, source: track.kind === "audio" ? "microphone" : "camera",
  }));
  try {
    return { tracks: wrap(await navigator.mediaDevices.getUserMedia({ audio, video })), error: null };
  } catch (err) {
    const tracks = [];
    const errors = [err.name];
    for (const c of [{ audio }, { video }]) {
      if (!Object.values(c)[0]) continue;
      try { tracks.push(...wrap(await navigator.mediaDevices.getUserMedia(c))); } catch (e) {
        errors.push(e.name);
      }
    }
    return { tracks, error: errors.join(", ") };
  }
}

// The SFU forwards packets without transcoding and supports VP8 and H264 only (no VP9/AV1),
// so offer exactly those; RTX stays for retransmissions. FEC/RED would only cost bandwidth.
export function preferVideoCodecs(transceiver) {
  const rank = (c) => {
    const mime = c.mimeType.toLowerCase();
    if (mime === "video/vp8") return 0;
    if (mime === "video/h264") return (c.sdpFmtpLine || "").includes("packetization-mode=1") ? 1 : 2;
    if (mime === "video/rtx") return 3;
    return -1;
  };
  for (const source of [RTCRtpSender, RTCRtpReceiver]) {
    const caps = source.getCapabilities && source.getCapabilities("video");
    if (!caps) continue;
    const codecs = caps.codecs.filter((c) => rank(c) >= 0).sort((a, b) => rank(a) - rank(b));
    try { transceiver.setCodecPreferences(codecs); return; } catch { /* try the other list */ }
  }
}

export function waitIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    const t = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

export function gradeQuality({ loss, rtt_ms: rtt }) {
  if (loss == null && rtt == null) return "unknown";
  if ((loss ?? 0) < 0.02 && (rtt ?? 0) < 150) return "good";
  if ((loss ?? 0) < 0.08 && (rtt ?? 0) < 400) return "fair";
  return "poor";
}

function byType(report, type) {
  const out = [];
  report.forEach((s) => { if (s.type === type) out.push(s); });
  return out;
}

function selectedPairRtt(report) {
  let pairId = null;
  report.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
  const pair = pairId ? report.get(pairId)
    : byType(report, "candidate-pair").find((p) => p.nominated && p.state === "succeeded");
  return pair && pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null;
}

// Samples getStats() once a period. `tracks` holds per remote track id counters; framesDecoded
// there is cumulative across receivers, because after a rejoin the same track id arrives on a
// new receiver whose counter restarts at zero, and "frames keep coming" must stay monotonic.
export class StatsSampler extends EventTarget {
  constructor(conference, periodMs = 1000) {
    super();
    this.conf = conference;
    this.periodMs = periodMs;
    this.tracks = new Map(); // trackId -> counters
    this.summary = { up_kbps: 0, down_kbps: 0, loss: null, rtt_ms: null, grade: "unknown" };
    this._prevPub = null;
    this._timer = null;
  }

  start() {
    const tick = async () => {
      try { await this.sample(); } catch (err) { console.warn("stats", err); }
      this._timer = setTimeout(tick, this.periodMs);
    };
    tick();
  }

  stop() { clearTimeout(this._timer); }

  framesDecoded() {
    const out = {};
    for (const [id, t] of this.tracks) if (t.kind === "video") out[id] = t.framesDecoded;
    return out;
  }

  async sample() {
    const now = performance.now();
    let downKbps = 0;
    let lost = 0;
    let received = 0;
    for (const e of [...this.conf.remote.values()]) {
      const inbound = byType(await e.receiver.getStats(), "inbound-rtp")[0];
      if (!inbound) continue;
      let t = this.tracks.get(e.trackId);
      if (!t) {
        t = { kind: e.kind, base: 0, framesDecoded: 0 };
        this.tracks.set(e.trackId, t);
      }
      if (t.receiver !== e.receiver) {
        t.base = t.framesDecoded; // the previous receiver's frames stay counted
        t.receiver = e.receiver;
        t.prev = null;
      }
      const dt = t.prev ? (now - t.prev.at) / 1000 : 0;
      const dBytes = t.prev ? inbound.bytesReceived - t.prev.bytes : 0;
      const dLost = t.prev ? Math.max(0, (inbound.packetsLost || 0) - t.prev.lost) : 0;
      const dRecv = t.prev ? inbound.packetsReceived - t.prev.recv : 0;
      Object.assign(t, {
        framesDecoded: t.base + (inbound.framesDecoded || 0),
        fps: inbound.framesPerSecond || 0,
        width: inbound.frameWidth || 0,
        height: inbound.frameHeight || 0,
        audioLevel: inbound.audioLevel ?? null,
        jitter_ms: inbound.jitter != null ? Math.round(inbound.jitter * 1000) : null,
        kbps: dt > 0 ? Math.round((dBytes * 8) / dt / 1000) : 0,
        loss: dLost + dRecv > 0 ? dLost / (dLost + dRecv) : 0,
        prev: { at: now, bytes: inbound.bytesReceived, lost: inbound.packetsLost || 0,
          recv: inbound.packetsReceived },
      });
      downKbps += t.kbps;
      lost += dLost;
      received += dRecv;
    }
    const up = await this._samplePublisher(now);
    const sub = this.conf.subscriber ? selectedPairRtt(await this.conf.subscriber.getStats()) : null;
    const downLoss = lost + received > 0 ? lost / (lost + received) : null;
    const loss = up.loss == null ? downLoss : Math.max(up.loss, downLoss ?? 0);
    this.summary = { up_kbps: up.kbps, down_kbps: downKbps, loss, rtt_ms: up.rtt ?? sub };
    this.summary.rtt_ms = this.summary.rtt_ms == null ? null : Math.round(this.summary.rtt_ms);
    this.summary.grade = gradeQuality(this.summary);
    this.dispatchEvent(new CustomEvent("sample", { detail: this.summary }));
  }

  async _samplePublisher(now) {
    const pc = this.conf.publisher;
    if (!pc) { this._prevPub = null; return { kbps: 0, loss: null, rtt: null }; }
    const report = await pc.getStats();
    const bytes = byType(report, "outbound-rtp").reduce((n, s) => n + (s.bytesSent || 0), 0);
    const prev = this._prevPub && this._prevPub.pc === pc ? this._prevPub : null;
    this._prevPub = { pc, at: now, bytes };
    const kbps = prev ? Math.round(((bytes - prev.bytes) * 8) / ((now - prev.at) / 1000) / 1000) : 0;
    // The server's receiver reports say what it lost of our uplink.
    const remote = byType(report, "remote-inbound-rtp");
    const loss = remote.length ? Math.max(...remote.map((r) => r.fractionLost || 0)) : null;
    // RTT from RTCP receiver reports (one per report, ~1 s) rather than the ICE pair's
    // currentRoundTripTime, which keeps one STUN check's value for seconds: a single slow
    // check at start-up would show as a bad link long after it was over.
    const rrRtt = remote.map((r) => r.roundTripTime).filter((x) => x != null);
    const rtt = rrRtt.length ? (1000 * rrRtt.reduce((a, b) => a + b, 0)) / rrRtt.length
      : selectedPairRtt(report);
    return { kbps: Math.max(0, kbps), loss, rtt };
  }
}

export function formatQuality(q) {
  if (!q) return "—";
  const loss = q.loss == null ? "—" : `${(q.loss * 100).toFixed(1)}%`;
  const rtt = q.rtt_ms == null ? "—" : `${Math.round(q.rtt_ms)} ms`;
  const rate = q.bitrate_kbps ?? (q.up_kbps != null ? `${q.up_kbps}↑ ${q.down_kbps}↓` : "—");
  return `${rate} kbps · mất ${loss} · RTT ${rtt}`;
}

// A video tile: <video> plus a caption and badges. Video elements stay muted so autoplay
// always works; sound goes through AudioSink.
export class Tile {
  constructor({ title = "", subtitle = "", className = "" } = {}) {
    this.el = document.createElement("figure");
    this.el.className = `tile ${className}`.trim();
    this.video = document.createElement("video");
    Object.assign(this.video, { autoplay: true, muted: true, playsInline: true });
    this.placeholder = document.createElement("div");
    this.placeholder.className = "placeholder";
    this.caption = document.createElement("figcaption");
    this.titleEl = document.createElement("span");
    this.titleEl.className = "title";
    this.subEl = document.createElement("span");
    this.subEl.className = "sub";
    this.badges = document.createElement("span");
    this.badges.className = "badges";
    this.caption.append(this.titleEl, this.subEl, this.badges);
    this.el.append(this.video, this.placeholder, this.caption);
    this.trackId = null;
    this.set({ title, subtitle });
    this.setTrack(null);
  }

  set({ title, subtitle, placeholder }) {
    if (title !== undefined) this.titleEl.textContent = title;
    if (subtitle !== undefined) this.subEl.textContent = subtitle;
    if (placeholder !== undefined) this.placeholder.textContent = placeholder;
  }

  setTrack(entry) {
    const track = entry ? entry.track : null;
    this.trackId = entry ? entry.trackId : null;
    this.el.dataset.trackId = this.trackId || "";
    if (track) {
      if (!this.video.srcObject || this.video.srcObject.getVideoTracks()[0] !== track) {
        this.video.srcObject = new MediaStream([track]);
        this.video.play().catch(() => {});
      }
    } else {
      this.video.srcObject = null;
    }
    this.el.classList.toggle("no-video", !track);
  }

  setBadges({ micMuted = null, camMuted = null, grade = null } = {}) {
    const parts = [];
    if (micMuted) parts.push("<span class='badge off'>Mic tắt</span>");
    if (camMuted) parts.push("<span class='badge off'>Cam tắt</span>");
    if (grade && grade !== "unknown") parts.push(`<span class='q q-${grade}' title='Chất lượng: ${grade}'></span>`);
    this.badges.innerHTML = parts.join("");
  }
}

// Plays remote audio tracks. If the browser refuses autoplay (no capture permission and no
// user gesture, e.g. an observer), shows a button: one click unlocks every element.
export class AudioSink {
  constructor(container, unlockButton) {
    this.container = container;
    this.button = unlockButton;
    this.elements = new Map();
    if (this.button) {
      this.button.hidden = true;
      this.button.addEventListener("click", () => {
        for (const el of this.elements.values()) el.play().catch(() => {});
        this.button.hidden = true;
      });
    }
  }

  add(entry) {
    this.remove(entry.trackId);
    const el = document.createElement("audio");
    el.autoplay = true;
    el.dataset.trackId = entry.trackId;
    el.srcObject = new MediaStream([entry.track]);
    this.container.append(el);
    this.elements.set(entry.trackId, el);
    el.play().catch(() => { if (this.button) this.button.hidden = false; });
  }

  remove(trackId) {
    const el = this.elements.get(trackId);
    if (!el) return;
    el.srcObject = null;
    el.remove();
    this.elements.delete(trackId);
  }
}
