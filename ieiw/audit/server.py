"""``ieiw audit serve OUT --labeller NAME``: the labelling page over a build's audit sample.

The server (:mod:`ieiw.localserver`: 127.0.0.1, Host check, a fresh token in the printed URL, JSON-only POSTs)
shows one sampled pair at a time, source beside target, with the instruction; never whether the filters
kept it, nor why. ``g`` / ``1`` marks it good, ``b`` / ``2`` bad; with a bad pair, keys ``3``-``7`` (or a
click) give a reason (:data:`REASONS`); ``n`` / ``p`` move. Each mark is a POST the server writes
atomically to ``OUT/audit/labels.json`` (``{labeller: {pair id: {label, reason, at}}}``) before it answers;
the page loads the labeller's marks and opens at the first pair without one, so a reload or a restart loses
nothing and several people label the same sample, each under their name.

Routes (every one needs the Host and the token): ``GET /`` the page, ``GET /api/state?labeller=NAME``,
``GET /api/image?item=I&side=source|target`` (the bytes from the candidate shard), ``POST /api/label``
``{labeller, id, label: good|bad|null, reason}`` (null clears a mark).
"""

from __future__ import annotations

import re
import threading
import time
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ieiw.audit.sample import AUDIT, read_sample
from ieiw.localserver import BadBody, LocalHandler, make_local_server, new_token
from ieiw.schemas import storage
from ieiw.schemas.layout import CANDIDATES
from ieiw.schemas.rows import canonical_json
from ieiw.schemas.shards import read_shard

LABELS = "labels.json"
REASONS = ("not done", "wrong object", "artefacts", "changed too much", "unrelated")
LABELLER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MEDIA = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp"}


def read_labels(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    path = storage.location(out) / AUDIT / LABELS
    return storage.read_json(path) if storage.exists(path) else {}


class AuditStore:
    """The sample, the labels (written on every mark) and the images, for one build."""

    def __init__(self, out: str | Path):
        self.out = storage.location(out)
        self.sample = read_sample(self.out)
        self.items = self.sample["items"]
        self.ids = {it["id"] for it in self.items}
        self.labels = read_labels(self.out)
        self.lock = threading.Lock()

    def mark(self, labeller: str, item: str, label: str | None, reason: str | None) -> dict[str, Any] | None:
        with self.lock:
            mine = self.labels.setdefault(labeller, {})
            if label is None:
                mine.pop(item, None)
            else:
                mine[item] = {"label": label, "reason": reason, "at": round(time.time(), 3)}
            storage.write_bytes_atomic(self.out / AUDIT / LABELS, (canonical_json(self.labels) + "\n").encode())
            return mine.get(item)

    def image(self, index: int, side: str) -> bytes | None:
        item = self.items[index]
        table = read_shard(self.out / CANDIDATES / item["shard"], columns=[f"{side}_image"])
        cell = table[f"{side}_image"][item["row"]].as_py()
        return (cell or {}).get("bytes")


class AuditHandler(LocalHandler):
    server_version = "ieiw-audit"
    store: AuditStore

    def do_GET(self) -> None:
        if not self.allowed():
            return None
        route, query = urlsplit(self.path).path, self.query()
        if route in ("/", "/index.html"):
            return self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        if route == "/api/state":
            labeller = query.get("labeller", "")
            if not LABELLER.match(labeller):
                return self._error(HTTPStatus.BAD_REQUEST, "labeller: 1-64 letters, digits or _.@-")
            with self.store.lock:
                mine = dict(self.store.labels.get(labeller, {}))
            items = [{"id": it["id"], "task": it["task"], "instruction": it["instruction"]} for it in self.store.items]
            return self._json(HTTPStatus.OK, {"items": items, "labels": mine, "reasons": list(REASONS)})
        if route == "/api/image":
            try:
                index = int(query.get("item", ""))
            except ValueError:
                return self._error(HTTPStatus.BAD_REQUEST, "item: an integer")
            side = query.get("side")
            if side not in ("source", "target") or not 0 <= index < len(self.store.items):
                return self._error(HTTPStatus.NOT_FOUND, "no such image")
            data = self.store.image(index, side)
            if not data:
                return self._error(HTTPStatus.NOT_FOUND, "no such image")
            media = next((m for magic, m in MEDIA.items() if data.startswith(magic)), "application/octet-stream")
            return self._send(HTTPStatus.OK, data, media)
        self._error(HTTPStatus.NOT_FOUND, "no such page")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self.allowed():
            return None
        if urlsplit(self.path).path != "/api/label":
            return self._error(HTTPStatus.NOT_FOUND, "no such endpoint")
        try:
            body = self.json_body()
        except BadBody as exc:
            return self._error(exc.status, str(exc))
        if not (isinstance(body, dict) and isinstance(body.get("labeller"), str) and LABELLER.match(body["labeller"])
                and isinstance(body.get("id"), str) and body.get("label") in ("good", "bad", None)
                and body.get("reason") in (None, *REASONS)):
            return self._error(HTTPStatus.BAD_REQUEST, "expected {labeller, id, label: good|bad|null, reason: "
                               + " | ".join(REASONS) + " | null}")
        if body["id"] not in self.store.ids:
            return self._error(HTTPStatus.NOT_FOUND, "no such pair in the sample")
        reason = body.get("reason") if body.get("label") == "bad" else None
        cell = self.store.mark(body["labeller"], body["id"], body.get("label"), reason)
        self._json(HTTPStatus.OK, {"id": body["id"], "label": cell})


def make_server(out: str | Path, host: str = "127.0.0.1", port: int = 0,
                token: str | None = None) -> ThreadingHTTPServer:
    """The labelling server (port 0: a free one); ``server.token`` is the token the URL must carry."""
    token = token or new_token()
    store = AuditStore(out)
    server = make_local_server(AuditHandler, host, port, store=store, token=token)
    server.store = store  # type: ignore[attr-defined]
    server.token = token  # type: ignore[attr-defined]
    return server


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ieiw audit</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1rem 2rem;background:#fafafa;color:#222}
header{display:flex;gap:1rem;align-items:baseline;flex-wrap:wrap}h1{font-size:1.1rem;margin:0}
#instruction{font-size:1.4rem;margin:.6rem 0 1rem;font-weight:600}
#row{display:flex;gap:1rem;flex-wrap:wrap}figure{margin:0;padding:6px;background:#fff;box-shadow:0 1px 3px #0003}
figure img{display:block;max-width:420px;max-height:420px}figcaption{font-size:.85rem;color:#555}
button{font-size:1rem;margin:.2rem}button.on{outline:3px solid #222}
#good.on{background:#c8f0d2}#bad.on{background:#f6c9cf}#message{min-height:1.3rem;color:#b00020}
kbd{border:1px solid #999;border-radius:3px;padding:0 3px;font-size:.8rem}
</style></head><body>
<header><h1>ieiw audit</h1><span id="who"></span><span id="position"></span><span id="count"></span>
<button id="prev" type="button">◀ prev</button><button id="next" type="button">next ▶</button></header>
<p id="instruction"></p><div id="message" role="status"></div>
<div id="row"><figure><img id="source" alt="source"><figcaption>before</figcaption></figure>
<figure><img id="target" alt="target"><figcaption>after</figcaption></figure></div>
<p><button id="good" type="button">good <kbd>g</kbd>/<kbd>1</kbd></button>
<button id="bad" type="button">bad <kbd>b</kbd>/<kbd>2</kbd></button> <span id="reasons"></span></p>
<p><kbd>n</kbd>/<kbd>→</kbd> next · <kbd>p</kbd>/<kbd>←</kbd> previous · every mark is saved at once.</p>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("token") || "", labeller = params.get("labeller") || "";
const $ = id => document.getElementById(id);
const api = (path, extra) => path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) + (extra || "");
let state = null, at = 0;
function render() {
  const it = state.items[at], mine = state.labels[it.id];
  $("who").textContent = "labeller: " + labeller;
  $("position").textContent = `pair ${at + 1} / ${state.items.length} (${it.task})`;
  $("count").textContent = `${Object.keys(state.labels).length} labelled`;
  $("instruction").textContent = it.instruction;
  $("source").src = api(`/api/image?item=${at}&side=source`);
  $("target").src = api(`/api/image?item=${at}&side=target`);
  $("good").className = mine && mine.label === "good" ? "on" : "";
  $("bad").className = mine && mine.label === "bad" ? "on" : "";
  const box = $("reasons"); box.replaceChildren();
  state.reasons.forEach((r, k) => {
    const b = document.createElement("button"); b.type = "button";
    b.textContent = `${r} (${k + 3})`; b.className = mine && mine.reason === r ? "on" : "";
    b.addEventListener("click", () => mark("bad", r)); box.append(b);
  });
  document.body.dataset.item = it.id;
}
function go(i) { at = Math.max(0, Math.min(state.items.length - 1, i)); $("message").textContent = ""; render(); }
let queue = Promise.resolve();
function mark(label, reason) { const it = state.items[at]; queue = queue.then(() => send(it, label, reason || null)); }
async function send(it, label, reason) {
  try {
    const r = await fetch(api("/api/label"), {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({labeller, id: it.id, label, reason})});
    const body = await r.json();
    if (r.ok) { if (body.label) state.labels[it.id] = body.label; else delete state.labels[it.id]; }
    $("message").textContent = r.ok ? "" : body.error;
    if (r.ok && label === "good" || reason) go(at + 1); else render();
  } catch (e) { $("message").textContent = "not saved: " + e; }
}
document.addEventListener("keydown", e => {
  if (!state || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "n" || e.key === "ArrowRight") go(at + 1);
  else if (e.key === "p" || e.key === "ArrowLeft") go(at - 1);
  else if (e.key === "g" || e.key === "1") mark("good");
  else if (e.key === "b" || e.key === "2") mark("bad");
  else if (/^[3-7]$/.test(e.key)) mark("bad", state.reasons[Number(e.key) - 3]);
  else return;
  e.preventDefault();
});
$("prev").addEventListener("click", () => go(at - 1));
$("next").addEventListener("click", () => go(at + 1));
$("good").addEventListener("click", () => mark("good"));
$("bad").addEventListener("click", () => mark("bad"));
(async () => {
  const r = await fetch(api("/api/state", "&labeller=" + encodeURIComponent(labeller)), {cache: "no-store"});
  if (!r.ok) { $("message").textContent = (await r.json()).error; return; }
  state = await r.json();
  const first = state.items.findIndex(it => !state.labels[it.id]);
  at = first < 0 ? 0 : first; render(); document.body.dataset.ready = "1";
})();
</script></body></html>
"""
