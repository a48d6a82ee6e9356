// What a page receives. With auto_subscribe every bridge would receive every other bridge:
// at 3,355 bridge points that is thousands of streams per browser. So pages join with
// auto_subscribe=false and ask for a bounded set: the chair, the floor holder, pinned
// participants, and a few thumbnails. The policy is a pure function; SubscriptionManager
// reconciles it with the server through subscribe/unsubscribe.

import { trackParticipant } from "./protocol.js";

const BRIDGE_ROLES = { province: 0, commune: 1 };

// Order thumbnails: provinces before communes, then by province code and name, so every
// page shows the same stable set rather than whoever joined first.
function thumbnailOrder(participants) {
  return (a, b) => {
    const pa = participants.get(trackParticipant(a.id)) || {};
    const pb = participants.get(trackParticipant(b.id)) || {};
    const ra = BRIDGE_ROLES[pa.role] ?? 2;
    const rb = BRIDGE_ROLES[pb.role] ?? 2;
    return ra - rb
      || String(pa.province ?? "").localeCompare(String(pb.province ?? ""))
      || String(pa.name ?? pa.id).localeCompare(String(pb.name ?? pb.id));
  };
}

/**
 * @param tracks        iterable of protocol <track> objects (everyone's)
 * @param participants  Map id -> <participant>
 * @param selfId        our own id (never subscribed)
 * @param floorHolder   participant id holding the floor, or null
 * @param pinned        iterable of participant ids whose tracks are always wanted
 * @param limits        {video: thumbnails besides the priority ones,
 *                       audio: hear everyone while the room has at most this many mics}
 * @returns Set of track ids
 */
export function desiredSubscriptions({ tracks, participants, selfId, floorHolder = null,
  pinned = [], limits = { video: 9, audio: 12 } }) {
  const priority = new Set(pinned);
  if (floorHolder) priority.add(floorHolder);
  for (const p of participants.values()) if (p.role === "chair") priority.add(p.id);
  priority.delete(selfId);

  const want = new Set();
  const thumbs = [];
  const mics = [];
  for (const t of tracks) {
    const owner = trackParticipant(t.id);
    if (owner === selfId) continue;
    if (priority.has(owner) || t.source === "screen") want.add(t.id);
    else if (t.kind === "video") thumbs.push(t);
    else mics.push(t);
  }
  thumbs.sort(thumbnailOrder(participants));
  for (const t of thumbs.slice(0, limits.video)) want.add(t.id);
  // A small meeting without floor control is a normal call: everyone hears everyone. A
  // large one is only audible through the chair and the floor holder.
  if (mics.length <= limits.audio) for (const t of mics) want.add(t.id);
  return want;
}

export class SubscriptionManager {
  constructor(conference, policy) {
    this.conf = conference;
    this.policy = policy; // (conference) => Set<trackId>
    this.subscribed = new Set(); // what the server confirmed for this session
    // Ids the server called unknown_track although we had seen them published (a race with
    // their unpublishing): not asked again until published again.
    this.refused = new Set();
    this._running = false;
    this._again = false;
    const rerun = () => this.sync();
    conference.addEventListener("joined", () => {
      this.subscribed = new Set();
      this.refused = new Set();
      rerun();
    });
    for (const type of ["participant_joined", "participant_left"]) {
      conference.addEventListener(type, rerun);
    }
    conference.addEventListener("track_published", (ev) => {
      this.refused.delete(ev.detail.track.id);
      rerun();
    });
    conference.addEventListener("track_unpublished", (ev) => {
      this.subscribed.delete(ev.detail.track_id);
      rerun();
    });
  }

  // Call when an input of the policy changes (floor, pins). Coalesces bursts of events (a
  // rejoin announces every track at once) into as few requests as possible.
  sync() {
    if (this._running) { this._again = true; return; }
    this._run();
  }

  async _run() {
    this._running = true;
    const conf = this.conf;
    const session = conf.ws;
    try {
      do {
        this._again = false;
        if (!conf.self || !conf.ws) return;
        const want = new Set([...this.policy(conf)]
          .filter((id) => conf.tracks.has(id) && !this.refused.has(id)));
        const drop = [...this.subscribed].filter((id) => !want.has(id));
        const add = [...want].filter((id) => !this.subscribed.has(id));
        if (drop.length) await this._apply("unsubscribe", drop);
        if (add.length) await this._apply("subscribe", add);
      } while (this._again && conf.ws === session);
    } catch (err) {
      // A closed socket: the rejoin re-runs us. Anything else: the session is broken.
      if (err.code !== "closed" && err.code !== "not_connected") {
        conf.dropTransport(`${err.code || err.message} on subscribe`);
      }
    } finally {
      this._running = false;
      // Events that arrived meanwhile (possibly for a new session after a rejoin).
      if (this._again) queueMicrotask(() => this.sync());
    }
  }

  // One request for the batch. unknown_track fails the whole batch and changes nothing, so
  // one stale id must not hold back the others: then retry them one by one.
  async _apply(type, ids) {
    const done = (id) => (type === "subscribe" ? this.subscribed.add(id) : this.subscribed.delete(id));
    try {
      await this.conf.request({ type, tracks: ids });
      ids.forEach(done);
      return;
    } catch (err) {
      if (err.code !== "unknown_track") throw err;
    }
    const unknown = (id) => { // gone on the server: nothing to receive, or to stop receiving
      this.subscribed.delete(id);
      if (type === "subscribe") this.refused.add(id);
    };
    if (ids.length === 1) { unknown(ids[0]); return; }
    for (const id of ids) {
      try {
        await this.conf.request({ type, tracks: [id] });
        done(id);
      } catch (err) {
        if (err.code !== "unknown_track") throw err;
        unknown(id);
      }
    }
  }
}
