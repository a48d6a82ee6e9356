// Chair console (chair and operator roles): the roster of every bridge, a focus tile for the
// selected bridge, the floor holder, a wall of thumbnails, and conference controls as the
// server gains them.

import { $, boot, scheduler } from "./app.js";
import { Tile } from "./media.js";
import { desiredSubscriptions } from "./policy.js";
import { Roster, RosterView, compareEntries } from "./roster.js";
import { ROLE_LABEL } from "./token.js";

const LIMITS = { video: 24, audio: 12 }; // the wall; see policy.js

// Conference controls. None is in protocol v1: each names the server feature (advertised in
// `joined.features`, proposed) that enables it and the message it would send, so a control
// lights up without client changes once the server implements the message as proposed.
const CONTROLS = [
  { key: "floor_grant", feature: "floor", label: "Trao quyền phát biểu", target: true,
    message: (id) => ({ type: "floor_grant", participant_id: id }) },
  { key: "floor_revoke", feature: "floor", label: "Thu hồi quyền phát biểu", target: false,
    message: () => ({ type: "floor_revoke" }) },
  { key: "mute_participant", feature: "moderate", label: "Tắt mic điểm cầu", target: true,
    message: (id) => ({ type: "mute_participant", participant_id: id, source: "microphone" }) },
  { key: "mute_all", feature: "moderate", label: "Tắt mic tất cả", target: false,
    message: () => ({ type: "mute_all", source: "microphone" }) },
  { key: "remove_participant", feature: "moderate", label: "Mời rời hội nghị", target: true,
    message: (id) => ({ type: "remove_participant", participant_id: id }) },
  { key: "lock_room", feature: "lock", label: "Khoá phòng", target: false,
    message: () => ({ type: "lock_room", locked: true }) },
  { key: "record_start", feature: "record", label: "Bắt đầu ghi hình", target: false,
    message: () => ({ type: "record_start" }) },
];

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
      floorHolder: app.floorHolder, pinned: selected ? [selected] : [], limits,
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
    renderControls();
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
    const focusId = selected || app.floorHolder || people[0]?.id || null;
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

    const holder = app.floorHolder && conf.participants.get(app.floorHolder);
    speakerTile.set(holder
      ? { title: holder.name || holder.id, subtitle: `Đang phát biểu · ${describe(holder)}`, placeholder: "Đang chờ hình…" }
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
    const { total, online } = view.render(roster.list());
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

  // Proposed server event: {"type": "participant_quality", "participant_id", "bitrate_kbps",
  // "loss", "rtt_ms"}, relayed to moderators from each bridge's `quality` message.
  conf.addEventListener("participant_quality", (ev) => {
    const { participant_id: id, bitrate_kbps, loss, rtt_ms } = ev.detail;
    roster.setReported(id, { bitrate_kbps, loss, rtt_ms });
    rerender();
  });

  // Floor-control hook (see bridge.js): {"type": "floor", "holder": id | null}.
  function onFloor(holder) {
    app.floorHolder = holder || null;
    app.subscriptions?.sync();
    rerender();
  }
  conf.addEventListener("floor", (ev) => onFloor(ev.detail.holder));

  $("#roster-search").addEventListener("input", (ev) => view.setQuery(ev.target.value));
  $("#roster-problems").addEventListener("change", (ev) => view.setProblemsOnly(ev.target.checked));

  function renderControls() {
    const box = $("#control-buttons");
    box.replaceChildren(...CONTROLS.map((c) => {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.dataset.control = c.key;
      btn.textContent = c.label;
      const supported = conf.features.has(c.feature);
      btn.disabled = !supported || (c.target && !selected);
      btn.title = supported ? "" : "Máy chủ chưa hỗ trợ (chưa có trong giao thức v1)";
      btn.addEventListener("click", () => control(c.key));
      return btn;
    }));
    const p = selected && conf.participants.get(selected);
    $("#control-target").textContent = p ? p.name || p.id : "—";
  }

  async function control(key, target = selected) {
    const c = CONTROLS.find((x) => x.key === key);
    if (!c) throw new Error(`unknown control ${key}`);
    return conf.request(c.message(target));
  }
  conf.addEventListener("joined", renderControls);

  Object.assign(window.hoinghi, {
    roster: () => roster.list(),
    select,
    onFloor,
    control,
    controls: () => CONTROLS.map((c) => ({ key: c.key, feature: c.feature,
      enabled: conf.features.has(c.feature) })),
    setExpected: (list) => { roster.setExpected(list); rerender(); },
    layout: () => ({ selected, focus: focusTile.el.dataset.participantId || null,
      floorHolder: app.floorHolder, wall: [...wall.keys()] }),
  });
  renderControls();
  render();
  conf.start();
}
