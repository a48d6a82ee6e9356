// Bridge view (province / commune, and receive-only secretary / observer): the chair large,
// the floor holder next to it, other bridges as thumbnails, own connection quality and state.

import { $, boot, scheduler } from "./app.js";
import { Tile } from "./media.js";
import { desiredSubscriptions } from "./policy.js";
import { ROLE_LABEL } from "./token.js";

const MAX_THUMBS = 24; // tiles drawn; the rest of a 3,000-bridge room is summarised as a count
const LIMITS = { video: 9, audio: 12 }; // see policy.js

const app = await boot("bridge.html");
if (app) start(app);

function start(app) {
  const conf = app.conference;
  const chairTile = new Tile({ title: "Chủ trì", className: "chair" });
  const speakerTile = new Tile({ title: "Người phát biểu", className: "speaker" });
  chairTile.set({ placeholder: "Chờ chủ trì vào hội nghị…" });
  speakerTile.set({ placeholder: "Chưa có điểm cầu nào được phát biểu" });
  $("#chair-slot").append(chairTile.el);
  $("#speaker-slot").append(speakerTile.el);
  const thumbs = new Map(); // participant id -> Tile
  let shown = { chair: null, speaker: null, thumbnails: [] };

  const limits = {
    video: Number(app.params.get("video")) || LIMITS.video,
    audio: Number(app.params.get("audio")) || LIMITS.audio,
  };
  if (app.subscriptions) {
    // Floor holders, the spotlight and the dominant speaker are seen and heard first.
    app.subscriptions.policy = (c) => desiredSubscriptions({
      tracks: c.tracks.values(), participants: c.participants, selfId: c.self?.id,
      pinned: [...app.floor.holders, app.floor.spotlight, app.floor.dominant].filter(Boolean),
      limits,
    });
  }

  const label = (p) => p.name || p.id;
  const sub = (p) => [ROLE_LABEL[p.role] || p.role, p.province].filter(Boolean).join(" · ");
  const videoOf = (id) => conf.remote.get(`${id}/camera`) || conf.remote.get(`${id}/screen`) || null;
  const mutedOf = (id, source) => conf.tracks.get(`${id}/${source}`)?.muted ?? null;
  const badges = (tile, id) => tile.setBadges({
    micMuted: mutedOf(id, "microphone"), camMuted: mutedOf(id, "camera"),
  });

  function render() {
    const selfId = conf.self?.id;
    const people = [...conf.participants.values()].filter((p) => p.id !== selfId);
    const chair = people.find((p) => p.role === "chair") || null;
    // The floor holder; without one, whoever the server hears speaking.
    const holder = app.floor.holder || app.floor.dominant;
    const speaking = app.floor.holder ? "Đang phát biểu" : "Đang nói";

    if (chair) {
      chairTile.set({ title: label(chair), subtitle: "Chủ trì", placeholder: "Đang chờ hình từ chủ trì…" });
      chairTile.setTrack(videoOf(chair.id));
      badges(chairTile, chair.id);
    } else {
      chairTile.set({ title: "Chủ trì", subtitle: "", placeholder: "Chờ chủ trì vào hội nghị…" });
      chairTile.setTrack(null);
    }
    chairTile.el.dataset.participantId = chair?.id || "";

    // The floor holder (floor control is not in protocol v1 yet: see onFloor below).
    const speaker = holder && holder !== chair?.id ? conf.participants.get(holder) : null;
    if (holder && holder === selfId) {
      speakerTile.set({ title: "Bạn đang phát biểu", subtitle: label(conf.self), placeholder: "" });
      const cam = conf.localTracks.find((t) => t.source === "camera");
      speakerTile.setTrack(cam ? { trackId: "local/camera", track: cam.track } : null);
    } else if (speaker) {
      speakerTile.set({ title: label(speaker), subtitle: `${speaking} · ${sub(speaker)}`,
        placeholder: "Đang chờ hình…" });
      speakerTile.setTrack(videoOf(speaker.id));
      badges(speakerTile, speaker.id);
    } else {
      speakerTile.set({ title: "Người phát biểu", subtitle: "",
        placeholder: "Chưa có điểm cầu nào được phát biểu" });
      speakerTile.setTrack(null);
    }
    speakerTile.el.dataset.participantId = speaker?.id || (holder === selfId ? selfId : "");

    // Thumbnails: those we receive video from first, then the rest in a stable order.
    const others = people.filter((p) => p.id !== chair?.id && p.id !== speaker?.id);
    others.sort((a, b) => (videoOf(b.id) ? 1 : 0) - (videoOf(a.id) ? 1 : 0)
      || String(a.province ?? "").localeCompare(String(b.province ?? ""))
      || label(a).localeCompare(label(b)));
    const visible = others.slice(0, MAX_THUMBS);
    const keep = new Set(visible.map((p) => p.id));
    for (const [id, tile] of thumbs) {
      if (!keep.has(id)) { tile.el.remove(); thumbs.delete(id); }
    }
    const grid = $("#thumbs");
    visible.forEach((p, i) => {
      let tile = thumbs.get(p.id);
      if (!tile) {
        tile = new Tile({ className: "thumb" });
        tile.el.dataset.participantId = p.id;
        thumbs.set(p.id, tile);
      }
      tile.set({ title: label(p), subtitle: sub(p), placeholder: label(p) });
      tile.setTrack(videoOf(p.id));
      badges(tile, p.id);
      if (grid.children[i] !== tile.el) grid.insertBefore(tile.el, grid.children[i] || null);
    });
    // A conference's featured roster lists only some of the room: its count is the server's,
    // less ourselves, the chair and the speaker (when the speaker is us, once: we are out).
    const otherSpeaker = speaker && speaker.id !== selfId ? 1 : 0;
    const total = Math.max(others.length,
      conf.participantCount - 1 - (chair ? 1 : 0) - otherSpeaker);
    $("#others-count").textContent = total > visible.length
      ? `${total} điểm cầu (hiển thị ${visible.length})` : `${total} điểm cầu`;
    shown = { chair: chair?.id || null, speaker: speaker?.id || (holder === selfId ? selfId : null),
      thumbnails: visible.map((p) => p.id) };
  }

  const rerender = scheduler(render);
  for (const type of ["joined", "participant_joined", "participant_left", "track_published",
    "track_unpublished", "track_muted", "presence", "remotetrack", "remotetrack_removed"]) {
    conf.addEventListener(type, rerender);
  }

  // Floor control (docs/floor.md): any change re-plans subscriptions and the layout.
  function onFloor() {
    app.subscriptions?.sync(); // the floor holder's audio and video become priority
    rerender();
    renderOwnFloor();
  }
  app.floor.addEventListener("change", onFloor);

  // This bridge's own speak state, and its hand.
  const hand = $("#hand");
  function renderOwnFloor() {
    const you = app.floor.you;
    const el = $("#floor-state");
    const text = !you ? ""
      : you.muted ? "Chủ trì đã tắt tiếng điểm cầu"
        : you.state === "floor" ? "Đang được phát biểu"
          : you.state === "hand_raised" ? `Đang giơ tay (thứ ${you.hand_position ?? "?"})` : "";
    el.textContent = text;
    el.hidden = !text;
    el.dataset.state = you?.state || "";
    el.dataset.muted = String(!!you?.muted);
    const canHand = app.floor.supported && you && ["idle", "hand_raised"].includes(you.state);
    hand.hidden = !canHand;
    hand.textContent = you?.state === "hand_raised" ? "Hạ tay" : "Giơ tay";
    hand.setAttribute("aria-pressed", String(you?.state === "hand_raised"));
  }
  hand.addEventListener("click", () => {
    const type = app.floor.you?.state === "hand_raised" ? "lower_hand" : "raise_hand";
    conf.request({ type }).catch((err) => console.warn(type, err));
  });

  window.hoinghi.layout = () => ({ ...shown, floorHolder: app.floor.holder });
  render();
  renderOwnFloor();
  conf.start();
}
