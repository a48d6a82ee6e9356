// Token handling in the page. The payload is decoded only to choose a view and show a name;
// the signature is the server's business (it verifies every join).

const STORAGE_KEY = "hoinghi.token";

export const ROLE_VIEW = {
  chair: "chair.html", operator: "chair.html", // moderators get the console
  province: "bridge.html", commune: "bridge.html", // bridge points
  secretary: "bridge.html", observer: "bridge.html", // receive-only bridge view
};

export const ROLE_LABEL = {
  chair: "Chủ trì", operator: "Kỹ thuật", province: "Tỉnh", commune: "Xã",
  secretary: "Thư ký", observer: "Quan sát",
};

function base64UrlDecode(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes); // names are Vietnamese: UTF-8, not Latin-1
}

// Returns the claims, or throws an Error whose message can be shown to the user.
export function decodeToken(token) {
  const parts = String(token || "").trim().split(".");
  if (parts.length !== 3) throw new Error("Mã truy cập không hợp lệ (không phải JWT).");
  let claims;
  try { claims = JSON.parse(base64UrlDecode(parts[1])); } catch {
    throw new Error("Mã truy cập không hợp lệ (không đọc được nội dung).");
  }
  if (!claims || typeof claims !== "object" || !claims.sub || !claims.role) {
    throw new Error("Mã truy cập thiếu danh tính hoặc vai trò.");
  }
  if (!ROLE_VIEW[claims.role]) throw new Error(`Vai trò không hỗ trợ: ${claims.role}`);
  return claims;
}

export function isExpired(claims, nowS = Date.now() / 1000) {
  return typeof claims.exp === "number" && claims.exp < nowS;
}

export function viewFor(claims) {
  return ROLE_VIEW[claims.role];
}

// The token comes from ?token= (links sent to bridges) or from the join page through
// sessionStorage (per tab, so a reload rejoins but another tab can hold another identity).
// It is removed from the address bar: URLs end up in history, logs and screenshots.
export function takeToken() {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem(STORAGE_KEY, fromUrl.trim());
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
    return fromUrl.trim();
  }
  return sessionStorage.getItem(STORAGE_KEY);
}

export function storeToken(token) {
  sessionStorage.setItem(STORAGE_KEY, token.trim());
}

export function forgetToken() {
  sessionStorage.removeItem(STORAGE_KEY);
}
