/* Knowledge-base editor conveniences: character counts and a live preview of the answers with the
   city's placeholders filled (POST /console/api/kb/preview). The page works without this file.
   Text is only ever set with textContent. */
(function () {
  "use strict";
  var form = document.getElementById("kb-form");
  if (!form) { return; }
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var out = document.getElementById("live-preview");
  var timer = null;

  function field(name) { var e = form.elements[name]; return e ? e.value : ""; }

  function counts() {
    ["ko", "en"].forEach(function (lang) {
      var box = document.getElementById("answer_" + lang);
      var c = document.getElementById("answer_" + lang + "_count");
      if (box && c) { c.textContent = box.value.length + " / 350자"; }
    });
  }

  function show(data) {
    if (!out) { return; }
    while (out.firstChild) { out.removeChild(out.firstChild); }
    ["ko", "en"].forEach(function (lang) {
      var texts = (data.langs || {})[lang] || {};
      if (!texts.answer) { return; }
      var p = document.createElement("p");
      p.className = "answer";
      p.setAttribute("lang", lang);
      p.textContent = texts.answer.text;
      out.appendChild(p);
      var n = document.createElement("p");
      n.className = "muted";
      n.textContent = texts.answer.chars + "자";
      out.appendChild(n);
    });
    if (data.unknown && data.unknown.length) {
      var err = document.createElement("p");
      err.className = "error";
      err.textContent = "알 수 없는 자리표시자: " + data.unknown.join(", ");
      out.appendChild(err);
    }
  }

  function refresh() {
    var body = { answer: { ko: field("answer_ko"), en: field("answer_en") },
                 spoken: { ko: field("spoken_ko"), en: field("spoken_en") } };
    fetch("/console/api/kb/preview", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body)
    }).then(function (r) { return r.ok ? r.json() : null; }).then(function (j) { if (j) { show(j); } })
      .catch(function () { /* the saved preview stays */ });
  }

  form.addEventListener("input", function (ev) {
    var t = ev.target;
    counts();
    if (t && t.getAttribute && t.getAttribute("data-preview")) {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(refresh, 400);
    }
  });
  counts();
  refresh();
  document.body.setAttribute("data-kb-ready", "1");
}());
