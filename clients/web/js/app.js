// What the bridge view and the chair console share: token -> view check, the Conference,
// local capture and mute buttons, the connection state pill, own connection quality, and the
// `window.hoinghi` hook that tests (and field engineers in devtools) read numbers from.

import { Conference } from "./signaling.js";
import {
  AudioSink, BRIDGE_VIDEO, StatsSampler, Tile, formatQuality, getLocalMedia,
} from "./media.js";
import { FloorState } from "./floor.js";
import { SubscriptionManager } from "./policy.js";
import { ROLE_LABEL, decodeToken, forgetToken, isExpired, takeToken, viewFor } from "./token.js";

const STATE_LABEL = {
  idle: "Chưa kết nối", connecting: "Đang kết nối…", connected: "Đã kết nối",
  reconnecting: "Mất kết nối – đang kết nối lại…", failed: "Không kết nối được",
  replaced: "Phiên này đã được mở ở nơi khác", closed: "Đã rời hội nghị",
};
const FATAL_TEXT = {
  replaced: "Điểm cầu này vừa được mở ở máy hoặc thẻ khác nên trang này đã dừng. "
    + "Tải lại trang nếu muốn dùng lại máy này.",
  token_expired: "Mã truy cập đã hết hạn: xin mã mới từ ban tổ chức.",
  token_invalid: "Mã truy cập không hợp lệ: xin mã mới từ ban tổ chức.",
  wrong_room: "Mã truy cập không dành cho hội nghị này.",
};
const NO_PUBLISH_ROLES = new Set(["secretary", "operator", "observer"]);
const QUALITY_REPORT_MS = 5000;

export const $ = (sel, root = document) => root.querySelector(sel);

export function showNotice(text, kind = "info") {
  const el = $("#notice");
  if (!el) return;
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = !text;
}

// Returns null when the page navigates away (no token, or the token is for another view).
export async function boot(view, { video = BRIDGE_VIDEO } = {}) {
  const token = takeToken();
  if (!token) { location.replace(`index.html${location.search}`); return null; }
  let claims;
  try { claims = decodeToken(token); } catch (err) {
    forgetToken();
    location.replace(`index.html?error=${encodeURIComponent(err.message)}`);
    return null;
  }
  if (viewFor(claims) !== view) { location.replace(viewFor(claims) + location.search); return null; }

  const params = new URLSearchParams(location.search);
  // Managed subscriptions by default (see policy.js); ?subscribe=all uses the server's
  // auto_subscribe, which is fine for small rooms and useful to debug the server.
  const autoSubscribe = params.get("subscribe") === "all";
  const conference = new Conference({
    baseUrl: params.get("server") || location.origin, token, autoSubscribe,
  });
  const app = { view, claims, params, conference, pinned: new Set(), qualityReports: true };
  app.floor = new FloorState(conference);
  app.subscriptions = autoSubscribe ? null : new SubscriptionManager(conference, () => new Set());
  app.stats = new StatsSampler(conference, 1000);
  app.audio = new AudioSink($("#audio"), $("#unlock-audio"));

  $("#self-name").textContent = claims.name || claims.sub;
  $("#self-meta").textContent = [ROLE_LABEL[claims.role], claims.province].filter(Boolean).join(" · ");
  document.title = `${claims.name || claims.sub} – Hội nghị trực tuyến`;
  if (isExpired(claims)) showNotice("Mã truy cập đã hết hạn: xin mã mới từ ban tổ chức.", "error");

  bindState(app);
  bindAudio(app);
  bindQuality(app);
  installHook(app);

  // Capture before joining so the first publish carries media; a page without camera or
  // microphone still joins and receives.
  const canPublish = !NO_PUBLISH_ROLES.has(claims.role) && claims.grants?.publish !== false;
  app.selfTile = new Tile({ title: "Hình của bạn", className: "self" });
  $("#self-slot")?.append(app.selfTile.el);
  if (canPublish && params.get("media") === "pattern") {
    // Verifiable synthetic media for end-to-end checks (see testmedia.js).
    const { patternMedia } = await import("./testmedia.js");
    conference.setLocalTracks(patternMedia());
    const cam = conference.localTracks.find((t) => t.source === "camera");
    app.selfTile.setTrack({ trackId: "local/camera", track: cam.track });
  } else if (canPublish) {
    const { tracks, error } = await getLocalMedia({ video });
    if (error) showNotice(`Không mở được thiết bị (${error}). Vẫn tham gia để nghe, xem.`, "warn");
    conference.setLocalTracks(tracks);
    const cam = tracks.find((t) => t.source === "camera");
    if (cam) app.selfTile.setTrack({ trackId: "local/camera", track: cam.track });
  }
  app.selfTile.set({ placeholder: canPublish ? "Không có camera" : "Chỉ nghe, xem" });
  bindMuteButtons(app, canPublish);

  // Closing the tab: say goodbye so the roster drops us at once, with reason "left".
  window.addEventListener("pagehide", () => conference.leave());
  $("#leave")?.addEventListener("click", () => {
    conference.leave();
    forgetToken();
    location.replace("index.html");
  });
  return app;
}

function bindState(app) {
  const pill = $("#state");
  const show = () => {
    const s = app.conference.state;
    pill.dataset.state = s;
    pill.textContent = STATE_LABEL[s] || s;
    document.body.dataset.state = s;
  };
  app.conference.addEventListener("state", show);
  app.conference.addEventListener("error", (ev) => {
    const { code, fatal, publish } = ev.detail;
    if (fatal) {
      showNotice(FATAL_TEXT[code] || `Lỗi kết nối (${code}): liên hệ bộ phận kỹ thuật.`, "error");
      // This page will not rejoin by itself: free the camera and microphone (their lights
      // are on, and another page on this machine may need them).
      for (const { track } of app.conference.localTracks) track.stop();
      app.selfTile?.setTrack(null);
      app.refreshMute?.();
    }
    else if (publish) showNotice(`Máy chủ không nhận hình, tiếng của điểm cầu (${code}). Vẫn nghe, xem được.`, "warn");
    else console.warn("signaling error", ev.detail);
  });
  app.conference.addEventListener("reconnect", (ev) => {
    console.info("reconnecting", ev.detail);
  });
  app.conference.addEventListener("joined", () => showNotice(""));
  show();
}

function bindAudio(app) {
  app.conference.addEventListener("remotetrack", (ev) => {
    if (ev.detail.kind === "audio") app.audio.add(ev.detail);
  });
  app.conference.addEventListener("remotetrack_removed", (ev) => app.audio.remove(ev.detail.trackId));
}

function bindQuality(app) {
  const el = $("#quality");
  app.stats.addEventListener("sample", (ev) => {
    const q = ev.detail;
    el.textContent = formatQuality(q);
    el.dataset.grade = q.grade;
    reportQuality(app, q);
  });
  app.stats.start();
}

// `quality` (docs/floor.md): the bridge's own view of its link, shown in the chair's roll
// call next to what the server measures. A server that does not know the message answers
// unknown_type once, and we stop.
function reportQuality(app, q) {
  const conf = app.conference;
  const now = Date.now();
  if (!app.qualityReports || conf.state !== "connected" || q.rtt_ms == null) return;
  if (now - (app.lastQualityAt || 0) < QUALITY_REPORT_MS) return;
  app.lastQualityAt = now;
  const jitters = [...app.stats.tracks.values()].map((t) => t.jitter_ms).filter((j) => j != null);
  const report = { type: "quality", bitrate_kbps: q.up_kbps + q.down_kbps,
    loss: Math.min(1, q.loss ?? 0), rtt_ms: q.rtt_ms };
  if (jitters.length) report.jitter_ms = Math.max(...jitters);
  conf.request(report).catch((err) => {
    if (err.code === "unknown_type" || err.code === "bad_message") app.qualityReports = false;
  });
}

function bindMuteButtons(app, canPublish) {
  const buttons = { microphone: $("#mic"), camera: $("#cam") };
  const labels = { microphone: ["Tắt mic", "Bật mic"], camera: ["Tắt camera", "Bật camera"] };
  const refresh = () => {
    for (const [source, btn] of Object.entries(buttons)) {
      if (!btn) continue;
      const has = app.conference.localTracks.some((t) => t.source === source);
      const muted = app.conference.isMuted(source);
      btn.disabled = !has;
      btn.setAttribute("aria-pressed", String(muted));
      btn.textContent = has ? labels[source][muted ? 1 : 0] : `${labels[source][1]} (không có)`;
    }
    const micMuted = app.conference.isMuted("microphone");
    const ind = $("#mute-indicator");
    if (ind) {
      ind.hidden = !canPublish;
      ind.dataset.muted = String(micMuted);
      ind.textContent = micMuted ? "Micro đang TẮT" : "Micro đang BẬT";
    }
    app.selfTile.setBadges({ micMuted, camMuted: app.conference.isMuted("camera") });
  };
  for (const [source, btn] of Object.entries(buttons)) {
    btn?.addEventListener("click", async () => {
      // The track is (un)muted at once; the UI must not wait for the server's `ok`.
      const done = app.conference.setMuted(source, !app.conference.isMuted(source));
      refresh();
      try { await done; } catch (err) { console.warn("mute not announced", err); }
    });
  }
  app.refreshMute = refresh;
  refresh();
}

// Tests read numbers here instead of scraping the DOM. Keep it small and stable.
function installHook(app) {
  const conf = app.conference;
  const states = [conf.state];
  conf.addEventListener("state", (ev) => states.push(ev.detail.state));
  window.hoinghi = {
    view: app.view,
    get state() { return conf.state; },
    get self() { return conf.self; },
    get reconnects() { return conf.reconnects; },
    get lastError() { return conf.lastError; },
    states, // every state the page went through, in order
    framesDecoded: () => app.stats.framesDecoded(),
    quality: () => ({ ...app.stats.summary }),
    floor: () => ({ supported: app.floor.supported, holder: app.floor.holder,
      holders: [...app.floor.holders], hands: app.floor.hands.map((h) => h.id),
      muted: [...app.floor.muted], locked: app.floor.locked, spotlight: app.floor.spotlight,
      dominant: app.floor.dominant, you: app.floor.you }),
    muted: () => ({ microphone: conf.isMuted("microphone"), camera: conf.isMuted("camera") }),
    remoteTracks: () => [...conf.remote.keys()],
    participants: () => [...conf.participants.values()],
    presence: () => ({ roster: conf.roster, count: conf.participantCount, seq: app.floor.seq }),
    roster: () => [], // the chair console fills this in
    layout: () => ({}), // each view fills this in
    conference: conf,
    debug: {
      // The test closes the real socket: the server sees a disconnect, the page must rejoin.
      closeSocket: () => conf.ws && conf.ws.close(),
      failIce: () => conf.dropTransport("ICE failed (simulated)"),
      inject: (msg) => conf.handleMessage(msg),
    },
  };
}

// Coalesces bursts of events (a rejoin replays the whole roster) into one render. A timer,
// not requestAnimationFrame: rAF stops in hidden tabs, and the chair's roster must stay
// current on a wall screen that is not the focused window.
export function scheduler(fn, delayMs = 50) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    setTimeout(() => { queued = false; fn(); }, delayMs);
  };
}
