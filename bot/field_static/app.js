/* The crew's work orders, offline first.
 * Orders come from /field/api/orders (kept in IndexedDB for offline use). Every change a crew makes
 * (status, note, before/after photo) goes into an IndexedDB queue with its own client_id, shows at
 * once on the card, and is sent to /field/api/sync whenever the phone is online; the server applies
 * each client_id once, so a retry after a dropped connection is harmless. */
"use strict";

const EN = new URLSearchParams(location.search).get("lang") === "en";
const T = EN ? {
  title: "Field work", online: "Online", offline: "Offline: updates are kept and sent later",
  waiting: (n) => `${n} update(s) waiting to be sent`, sent: "All updates sent", onsite: "On site",
  done: "Done", note: "Note", before: "Photo before", after: "Photo after", empty: "No work orders.",
  login: "Log in", st: {assigned: "Assigned", on_site: "On site", done: "Done"}, dist: (m) => `${m} m away`,
} : {
  title: "현장 작업", online: "온라인", offline: "오프라인: 변경 사항을 저장해 두었다가 연결되면 보내요",
  waiting: (n) => `보내지 못한 변경 ${n}건`, sent: "모든 변경을 보냈어요", onsite: "현장 도착",
  done: "작업 완료", note: "메모", before: "작업 전 사진", after: "작업 후 사진", empty: "배정된 작업이 없어요.",
  login: "로그인", st: {assigned: "배정됨", on_site: "현장 작업 중", done: "작업 완료"}, dist: (m) => `${m} m 거리`,
};

let db = null;
let csrf = null;
let syncing = false;

function idb() {
  if (db) return Promise.resolve(db);
  return new Promise((resolve, reject) => {
    const open = indexedDB.open("pcrm-field", 1);
    open.onupgradeneeded = () => {
      open.result.createObjectStore("queue", {keyPath: "client_id"});
      open.result.createObjectStore("kv");
    };
    open.onsuccess = () => { db = open.result; resolve(db); };
    open.onerror = () => reject(open.error);
  });
}

function tx(store, mode, fn) {
  return idb().then((d) => new Promise((resolve, reject) => {
    const t = d.transaction(store, mode);
    const req = fn(t.objectStore(store));
    t.oncomplete = () => resolve(req && req.result);
    t.onerror = () => reject(t.error);
  }));
}

const kvGet = (k) => tx("kv", "readonly", (s) => s.get(k));
const kvPut = (k, v) => tx("kv", "readwrite", (s) => s.put(v, k));
const queueAll = () => tx("queue", "readonly", (s) => s.getAll());
const queuePut = (item) => tx("queue", "readwrite", (s) => s.put(item));
const queueDel = (id) => tx("queue", "readwrite", (s) => s.delete(id));

function newId() {
  return (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`);
}

function show(id, text) { document.getElementById(id).textContent = text; }

async function showQueue() {
  const n = (await queueAll()).length;
  show("queue", n ? T.waiting(n) : T.sent);
  document.body.dataset.pending = String(n);
}

function showNet() { show("net", navigator.onLine ? T.online : T.offline); }

function position() {
  return new Promise((resolve) => {
    if (!navigator.geolocation) return resolve(null);
    navigator.geolocation.getCurrentPosition((p) => resolve(p.coords), () => resolve(null),
                                             {timeout: 3000, maximumAge: 60000});
  });
}

async function me() {
  try {
    const r = await fetch("/field/api/me", {credentials: "same-origin"});
    if (r.status === 401 || r.status === 403) {
      document.getElementById("login").hidden = false;
      return false;
    }
    const data = await r.json();
    csrf = data.csrf;
    await kvPut("me", data);
  } catch (e) {
    const data = await kvGet("me");
    csrf = data ? data.csrf : null;
  }
  return true;
}

async function loadOrders() {
  let orders = null;
  try {
    const pos = await position();
    const q = new URLSearchParams({lang: EN ? "en" : "ko"});
    if (pos) { q.set("lat", pos.latitude); q.set("long", pos.longitude); }
    const r = await fetch(`/field/api/orders?${q}`, {credentials: "same-origin"});
    if (r.ok) {
      orders = (await r.json()).orders;
      await kvPut("orders", orders);
    }
  } catch (e) { /* offline: the last list below */ }
  if (!orders) orders = (await kvGet("orders")) || [];
  const pending = await queueAll();
  render(orders, pending);
}

function render(orders, pending) {
  const list = document.getElementById("orders");
  list.textContent = "";
  document.getElementById("empty").hidden = orders.length > 0;
  const tpl = document.getElementById("order-tpl");
  for (const o of orders) {
    let status = o.status;
    for (const p of pending) if (p.order_id === o.id && p.status) status = p.status;
    const node = tpl.content.firstElementChild.cloneNode(true);
    node.dataset.order = o.id;
    node.dataset.ticket = o.ticket;
    node.querySelector(".o-title").textContent = `${o.service} · ${o.ticket}`;
    node.querySelector(".o-dir").textContent = o.directions + (o.distance_m != null ? ` (${T.dist(o.distance_m)})` : "");
    node.querySelector(".o-desc").textContent = o.description || "";
    node.querySelector(".o-status").textContent = T.st[status] || status;
    const note = node.querySelector(".o-note");
    const ids = [`note-${o.id}`, `before-${o.id}`, `after-${o.id}`];
    note.id = ids[0];
    node.querySelector(".o-note-label").firstChild.textContent = T.note;
    node.querySelector(".o-before").id = ids[1];
    node.querySelector(".o-before-label").firstChild.textContent = T.before;
    node.querySelector(".o-after").id = ids[2];
    node.querySelector(".o-after-label").firstChild.textContent = T.after;
    const onsite = node.querySelector(".o-onsite");
    const done = node.querySelector(".o-done");
    onsite.textContent = T.onsite;
    done.textContent = T.done;
    onsite.setAttribute("aria-label", `${T.onsite}: ${o.ticket}`);
    done.setAttribute("aria-label", `${T.done}: ${o.ticket}`);
    onsite.addEventListener("click", () => act(o, node, "on_site"));
    done.addEventListener("click", () => act(o, node, "done"));
    for (const kind of ["before", "after"]) {
      node.querySelector(`.o-${kind}`).addEventListener("change", (ev) => photo(o, ev.target.files[0], kind));
    }
    list.appendChild(node);
  }
}

function readPhoto(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

// A crew photo is kept at most 1600 px (JPEG): the queue lives on the phone and the sync is small.
// The server strips metadata anyway; if the browser cannot draw it, the file is sent as it is.
async function shrink(dataUrl) {
  try {
    const img = new Image();
    img.src = dataUrl;
    await img.decode();
    const scale = Math.min(1, 1600 / Math.max(img.naturalWidth, img.naturalHeight));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(img.naturalWidth * scale);
    canvas.height = Math.round(img.naturalHeight * scale);
    canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
    return canvas.toDataURL("image/jpeg", 0.85);
  } catch (e) {
    return dataUrl;
  }
}

async function photo(order, file, kind) {
  if (!file) return;
  const data = await shrink(await readPhoto(file));
  await queuePut({client_id: newId(), order_id: order.id, photo_kind: kind, photo: data, at: Date.now()});
  await showQueue();
  sync();
}

async function act(order, node, status) {
  const note = node.querySelector(".o-note").value.trim();
  await queuePut({client_id: newId(), order_id: order.id, status, note, at: Date.now()});
  node.querySelector(".o-status").textContent = T.st[status] || status;
  node.querySelector(".o-note").value = "";
  await showQueue();
  sync();
}

async function sync() {
  if (syncing || !navigator.onLine) return;
  syncing = true;
  try {
    const items = (await queueAll()).sort((a, b) => a.at - b.at);
    if (!items.length) return;
    if (!csrf) await me();
    // A photo travels alone; other updates go 20 at a time (in the order they were made).
    const firstPhoto = items.findIndex((i) => i.photo);
    const batch = firstPhoto === 0 ? items.slice(0, 1) : items.slice(0, firstPhoto > 0 ? Math.min(firstPhoto, 20) : 20);
    const r = await fetch("/field/api/sync", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf || ""},
      body: JSON.stringify({updates: batch.map(({at, ...rest}) => rest)}),
    });
    if (r.status === 403) { csrf = null; return; }
    if (!r.ok) return;
    for (const res of (await r.json()).results) {
      await queueDel(res.client_id);  // applied, already applied, or refused for good: not sent again
    }
    if (items.length > batch.length) setTimeout(() => sync(), 0);
  } catch (e) {
    /* still offline: the queue stays */
  } finally {
    syncing = false;
    await showQueue();
  }
}

window.addEventListener("online", () => { showNet(); sync(); });
window.addEventListener("offline", showNet);

document.addEventListener("DOMContentLoaded", async () => {
  document.documentElement.lang = EN ? "en" : "ko";
  show("title", T.title);
  document.querySelector("#empty").textContent = T.empty;
  document.querySelector("#login a").textContent = T.login;
  showNet();
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/field/sw.js", {scope: "/field/"}).catch(() => {});
  }
  if (await me()) await loadOrders();
  await showQueue();
  sync();
});
