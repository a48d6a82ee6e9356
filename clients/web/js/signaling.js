// Protocol client for hoinghi signaling v1 (docs/signaling.md): one websocket, a `publisher`
// peer connection we offer and a `subscriber` one the server offers. It owns reconnection:
// a bridge must come back by itself after a network blip, so every loss of the socket or of
// ICE ends in a full rejoin with the same token (the server replaces the old session).

import { waitIceGathering, preferVideoCodecs } from "./media.js";
import { fetchJson, openSocket } from "./net.js";
import { reconcileRemote } from "./remote.js";
import {
  FATAL_CLOSES, FATAL_ERRORS, PROTOCOL, PUBLISH_REFUSALS, ROSTER_EVENTS, SignalingError,
  trackParticipant,
} from "./protocol.js";

const STABLE_MS = 30000;


// Events (CustomEvent, payload in `detail`): state, joined, participant_joined,
// participant_left, track_published, track_unpublished, track_muted, remotetrack,
// remotetrack_removed, error, reconnect, and any unknown server message type by its name.
export class Conference extends EventTarget {
  constructor({ baseUrl, token, room = null, autoSubscribe = true, backoff = {} }) {
    super();
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.token = token;
    this.room = room;
    this.autoSubscribe = autoSubscribe;
    this.backoff = { initialMs: 500, maxMs: 10000, ...backoff };
    this.state = "idle";
    this.localTracks = []; // [{track, source}]
    this.self = null;
    this.participants = new Map(); // id -> participant
    this.tracks = new Map(); // track id -> track (everyone's, from the server)
    this.remote = new Map(); // track id -> {trackId, mid, kind, track, receiver, ...}
    this.features = new Set();
    this.reconnects = 0;
    this.lastError = null;
    this.everJoined = false;
    this.publishError = null; // set when the server refused our media: receive-only
    this.ws = null;
    this.publisher = null;
    this.subscriber = null;
    this._gen = 0; // bumps on every connection attempt; stale callbacks compare and bail
    this._attempt = 0;
    this._nextId = 1;
    this._pending = new Map();
    this._timers = new Set();
    this._subQueue = Promise.resolve();
  }

  // --- public API -------------------------------------------------------------------------

  start() {
    this._connect();
  }

  async leave() {
    this._gen++;
    this._setState("closed");
    this._clearTimers();
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      try { this.ws.send(JSON.stringify({ type: "leave" })); } catch { /* closing anyway */ }
    }
    this._closeSocket(this.ws);
    this._teardownMedia();
  }

  setLocalTracks(list) {
    this.localTracks = list.filter((t) => t.track);
  }

  // Disabling the track stops real content at once; the `mute` message tells everyone else.
  async setMuted(source, muted) {
    for (const t of this.localTracks) if (t.source === source) t.track.enabled = !muted;
    const id = this.self && `${this.self.id}/${source}`;
    if (id && this.tracks.has(id) && this.state === "connected") {
      await this.request({ type: "mute", track: id, muted });
    }
  }

  isMuted(source) {
    const t = this.localTracks.find((l) => l.source === source);
    return !t || !t.track.enabled;
  }

  request(msg, timeoutMs = 10000) {
    const id = this._nextId++;
    const ws = this.ws;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new SignalingError("timeout", `${msg.type}: no reply in ${timeoutMs} ms`, false));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer, ws });
      if (!this._send({ ...msg, id }, ws)) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(new SignalingError("not_connected", "websocket not open", false));
      }
    });
  }

  // Fire-and-forget message (no reply expected), e.g. periodic reports. False if not sent.
  notify(msg) {
    return this.state !== "closed" && this._send(msg);
  }

  // Feed a server message as if it came off the socket: the hook for tests and for message
  // types the server does not send yet (e.g. floor control).
  handleMessage(msg) {
    this._onMessage(msg, this._gen);
  }

  // Simulates losing the transport without the server's help (tests, diagnostics).
  dropTransport(reason = "test") {
    this._lost(this._gen, reason);
  }

  // --- connection lifecycle ---------------------------------------------------------------

  async _connect() {
    const gen = ++this._gen;
    this._fatalCode = null;
    this._setState(this.everJoined ? "reconnecting" : "connecting");
    try {
      const info = await fetchJson(`${this.baseUrl}/api/info`, 5000);
      if (info.protocol !== PROTOCOL) {
        throw new SignalingError("unsupported_protocol", `server speaks ${info.protocol}`, true);
      }
      const wsUrl = this.baseUrl.replace(/^http/, "ws") + (info.signaling || "/ws");
      const ws = await openSocket(wsUrl, 5000);
      if (gen !== this._gen) { ws.close(); return; }
      this.ws = ws;
      ws.onmessage = (ev) => this._onFrame(ev, gen);
      ws.onclose = (ev) => this._onClose(ev, gen);
      const join = { type: "join", protocol: PROTOCOL, token: this.token,
        auto_subscribe: this.autoSubscribe };
      if (this.room) join.room = this.room;
      const joined = await this.request(join, 10000);
      if (gen !== this._gen) return;
      this._applyJoined(joined);
      this._startKeepalive(gen, joined.keepalive_s || 15);
      if (this.localTracks.length && this.self.grants?.publish) {
        try { await this._publish(gen); } catch (err) {
          // The server refused our media (codec, grant): rejoining would be refused the same
          // way, forever. Stay in the conference receive-only and say so.
          if (!PUBLISH_REFUSALS.has(err.code)) throw err;
          this.publishError = err.code;
          this.publisher?.close();
          this.publisher = null;
          this._emit("error", { code: err.code, message: err.message, fatal: false, publish: true });
        }
      }
      if (gen !== this._gen) return;
      // Back off afresh only once the session has held for a while: a link that drops right
      // after every rejoin must not be retried at the fastest rate forever.
      this._later(() => { this._attempt = 0; }, STABLE_MS);
      this._updateState(gen);
    } catch (err) {
      if (gen !== this._gen) return;
      this.lastError = err.code || String(err.message || err);
      if (err.fatal) { this._fail(err); return; }
      this._lost(gen, this.lastError);
    }
  }

  _applyJoined(joined) {
    this.self = joined.participant;
    this.everJoined = true;
    this.publishError = null;
    this.iceServers = joined.ice_servers || [];
    // Optional server features: an explicit list if the server sends one, else inferred from
    // what `joined` carries (floor control comes with its snapshot).
    this.features = new Set(joined.features || []);
    if (joined.floor) this.features.add("floor");
    if (joined.last_n != null) this.features.add("last_n");
    this.participants = new Map((joined.participants || []).map((p) => [p.id, p]));
    this.participants.set(this.self.id, this.self);
    // "featured" (a conference's bridges): `participants` holds only the chairs, floor,
    // spotlight and those we may be shown; `participantCount` counts the whole room.
    this.roster = joined.roster || "full";
    this._count = joined.participant_count ?? this.participants.size;
    this.tracks = new Map((joined.tracks || []).map((t) => [t.id, t]));
    this._emit("joined", joined);
  }

  // Transport lost (socket closed, ICE failed, keepalive silent, a request failed): tear down
  // and schedule a rejoin. Idempotent per generation, so several symptoms of one loss count once.
  _lost(gen, reason) {
    if (gen !== this._gen || ["closed", "failed", "replaced"].includes(this.state)) return;
    this._gen++;
    this.lastError = reason;
    this._clearTimers();
    this._closeSocket(this.ws);
    this._teardownMedia();
    this._setState(this.everJoined ? "reconnecting" : "connecting");
    // Exponential, with jitter: after a server restart thousands of bridges must not rejoin
    // in one burst.
    const ceiling = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** this._attempt);
    const delay = Math.round(ceiling * (0.5 + Math.random() * 0.5));
    this._attempt++;
    this.reconnects++;
    this._emit("reconnect", { reason, delayMs: delay, attempt: this._attempt });
    this._later(() => this._connect(), delay);
  }

  _fail(err) {
    this._gen++;
    this.lastError = err.code;
    this._clearTimers();
    this._closeSocket(this.ws);
    this._teardownMedia();
    this._setState(err.code === "replaced" ? "replaced" : "failed");
    this._emit("error", { code: err.code, message: err.message, fatal: true });
  }

  _onClose(ev, gen) {
    if (gen !== this._gen) return;
    this._rejectPending(`socket closed (${ev.code})`);
    const code = this._fatalCode || (FATAL_CLOSES.has(ev.code) ? `close_${ev.code}` : null);
    this._fatalCode = null;
    if (code) this._fail(new SignalingError(code === "close_4009" ? "replaced" : code,
      ev.reason || code, true));
    else this._lost(gen, `socket closed (${ev.code})`);
  }

  _rejectPending(why) {
    for (const [id, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(new SignalingError("closed", why, false));
      this._pending.delete(id);
    }
  }

  _closeSocket(ws) {
    this._rejectPending("socket closed");
    if (!ws) return;
    ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(1000); } catch { /* already closed */ }
    if (this.ws === ws) this.ws = null;
  }

  _teardownMedia() {
    for (const pc of [this.publisher, this.subscriber]) if (pc) pc.close();
    this.publisher = this.subscriber = null;
    this._subQueue = Promise.resolve();
    this._reconcileRemote([], {}); // nothing is received any more
  }

  _startKeepalive(gen, keepaliveS) {
    this._lastRx = Date.now();
    const period = keepaliveS * 1000;
    this._every(() => {
      if (gen !== this._gen) return;
      // The server closes a socket silent for 3 periods; a half-open socket never fires
      // onclose, so we watch the reverse direction ourselves.
      if (Date.now() - this._lastRx > 2.5 * period) { this._lost(gen, "keepalive"); return; }
      this.request({ type: "ping" }, period).catch(() => {});
    }, period);
  }

  // --- messages ---------------------------------------------------------------------------

  _send(msg, ws = this.ws) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  _onFrame(ev, gen) {
    if (gen !== this._gen) return;
    this._lastRx = Date.now();
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg && typeof msg === "object") this._onMessage(msg, gen);
  }

  _onMessage(msg, gen) {
    if (msg.re !== undefined && this._pending.has(msg.re)) {
      const p = this._pending.get(msg.re);
      this._pending.delete(msg.re);
      clearTimeout(p.timer);
      if (msg.type === "error") p.reject(new SignalingError(msg.code, msg.message));
      else p.resolve(msg);
    }
    switch (msg.type) {
      case "offer":
      case "remap": // sections carrying other tracks, no SDP change (a floor turn)
        if (msg.pc === "subscriber") this._queueSubscriberOffer(msg, gen);
        return;
      case "error":
        if (FATAL_ERRORS.has(msg.code)) this._fatalCode = msg.code;
        this._emit("error", { code: msg.code, message: msg.message, fatal: false });
        return;
      case "pong": case "answer": case "joined": case "ok": case "left":
        return; // replies, handled through their request
      default:
        if (ROSTER_EVENTS.has(msg.type)) this._applyRosterEvent(msg);
        else this._emit(msg.type, msg);
    }
  }

  // Everyone in the room, this session included (a featured roster lists only some).
  get participantCount() {
    return this.roster === "featured" ? this._count : this.participants.size;
  }

  _applyRosterEvent(msg) {
    switch (msg.type) {
      case "participant_joined":
        this.participants.set(msg.participant.id, msg.participant);
        break;
      case "presence": // joins and leaves of participants a featured roster does not list
        this._count = msg.participant_count;
        break;
      case "participant_left":
        // `replaced`: the same identity rejoined. Its participant_joined follows and its
        // tracks stay published under the same ids (no track_published), so keep it all: no
        // roster flicker, no unsubscribe/resubscribe of a reconnecting chair's media.
        if (msg.reason === "replaced") break;
        this.participants.delete(msg.participant_id);
        // The server announces the tracks going away first; a missing track_unpublished
        // must still not leave ghosts.
        for (const id of [...this.tracks.keys()]) {
          if (trackParticipant(id) === msg.participant_id) this.tracks.delete(id);
        }
        break;
      case "track_published":
        this.tracks.set(msg.track.id, msg.track);
        break;
      case "track_unpublished":
        this.tracks.delete(msg.track_id);
        break;
      case "track_muted": {
        const t = this.tracks.get(msg.track_id);
        if (t) this.tracks.set(msg.track_id, { ...t, muted: msg.muted });
        break;
      }
    }
    this._emit(msg.type, msg);
  }

  // --- publisher ----------------------------------------------------------------------------

  _rtcConfig() {
    return { iceServers: this.iceServers || [], bundlePolicy: "max-bundle",
      rtcpMuxPolicy: "require" };
  }

  async _publish(gen) {
    const pc = new RTCPeerConnection(this._rtcConfig());
    this.publisher = pc;
    const stream = new MediaStream(this.localTracks.map((t) => t.track));
    const sent = this.localTracks.map(({ track, source }) => {
      const tr = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
      if (track.kind === "video") preferVideoCodecs(tr);
      return { tr, source };
    });
    pc.onconnectionstatechange = () => this._onPcState(gen, "publisher", pc);
    // The offer carries every candidate gathered within the wait (host candidates take
    // milliseconds); slower ones (TURN relays) are trickled once the server has the offer.
    let late = null;
    pc.onicecandidate = (ev) => {
      if (!late) return; // still before the offer went out: it is in the SDP
      const candidate = ev.candidate ? ev.candidate.toJSON() : null;
      if (Array.isArray(late)) late.push(candidate);
      else this._send({ type: "trickle", pc: "publisher", candidate });
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitIceGathering(pc, 3000);
    if (pc.iceGatheringState !== "complete") late = [];
    const reply = await this.request({
      type: "publish", sdp: pc.localDescription.sdp,
      tracks: sent.map(({ tr, source }) => ({ mid: tr.mid, source })),
    }, 15000);
    if (gen !== this._gen) return;
    for (const t of reply.tracks || []) this.tracks.set(t.id, t);
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    if (late) for (const candidate of late.splice(0)) this._send({ type: "trickle", pc: "publisher", candidate });
    if (late) late = true; // from now on, send as they come
    // A publisher reconnecting keeps its track ids; re-assert mute state so others agree.
    for (const { source, track } of this.localTracks) {
      const id = `${this.self.id}/${source}`;
      const t = this.tracks.get(id);
      if (t && t.muted !== !track.enabled) {
        this.request({ type: "mute", track: id, muted: !track.enabled }).catch(() => {});
      }
    }
    this._watchIce(gen, pc, "publisher");
  }

  // --- subscriber ---------------------------------------------------------------------------

  _queueSubscriberOffer(msg, gen) {
    // The server sends one offer at a time, but a view's own work may still be running on
    // the previous one: serialize so descriptions are never applied concurrently.
    this._subQueue = this._subQueue
      .then(() => this._answerSubscriber(msg, gen))
      .catch((err) => { if (gen === this._gen) this._lost(gen, `subscriber: ${err.message}`); });
  }

  async _answerSubscriber(msg, gen) {
    if (gen !== this._gen) return;
    if (msg.type === "remap") {
      if (this.subscriber) this._reconcileRemote(this.subscriber.getTransceivers(), msg.mids || {});
      return;
    }
    let pc = this.subscriber;
    if (!pc) {
      pc = new RTCPeerConnection(this._rtcConfig());
      this.subscriber = pc;
      pc.onconnectionstatechange = () => this._onPcState(gen, "subscriber", pc);
      this._watchIce(gen, pc, "subscriber");
    }
    await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await waitIceGathering(pc, 3000);
    if (gen !== this._gen) return;
    this._send({ type: "answer", pc: "subscriber", sdp: pc.localDescription.sdp });
    this._reconcileRemote(pc.getTransceivers(), msg.mids || {});
  }

  // The mids map (an offer's or a remap's) is the only link between a media section and
  // the track it carries; remote.js matches it against the connection's sections.
  _reconcileRemote(transceivers, mids) {
    reconcileRemote(this.remote, transceivers, mids, (type, entry) => this._emit(type, entry));
  }

  // --- ICE health ---------------------------------------------------------------------------

  // Never connecting at all (e.g. a firewall eats UDP) counts as failed.
  _watchIce(gen, pc, name) {
    this._later(() => {
      if (gen === this._gen && pc.connectionState !== "connected") this._lost(gen, `${name}: ICE timeout`);
    }, 15000);
  }

  // `failed` is final; `disconnected` often heals by itself, so it gets a few seconds.
  _onPcState(gen, name, pc) {
    if (gen !== this._gen) return;
    const s = pc.connectionState;
    if (s === "failed") this._lost(gen, `${name}: ICE failed`);
    else if (s === "disconnected") {
      this._later(() => {
        if (gen === this._gen && pc.connectionState === "disconnected") this._lost(gen, `${name}: ICE disconnected`);
      }, 4000);
    }
    this._updateState(gen);
  }

  // "connected" means media can flow, not merely that the socket is up.
  _updateState(gen) {
    if (gen !== this._gen || !this.self) return;
    const pub = this.publisher;
    const mustPublish = this.localTracks.length && this.self.grants?.publish && !this.publishError;
    if (!mustPublish || (pub && pub.connectionState === "connected")) this._setState("connected");
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state, reconnects: this.reconnects, error: this.lastError });
  }

  // --- small helpers ------------------------------------------------------------------------

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _later(fn, ms) {
    const t = setTimeout(() => { this._timers.delete(t); fn(); }, ms);
    this._timers.add(t);
  }

  _every(fn, ms) {
    this._timers.add(setInterval(fn, ms));
  }

  _clearTimers() {
    for (const t of this._timers) { clearTimeout(t); clearInterval(t); }
    this._timers.clear();
  }
}
