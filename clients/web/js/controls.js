// Conference controls for moderators (chair, operator): the requests of docs/floor.md, with
// labels that follow the current state (give or take the floor, mute or unmute...), the hand
// queue, and the roll call that feeds the roster with invited-but-absent bridges and quality.

const SPEAKING_ROLES = new Set(["province", "commune"]); // may be given the floor

// Each control: when it applies, its label for the current state, and the request it sends.
// `t` is the selected participant (or null), `f` the FloorState.
const CONTROLS = [
  { key: "floor", target: true,
    ok: (t, f, p) => SPEAKING_ROLES.has(p?.role),
    label: (t, f) => (f.holders.includes(t) ? "Thu hồi quyền phát biểu" : "Trao quyền phát biểu"),
    message: (t, f) => (f.holders.includes(t)
      ? { type: "take_floor", participant_id: t } : { type: "give_floor", participant_id: t }) },
  { key: "take_all", target: false, ok: (t, f) => f.holders.length > 0,
    label: () => "Thu hồi mọi quyền phát biểu", message: () => ({ type: "take_floor" }) },
  { key: "mute", target: true, ok: (t, f, p) => SPEAKING_ROLES.has(p?.role),
    label: (t, f) => (f.muted.has(t) ? "Bật tiếng điểm cầu" : "Tắt tiếng điểm cầu"),
    message: (t, f) => ({ type: f.muted.has(t) ? "unmute_participant" : "mute_participant",
      participant_id: t }) },
  { key: "mute_all", target: false, ok: () => true,
    label: () => "Tắt tiếng tất cả", message: () => ({ type: "mute_all" }) },
  { key: "spotlight", target: true, ok: (t, f, p) => !!p,
    label: (t, f) => (f.spotlight === t ? "Bỏ ghim hình" : "Ghim hình cho mọi điểm cầu"),
    message: (t, f) => ({ type: "spotlight", participant_id: f.spotlight === t ? null : t }) },
  { key: "lock", target: false, ok: () => true,
    label: (t, f) => (f.locked ? "Mở khoá phòng" : "Khoá phòng"),
    message: (t, f) => ({ type: f.locked ? "unlock_room" : "lock_room" }) },
  { key: "remove", target: true, ok: (t, f, p) => !!p && p.role !== "chair", danger: true,
    label: () => "Mời rời hội nghị", message: (t) => ({ type: "remove_participant", participant_id: t }) },
];

export class ControlPanel {
  constructor({ conference, floor, buttons, hands, target, getTarget }) {
    this.conf = conference;
    this.floor = floor;
    this.buttonsEl = buttons;
    this.handsEl = hands;
    this.targetEl = target;
    this.getTarget = getTarget;
    this.lastError = null;
  }

  get enabled() {
    return this.floor.supported && !!this.conf.self?.grants?.moderate;
  }

  state() {
    const t = this.getTarget();
    const p = t ? this.conf.participants.get(t) : null;
    return CONTROLS.map((c) => ({
      key: c.key, label: c.label(t, this.floor),
      enabled: this.enabled && (!c.target || !!p) && c.ok(t, this.floor, p),
    }));
  }

  async run(key) {
    const c = CONTROLS.find((x) => x.key === key);
    if (!c) throw new Error(`unknown control ${key}`);
    try {
      this.lastError = null;
      return await this.conf.request(c.message(this.getTarget(), this.floor));
    } catch (err) {
      this.lastError = err.code || err.message;
      this.render();
      throw err;
    }
  }

  render() {
    const t = this.getTarget();
    const p = t ? this.conf.participants.get(t) : null;
    this.targetEl.textContent = p ? p.name || p.id : t ? `${t} (đã rời)` : "—";
    this.buttonsEl.replaceChildren(...this.state().map((s) => {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.dataset.control = s.key;
      btn.textContent = s.label;
      btn.disabled = !s.enabled;
      if (CONTROLS.find((c) => c.key === s.key).danger) btn.className = "danger";
      if (!this.floor.supported) btn.title = "Máy chủ chưa hỗ trợ điều khiển hội nghị";
      btn.addEventListener("click", () => this.run(s.key).catch(() => {}));
      return btn;
    }));
    if (this.lastError) {
      const err = document.createElement("p");
      err.className = "error";
      err.textContent = `Lệnh bị từ chối: ${this.lastError}`;
      this.buttonsEl.append(err);
    }
    this._renderHands();
  }

  // Raised hands, oldest first, each with a one-click "give the floor".
  _renderHands() {
    const items = this.floor.hands.map((h, i) => {
      const p = this.conf.participants.get(h.id);
      const li = document.createElement("li");
      li.dataset.participantId = h.id;
      const name = document.createElement("span");
      name.textContent = `${i + 1}. ${p?.name || h.id}`;
      li.append(name);
      if (this.enabled) {
        const give = document.createElement("button");
        give.type = "button";
        give.textContent = "Trao lời";
        give.addEventListener("click", () => this.conf
          .request({ type: "give_floor", participant_id: h.id }).catch(() => {}));
        li.append(give);
      }
      return li;
    });
    this.handsEl.replaceChildren(...items);
    this.handsEl.dataset.count = String(items.length);
  }
}

// Pages through `roll_call` (at most 500 rows a message) every `periodMs` while connected,
// and hands the full list to `onRows`. Stops asking if the server does not know the request.
export function pollRollCall(conf, onRows, periodMs = 5000) {
  let stopped = false;
  const round = async () => {
    if (stopped) return;
    try {
      if (conf.state === "connected" && conf.features.has("floor") && conf.self?.grants?.moderate) {
        const rows = [];
        for (let offset = 0; ; offset += 500) {
          const page = await conf.request({ type: "roll_call", offset, limit: 500 });
          rows.push(...(page.bridges || []));
          if (!page.bridges?.length || rows.length >= (page.total ?? 0)) break;
        }
        onRows(rows);
      }
    } catch (err) {
      if (err.code === "unknown_type") stopped = true;
    }
    if (!stopped) setTimeout(round, periodMs);
  };
  round();
  return () => { stopped = true; };
}
