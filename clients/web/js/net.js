// Network helpers with timeouts: a bridge on a bad link must fail fast and retry, not hang.
// Errors carry `fatal: false` so the caller's reconnect loop treats them as transient.

function transient(message) {
  const err = new Error(message);
  err.code = "unreachable";
  err.fatal = false;
  return err;
}

export async function fetchJson(url, timeoutMs) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const r = await fetch(url, { signal: ctl.signal, cache: "no-store" });
    if (!r.ok) throw transient(`${url}: HTTP ${r.status}`);
    return await r.json();
  } catch (err) {
    throw err.code ? err : transient(`${url}: ${err.message}`);
  } finally {
    clearTimeout(t);
  }
}

export function openSocket(url, timeoutMs) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const t = setTimeout(() => {
      ws.close();
      reject(transient("websocket open timeout"));
    }, timeoutMs);
    ws.onopen = () => {
      clearTimeout(t);
      ws.onopen = ws.onerror = null;
      resolve(ws);
    };
    ws.onerror = () => {
      clearTimeout(t);
      reject(transient(`websocket ${url} failed`));
    };
  });
}
