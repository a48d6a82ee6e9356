// Join page: take a token from ?token= or the form, decode its payload to pick the view for
// its role, and hand the token to that view through sessionStorage (not the URL).

import { ROLE_LABEL, decodeToken, isExpired, storeToken, viewFor } from "./token.js";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);

function showError(text) {
  $("#join-error").textContent = text;
  $("#join-error").hidden = !text;
}

function describe(claims) {
  const who = claims.name || claims.sub;
  const parts = [ROLE_LABEL[claims.role], claims.province, `phòng ${claims.room ?? "?"}`];
  return `${who} — ${parts.filter(Boolean).join(" · ")}`;
}

// Keeps ?server= and other options; drops the token from the address bar.
function go(token) {
  let claims;
  try { claims = decodeToken(token); } catch (err) { showError(err.message); return false; }
  if (isExpired(claims)) { showError("Mã truy cập đã hết hạn: xin mã mới từ ban tổ chức."); return false; }
  storeToken(token);
  const rest = new URLSearchParams(params);
  rest.delete("token");
  rest.delete("error");
  const query = rest.toString();
  location.replace(viewFor(claims) + (query ? `?${query}` : ""));
  return true;
}

const input = $("#token");
input.addEventListener("input", () => {
  showError("");
  const info = $("#token-info");
  try {
    info.textContent = describe(decodeToken(input.value));
    info.hidden = false;
  } catch {
    info.hidden = true;
  }
});
$("#join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  go(input.value);
});

if (params.get("error")) showError(params.get("error"));
const fromUrl = params.get("token");
if (fromUrl) {
  history.replaceState(null, "", location.pathname);
  if (!go(fromUrl)) input.value = fromUrl;
}
