/* The crew app's service worker: the page works offline.
 * The app shell is cached on install and served cache-first; GETs of /field/api/ go to the network
 * and fall back to the last copy. Updates (POST /field/api/sync) are never cached: the page keeps
 * them in IndexedDB until they are acknowledged. */
const CACHE = "pcrm-field-v1";
const SHELL = ["/field/", "/field/app.js", "/field/app.css", "/field/manifest.webmanifest", "/field/icon.svg"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin || !url.pathname.startsWith("/field/")) return;
  if (url.pathname.startsWith("/field/api/")) {
    event.respondWith(fetch(req).then((resp) => {
      if (resp.ok) {
        const copy = resp.clone();
        caches.open(CACHE).then((c) => c.put(url.pathname, copy));
      }
      return resp;
    }).catch(() => caches.match(url.pathname).then((hit) => hit || Response.error())));
    return;
  }
  event.respondWith(caches.match(url.pathname).then((hit) => hit || fetch(req)));
});
