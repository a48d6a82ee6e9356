// The chair's roster: every bridge, grouped by province, searchable. Built for thousands of
// rows: rows are keyed DOM nodes updated in place (only those whose content changed), renders
// are batched, and search hides rows instead of rebuilding them.

import { formatQuality, gradeQuality } from "./media.js";
import { ROLE_LABEL } from "./token.js";

const NO_PROVINCE = "—";
const ROLE_ORDER = { province: 0, commune: 1 };

// Vietnamese search without diacritics: "ha noi" finds "Hà Nội", "dak lak" finds "Đắk Lắk".
export function fold(text) {
  return String(text ?? "").normalize("NFD").replace(/[\u0300-\u036f]/g, "")
    .replace(/đ/g, "d").replace(/Đ/g, "D").toLowerCase();
}

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export class Roster extends EventTarget {
  constructor() {
    super();
    this.entries = new Map(); // participant id -> entry
    this.expected = new Map(); // id -> participant, from an (optional) list of invited bridges
  }

  // Rebuilds from the conference's view of the room; keeps quality we already have.
  sync(conf, selfId) {
    const seen = new Set();
    for (const p of conf.participants.values()) {
      if (p.id === selfId) continue;
      seen.add(p.id);
      const old = this.entries.get(p.id);
      const tracks = {};
      for (const source of ["microphone", "camera", "screen"]) {
        const t = conf.tracks.get(`${p.id}/${source}`);
        if (t) tracks[source] = { muted: !!t.muted };
      }
      this.entries.set(p.id, {
        id: p.id, name: p.name || p.id, role: p.role, province: p.province ?? null,
        present: true, tracks,
        reported: old?.reported ?? null, measured: old?.measured ?? null,
      });
    }
    for (const [id, e] of this.entries) {
      if (seen.has(id)) continue;
      // Gone from the room: invited bridges stay listed as not connected, others disappear.
      if (this.expected.has(id)) Object.assign(e, { present: false, tracks: {}, measured: null });
      else this.entries.delete(id);
    }
    for (const [id, p] of this.expected) {
      if (!this.entries.has(id)) {
        this.entries.set(id, { id, name: p.name || id, role: p.role || "commune",
          province: p.province ?? null, present: false, tracks: {}, reported: null, measured: null });
      }
    }
  }

  // Invited bridges: with them the roster shows who is missing, not only who is there.
  setExpected(list) {
    this.expected = new Map(list.map((p) => [p.id, p]));
  }

  // A roll call (docs/floor.md): the invited list, and each bridge's quality as the bridge
  // reports it (`client`) or, failing that, as the server measures it (`server`).
  applyRollCall(rows) {
    this.setExpected(rows.filter((r) => r.invited));
    for (const r of rows) {
      const e = this.entries.get(r.id);
      if (e) e.reported = pickQuality(r.quality);
    }
  }

  // Quality as measured by the chair on what it receives from that bridge (downlink from the
  // SFU, so an upper bound on the bridge's own uplink quality). Used until reports exist.
  setMeasured(id, q) {
    const e = this.entries.get(id);
    if (e) e.measured = q;
  }

  list(floor = null) {
    return [...this.entries.values()].map((e) => {
      const q = e.reported || e.measured;
      return {
        floor: !!floor?.holders.includes(e.id), hand: floor?.handPosition(e.id) ?? null,
        serverMuted: !!floor?.muted.has(e.id),
        id: e.id, name: e.name, role: e.role, province: e.province,
        connected: e.present, status: status(e),
        audio: e.tracks.microphone ? { published: true, muted: e.tracks.microphone.muted }
          : { published: false, muted: null },
        video: e.tracks.camera ? { published: true, muted: e.tracks.camera.muted }
          : { published: false, muted: null },
        quality: q ? { ...q, grade: gradeQuality(q),
          source: e.reported ? e.reported.source : "measured" } : null,
      };
    });
  }
}

function pickQuality(q) {
  if (!q) return null;
  const source = q.client ? "client" : q.server ? "server" : "client";
  const v = q.client || q.server || q;
  if (v.rtt_ms == null && v.loss == null && v.bitrate_kbps == null) return null;
  return { bitrate_kbps: v.bitrate_kbps ?? null, loss: v.loss ?? null, rtt_ms: v.rtt_ms ?? null,
    source };
}

function status(e) {
  if (!e.present) return "offline";
  return e.tracks.microphone || e.tracks.camera ? "online" : "joining";
}

function floorBadges(e) {
  return (e.floor ? "<b class='fl floor'>Phát biểu</b>" : "")
    + (e.hand ? `<b class='fl hand'>Giơ tay ${e.hand}</b>` : "")
    + (e.serverMuted ? "<b class='fl muted'>Bị tắt tiếng</b>" : "");
}

const STATUS_LABEL = { online: "Trực tuyến", joining: "Đang vào", offline: "Chưa kết nối" };
// Above this many bridges, province groups start collapsed: 34 open groups of ~100 rows are
// a wall to scroll; the chair opens a province, searches, or filters to problems.
const COLLAPSE_ABOVE = 150;
const COLLATOR = new Intl.Collator("vi", { numeric: true }); // "Xã số 9" before "Xã số 10"

export function compareEntries(a, b) {
  return (ROLE_ORDER[a.role] ?? 2) - (ROLE_ORDER[b.role] ?? 2) || COLLATOR.compare(a.name, b.name);
}

// What the chair must look at: not there, not sending yet, or a bad link.
export function hasProblem(e) {
  return e.status !== "online" || e.quality?.grade === "poor";
}

export class RosterView {
  constructor(container, { onSelect } = {}) {
    this.container = container;
    this.onSelect = onSelect;
    this.groups = new Map(); // province -> {el, list, summary}
    this.rows = new Map(); // id -> {el, sig}
    this.query = "";
    this.problemsOnly = false;
    this.selected = null;
    this.openByDefault = true;
    container.addEventListener("click", (ev) => {
      const row = ev.target.closest("[data-participant-id]");
      if (row && this.onSelect) this.onSelect(row.dataset.participantId);
    });
  }

  setQuery(text) {
    this.query = fold(text.trim());
    this._applyFilter();
  }

  setProblemsOnly(on) {
    this.problemsOnly = on;
    this._applyFilter();
  }

  select(id) {
    if (this.selected) this.rows.get(this.selected)?.el.classList.remove("selected");
    this.selected = id;
    this.rows.get(id)?.el.classList.add("selected");
  }

  render(entries) {
    const byProvince = new Map();
    for (const e of entries) {
      const key = e.province ?? NO_PROVINCE;
      if (!byProvince.has(key)) byProvince.set(key, []);
      byProvince.get(key).push(e);
    }
    const keys = [...byProvince.keys()].sort((a, b) =>
      (a === NO_PROVINCE) - (b === NO_PROVINCE) || COLLATOR.compare(a, b));
    this.openByDefault = entries.length <= COLLAPSE_ABOVE;

    const live = new Set(entries.map((e) => e.id));
    for (const [id, row] of this.rows) {
      if (!live.has(id)) { row.el.remove(); this.rows.delete(id); }
    }
    for (const [key, g] of this.groups) {
      if (!byProvince.has(key)) { g.el.remove(); this.groups.delete(key); }
    }

    keys.forEach((key, gi) => {
      const group = this._group(key);
      if (this.container.children[gi] !== group.el) {
        this.container.insertBefore(group.el, this.container.children[gi] || null);
      }
      const members = byProvince.get(key).sort(compareEntries);
      members.forEach((e, i) => {
        const row = this._row(e);
        if (group.list.children[i] !== row.el) group.list.insertBefore(row.el, group.list.children[i] || null);
      });
      const online = members.filter((e) => e.connected).length;
      const problems = members.filter(hasProblem).length;
      group.count.textContent = `${online}/${members.length}${problems ? ` · ${problems} sự cố` : ""}`;
      group.el.dataset.problems = String(problems);
      group.el.dataset.online = String(online);
      group.el.dataset.total = String(members.length);
    });
    this._applyFilter();
    const online = entries.filter((e) => e.connected).length;
    return { total: entries.length, online };
  }

  _group(key) {
    let g = this.groups.get(key);
    if (g) return g;
    const el = document.createElement("details");
    el.className = "group";
    el.open = this.openByDefault;
    el.dataset.province = key;
    const summary = document.createElement("summary");
    const name = document.createElement("span");
    name.className = "province";
    name.textContent = key === NO_PROVINCE ? "Trung ương / khác" : `Tỉnh ${key}`;
    const count = document.createElement("span");
    count.className = "count";
    summary.append(name, count);
    const list = document.createElement("ul");
    el.append(summary, list);
    g = { el, list, count, key };
    this.groups.set(key, g);
    return g;
  }

  _row(e) {
    let row = this.rows.get(e.id);
    if (!row) {
      const el = document.createElement("li");
      el.className = "row";
      el.dataset.participantId = e.id;
      el.tabIndex = 0;
      row = { el, sig: "" };
      this.rows.set(e.id, row);
      if (e.id === this.selected) el.classList.add("selected");
    }
    const q = e.quality;
    const sig = JSON.stringify([e.name, e.role, e.province, e.status, e.audio, e.video,
      e.floor, e.hand, e.serverMuted, q && [q.grade, q.bitrate_kbps, q.loss, q.rtt_ms]]);
    if (sig !== row.sig) { // most updates touch a few rows; leave the others alone
      row.sig = sig;
      const el = row.el;
      el.dataset.status = e.status;
      el.dataset.problem = String(hasProblem(e));
      el.dataset.connected = String(e.connected);
      el.dataset.search = fold(`${e.name} ${e.id} ${e.province ?? ""} ${ROLE_LABEL[e.role] ?? ""}`);
      const av = (t, on, off) => !t.published ? `<span class="av none">${off}</span>`
        : `<span class="av ${t.muted ? "muted" : "on"}">${on}${t.muted ? " tắt" : ""}</span>`;
      // Names and province codes are user data: escaped, never raw HTML.
      const role = `${ROLE_LABEL[e.role] ?? e.role}${e.province ? ` · ${e.province}` : ""}`;
      el.innerHTML = `<span class="dot" title="${STATUS_LABEL[e.status]}"></span>`
        + `<span class="name">${esc(e.name)}</span>`
        + `<span class="role">${esc(role)}</span>`
        + `<span class="media">${av(e.audio, "Mic", "—")} ${av(e.video, "Cam", "—")}</span>`
        + `<span class="qual" data-grade="${q ? q.grade : "unknown"}">${esc(q ? formatQuality(q) : "")}</span>`
        + `<span class="state">${floorBadges(e)}${STATUS_LABEL[e.status]}</span>`;
    }
    return row;
  }

  _applyFilter() {
    const q = this.query;
    for (const g of this.groups.values()) {
      let any = false;
      const groupMatch = !q || fold(g.key).includes(q);
      for (const li of g.list.children) {
        const match = (groupMatch || li.dataset.search.includes(q))
          && (!this.problemsOnly || li.dataset.problem === "true");
        li.hidden = !match;
        any ||= match;
      }
      g.el.hidden = !any;
      if ((q || this.problemsOnly) && any) g.el.open = true;
    }
  }
}
