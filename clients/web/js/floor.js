// Floor control as the client sees it (docs/floor.md): who holds the floor, the hand queue,
// server-side mutes, spotlight, lock, this participant's own speak state, and the dominant
// speaker. Built from `joined.floor` and kept current by the numbered conference events; a gap
// in `seq` means we missed some, so we ask for a fresh `floor_snapshot`.

// Conference-log events (they carry `seq`); participant_joined/left are in the log too, and
// `presence` stands for those of them a featured roster is not sent.
const LOGGED = [
  "presence",
  "participant_joined", "participant_left", "hand_raised", "hand_lowered", "floor_given",
  "floor_taken", "participant_muted", "participant_unmuted", "muted_all", "spotlight_changed",
  "room_locked", "room_unlocked", "participant_readmitted",
];

export class FloorState extends EventTarget {
  constructor(conference) {
    super();
    this.conf = conference;
    this._reset(null);
    conference.addEventListener("joined", (ev) => {
      this._reset(ev.detail.floor || null);
      this._changed();
    });
    conference.addEventListener("floor_snapshot", (ev) => {
      this._reset(ev.detail);
      this._changed();
    });
    for (const type of LOGGED) conference.addEventListener(type, (ev) => this._event(ev.detail));
    conference.addEventListener("floor_state", (ev) => {
      this.you = ev.detail;
      this._changed();
    });
    conference.addEventListener("dominant_speaker", (ev) => {
      this.dominant = ev.detail.participant_id || null;
      this._changed();
    });
  }

  // The participant shown as "speaking": the newest floor holder (with max_speakers > 1 the
  // latest one given the floor is the one the chair just called on).
  get holder() {
    return this.holders.length ? this.holders[this.holders.length - 1] : null;
  }

  handPosition(id) {
    const i = this.hands.findIndex((h) => h.id === id);
    return i < 0 ? null : i + 1;
  }

  _reset(snap) {
    this.supported = !!snap;
    this.seq = snap?.seq ?? 0;
    this.holders = [...(snap?.floor || [])];
    this.hands = [...(snap?.hands || [])];
    this.muted = new Set(snap?.muted || []);
    this.spotlight = snap?.spotlight ?? null;
    this.locked = !!snap?.locked;
    this.chairs = snap?.chairs || [];
    this.you = snap?.you || null;
    this.dominant = this.dominant ?? null;
    this._resyncing = false;
  }

  _event(msg) {
    if (!this.supported || typeof msg.seq !== "number") return;
    if (msg.seq <= this.seq) return; // already in the snapshot we hold
    if (msg.type === "presence") { this.seq = msg.seq; return; } // covers what we were not sent
    if (msg.seq > this.seq + 1) { this._resync(); return; }
    this.seq = msg.seq;
    const id = msg.participant_id;
    switch (msg.type) {
      case "floor_given":
        this.holders = [...this.holders.filter((h) => h !== id), id];
        break;
      case "floor_taken":
        this.holders = this.holders.filter((h) => h !== id);
        break;
      case "hand_raised":
        if (!this.hands.some((h) => h.id === id)) this.hands.push({ id, at: msg.time });
        break;
      case "hand_lowered":
        this.hands = this.hands.filter((h) => h.id !== id);
        break;
      case "participant_muted":
        this.muted.add(id);
        break;
      case "participant_unmuted":
        this.muted.delete(id);
        break;
      case "muted_all": // one event for thousands of bridges: the ids come with a snapshot
        this._resync();
        break;
      case "spotlight_changed":
        this.spotlight = id ?? null;
        break;
      case "room_locked":
      case "room_unlocked":
        this.locked = msg.type === "room_locked";
        break;
      case "participant_left":
        if (this.dominant === id) this.dominant = null;
        break;
      default:
        return; // logged, nothing to change here
    }
    this._changed();
  }

  _resync() {
    if (this._resyncing) return;
    this._resyncing = true;
    // The reply is a `floor_snapshot` message, applied by the listener above.
    this.conf.request({ type: "floor_snapshot" }).catch(() => { this._resyncing = false; });
  }

  _changed() {
    this.dispatchEvent(new CustomEvent("change", { detail: this }));
  }
}
