// Which received track each subscriber section carries. The server's `mids` (in every offer
// and remap, docs/signaling.md) are the only link between a section and its track, and a
// section may be reused for another track, so every offer and remap is matched in full
// rather than relying on `ontrack` (which fires once per section, not per track it carries).

// remote: Map trackId -> entry (updated in place); emit(type, entry) for "remotetrack" and
// "remotetrack_removed".
export function reconcileRemote(remote, transceivers, mids, emit) {
  const remove = (trackId) => {
    const entry = remote.get(trackId);
    if (!entry) return;
    remote.delete(trackId);
    emit("remotetrack_removed", entry);
  };
  const live = new Set();
  for (const tr of transceivers) {
    const trackId = tr.mid != null ? mids[tr.mid] : undefined;
    const receiving = tr.currentDirection === "recvonly" || tr.currentDirection === "sendrecv";
    if (!trackId || !receiving) continue;
    live.add(trackId);
    const cur = remote.get(trackId);
    if (cur && cur.receiver === tr.receiver) continue;
    if (cur) remove(trackId);
    const slash = trackId.lastIndexOf("/");
    const entry = {
      trackId, mid: tr.mid, kind: tr.receiver.track.kind, track: tr.receiver.track,
      receiver: tr.receiver, participantId: trackId.slice(0, slash),
      source: trackId.slice(slash + 1),
    };
    for (const [id, other] of remote) {
      if (other.receiver === tr.receiver) remove(id); // section reused
    }
    remote.set(trackId, entry);
    emit("remotetrack", entry);
  }
  for (const id of [...remote.keys()]) if (!live.has(id)) remove(id);
}
