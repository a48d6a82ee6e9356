// Chair console (chair and operator roles): the roster of every bridge, a focus tile for the
// selected bridge, the floor holder, a wall of thumbnails, and the conference controls.

import { $, boot, scheduler } from "./app.js";
import { ControlPanel, pollRollCall } from "./controls.js";
import { Tile } from "./media.js";
import { desiredSubscriptions } from "./policy.js";
import { Roster, RosterView, compareEntries } from "./roster.js";
import { ROLE_LABEL } from "./token.js";

const LIMITS = { video: 24, audio: 12 }; // the wall; see policy.js

const app = await boot("chair.html", { video: {
  width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 25, max: 30 } } });
if (app) start(app);

function start(app) {
  const conf = app.conference;
  const roster = new Roster();
  const view = new RosterView($("#roster"), { onSelect: (id) => select(id) });
  const focusTile = new Tile({ className: "focus" });
  const speakerTile = new Tile({ title: "Người phát biểu", className: "speaker" });
  focusTile.set({ title: "Chưa chọn điểm cầu", placeholder: "Chọn một điểm cầu trong danh sách" });
  speakerTile.set({ placeholder: "Chưa có điểm cầu nào được phát biểu" });
  $("#focus-slot").append(focusTile.el);
  $("#speaker-slot").append(speakerTile.el);
  const wall = new Map(); // participant id -> Tile
  let selected = null;

  const limits = {
    video: Number(app.params.get("video")) || LIMITS.video,
    audio: Number(app.params.get("audio")) || LIMITS.audio,
  };
  if (app.subscriptions) {
    // The selected bridge is pinned: the chair always gets its audio and video.
    app.subscriptions.policy = (c) => desiredSubscriptions({
      tracks: c.tracks.values(), participants: c.participants, selfId: c.self?.id,
      pinned: [selected, ...app.floor.holders, app.floor.spotlight, app.floor.dominant]
        .filter(Boolean),
      limits,
    });
  }

  const videoOf = (id) => conf.remote.get(`${id}/camera`) || conf.remote.get(`${id}/screen`) || null;
  const describe = (p) => [ROLE_LABEL[p.role] || p.role, p.province].filter(Boolean).join(" · ");
  const badgesFor = (id) => ({
    micMuted: conf.tracks.get(`${id}/microphone`)?.muted ?? null,
    camMuted: conf.tracks.get(`${id}/camera`)?.muted ?? null,
  });

  function select(id) {
    selected = id;
    view.select(id);
    app.subscriptions?.sync();
    rerender();
    controls.render();
  }

  function renderStage() {
    const selfId = conf.self?.id;
    const people = [...conf.participants.values()]
      .filter((p) => p.id !== selfId && videoOf(p.id))
      .map((p) => ({ ...p, name: p.name || p.id }))
      .sort(compareEntries);
    // Until the chair picks a bridge, the big tile follows the floor holder, else the first
    // bridge on the wall: the largest area of the console is never left empty.
    const auto = !selected;
    const focusId = selected || app.floor.holder || people[0]?.id || null;
    const focus = focusId && conf.participants.get(focusId);
    if (focus) {
      focusTile.set({ title: focus.name || focus.id,
        subtitle: describe(focus) + (auto ? " · tự động" : ""), placeholder: "Đang chờ hình…" });
      focusTile.setTrack(videoOf(focus.id));
      focusTile.setBadges(badgesFor(focus.id));
    } else {
      focusTile.set({ title: "Chưa chọn điểm cầu", subtitle: "",
        placeholder: selected ? "Điểm cầu đã rời hội nghị" : "Chọn một điểm cầu trong danh sách" });
      focusTile.setTrack(null);
      focusTile.setBadges({});
    }
    focusTile.el.dataset.participantId = focus ? focus.id : "";

    const holderId = app.floor.holder || app.floor.dominant;
    const holder = holderId && conf.participants.get(holderId);
    const speaking = app.floor.holder ? "Đang phát biểu" : "Đang nói";
    speakerTile.set(holder
      ? { title: holder.name || holder.id, subtitle: `${speaking} · ${describe(holder)}`, placeholder: "Đang chờ hình…" }
      : { title: "Người phát biểu", subtitle: "", placeholder: "Chưa có điểm cầu nào được phát biểu" });
    speakerTile.setTrack(holder ? videoOf(holder.id) : null);
    speakerTile.el.dataset.participantId = holder ? holder.id : "";

    // The wall: every bridge whose video we receive (bounded by the subscription policy).
    const keep = new Set(people.map((p) => p.id));
    for (const [id, tile] of wall) if (!keep.has(id)) { tile.el.remove(); wall.delete(id); }
    const grid = $("#wall");
    people.forEach((p, i) => {
      let tile = wall.get(p.id);
      if (!tile) {
        tile = new Tile({ className: "thumb" });
        tile.el.dataset.participantId = p.id;
        tile.el.addEventListener("click", () => select(p.id));
        wall.set(p.id, tile);
      }
      tile.set({ title: p.name, subtitle: describe(p) });
      tile.setTrack(videoOf(p.id));
      tile.setBadges(badgesFor(p.id));
      if (grid.children[i] !== tile.el) grid.insertBefore(tile.el, grid.children[i] || null);
    });
  }

  function renderRoster() {
    roster.sync(conf, conf.self?.id);
    const { total, online } = view.render(roster.list(app.floor));
    $("#roster-count").textContent = `${online}/${total} điểm cầu trực tuyến`;
  }

  function render() {
    renderRoster();
    renderStage();
  }
  const rerender = scheduler(render);
  for (const type of ["joined", "participant_joined", "participant_left", "track_published",
    "track_unpublished", "track_muted", "remotetrack", "remotetrack_removed"]) {
    conf.addEventListener(type, rerender);
  }

  // Per-bridge quality measured here (what reaches the chair), until bridges report their own.
  app.stats.addEventListener("sample", () => {
    const per = new Map();
    for (const [trackId, t] of app.stats.tracks) {
      const id = trackId.slice(0, trackId.lastIndexOf("/"));
      if (!conf.remote.has(trackId)) continue;
      const q = per.get(id) || { bitrate_kbps: 0, loss: 0, rtt_ms: null };
      q.bitrate_kbps += t.kbps || 0;
      q.loss = Math.max(q.loss, t.loss || 0);
      per.set(id, q);
    }
    for (const e of roster.entries.values()) roster.setMeasured(e.id, per.get(e.id) || null);
    renderRoster();
  });

  // Roll call: invited bridges that are missing, and each bridge's reported quality.
  pollRollCall(conf, (rows) => {
    roster.applyRollCall(rows);
    rerender();
  });

  // Floor control (docs/floor.md): re-plan subscriptions, redraw stage, roster and controls.
  function onFloor() {
    app.subscriptions?.sync();
    rerender();
    controls.render();
  }
  app.floor.addEventListener("change", onFloor);

  $("#roster-search").addEventListener("input", (ev) => view.setQuery(ev.target.value));
  $("#roster-problems").addEventListener("change", (ev) => view.setProblemsOnly(ev.target.checked));

  const controls = new ControlPanel({
    conference: conf, floor: app.floor, buttons: $("#control-buttons"), hands: $("#hands"),
    target: $("#control-target"), getTarget: () => selected,
  });
  for (const type of ["joined", "participant_joined", "participant_left"]) {
    conf.addEventListener(type, () => controls.render());
  }

  Object.assign(window.hoinghi, {
    roster: () => roster.list(app.floor),
    select,
    controls: () => controls.state(),
    control: (key) => controls.run(key),
    setExpected: (list) => { roster.setExpected(list); rerender(); },
    layout: () => ({ selected, focus: focusTile.el.dataset.participantId || null,
      floorHolder: app.floor.holder, wall: [...wall.keys()] }),
  });
  controls.render();
  render();
  conf.start();
}
