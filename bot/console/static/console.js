/* Agent console: live queue and hand-off view. Text is only ever set with textContent. */
(function () {
  "use strict";
  var body = document.body;
  var page = body.getAttribute("data-page");
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var handoffId = parseInt(body.getAttribute("data-handoff-id") || "0", 10);
  var liveStatus = document.getElementById("live-status");
  var AUTHOR = { resident: "주민", bot: "챗봇", agent: "상담원" };
  var STATUS = { queued: "대기", claimed: "상담 중", closed: "종료" };
  var SEEN_KEY = "pcrm.console.seen";
  var baseTitle = document.title;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function setStatus(text) { if (liveStatus) { liveStatus.textContent = text; } }

  function api(method, path, data) {
    var opts = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (method !== "GET") {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = csrf;
      opts.body = JSON.stringify(data || {});
    }
    return fetch(path, opts).then(function (r) {
      if (r.status === 401) { window.location.href = "/console/login?next=" + encodeURIComponent(location.pathname); }
      return r.json().then(function (j) { if (!r.ok) { throw new Error(j.detail || ("HTTP " + r.status)); } return j; });
    });
  }

  /* Which resident message of each hand-off the agent has seen (unread markers). */
  function seen() { try { return JSON.parse(localStorage.getItem(SEEN_KEY) || "{}"); } catch (e) { return {}; } }
  function markSeen(id, lastId) {
    var s = seen(); s[String(id)] = lastId; try { localStorage.setItem(SEEN_KEY, JSON.stringify(s)); } catch (e) { /* private mode */ }
  }

  /* --- alerts: sound, desktop notification, title badge ----------------------------------- */
  var alertsOn = false;
  function beep(loud) {
    if (!alertsOn) { return; }
    try {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      var ctx = new Ctx();
      var tones = loud ? [880, 660, 880, 660] : [660];
      tones.forEach(function (f, i) {
        var o = ctx.createOscillator(); var g = ctx.createGain();
        o.frequency.value = f; g.gain.value = loud ? 0.3 : 0.12;
        o.connect(g); g.connect(ctx.destination);
        o.start(ctx.currentTime + i * 0.25); o.stop(ctx.currentTime + i * 0.25 + 0.2);
      });
    } catch (e) { /* no audio device */ }
  }
  function notify(title, text) {
    if (alertsOn && window.Notification && Notification.permission === "granted") {
      try { new Notification(title, { body: text, tag: "pcrm-queue" }); } catch (e) { /* not allowed here */ }
    }
  }
  function showAlert(text) {
    var a = document.getElementById("alert");
    if (!a) { return; }
    a.textContent = text; a.hidden = false;
  }

  /* --- queue page ------------------------------------------------------------------------- */
  var items = [];
  var known = null;
  var tab = "all";
  var me = parseInt(body.getAttribute("data-me") || "0", 10);
  var sla = { emergency: parseInt(body.getAttribute("data-sla-emergency") || "120", 10),
              default: parseInt(body.getAttribute("data-sla-default") || "900", 10) };
  var loadedAt = Date.now();

  function fmt(sec) {
    var neg = sec < 0; sec = Math.abs(Math.floor(sec));
    var m = Math.floor(sec / 60), s = sec % 60;
    return (neg ? "-" : "") + m + ":" + ("0" + s).slice(-2);
  }

  function visible(it) {
    var dept = (document.getElementById("f-dept") || {}).value || "";
    var ch = (document.getElementById("f-channel") || {}).value || "";
    var lang = (document.getElementById("f-lang") || {}).value || "";
    var q = ((document.getElementById("f-search") || {}).value || "").trim().toLowerCase();
    if (tab === "unassigned" && it.status !== "queued") { return false; }
    if (tab === "mine" && !it.mine) { return false; }
    if (tab === "callback" && !it.callback) { return false; }
    if (tab === "emergency" && !it.emergency) { return false; }
    if (dept && it.department !== dept) { return false; }
    if (ch && it.channel !== ch) { return false; }
    if (lang && it.lang !== lang) { return false; }
    if (q && (it.summary + " " + it.last_message + " #" + it.id + " " + it.reason_name).toLowerCase().indexOf(q) < 0) { return false; }
    return true;
  }

  function slaCell(it, td) {
    var elapsed = it.waiting_s + (Date.now() - loadedAt) / 1000;
    if (it.callback) {
      var due = (Date.parse(it.callback.due_at) - Date.now()) / 1000;
      td.textContent = due > 0 ? "회신 기한까지 " + fmt(due) : "회신 기한 지남 " + fmt(-due);
      td.className = "sla " + (due < 0 ? "sla-over" : (due < 900 ? "sla-warn" : "sla-ok"));
      return;
    }
    var target = it.emergency ? sla.emergency : sla.default;
    if (it.status !== "queued") { td.textContent = fmt(elapsed) + " (배정됨)"; td.className = "sla"; return; }
    var left = target - elapsed;
    td.textContent = fmt(elapsed) + " (" + (left >= 0 ? "남음 " + fmt(left) : "초과 " + fmt(-left)) + ")";
    td.className = "sla " + (left < 0 ? "sla-over" : (left < target / 3 ? "sla-warn" : "sla-ok"));
  }

  function renderQueue() {
    var tbody = document.getElementById("queue-body");
    if (!tbody) { return; }
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    var shown = items.filter(visible);
    var count = document.getElementById("queue-count");
    if (count) { count.textContent = "(" + shown.length + "/" + items.length + "건)"; }
    var waiting = items.filter(function (it) { return it.status === "queued"; }).length;
    document.title = (waiting ? "(" + waiting + ") " : "") + baseTitle;
    if (!shown.length) {
      var tr0 = el("tr", "empty");
      var td0 = el("td", null, items.length ? "조건에 맞는 상담이 없습니다." : "대기 중인 상담이 없습니다.");
      td0.colSpan = 7;
      tr0.appendChild(td0);
      tbody.appendChild(tr0);
      return;
    }
    var s = seen();
    shown.forEach(function (it) {
      var tr = el("tr", it.emergency ? "emergency" : (it.callback ? "callback" : ""));
      tr.setAttribute("data-id", String(it.id));
      var unread = it.last_in_id && (s[String(it.id)] || 0) < it.last_in_id;
      if (unread) { tr.classList.add("unread"); }
      var a = el("a", null, "#" + it.id);
      a.href = "/console/handoffs/" + encodeURIComponent(it.id);
      var td = el("td"); td.appendChild(a);
      if (unread) { td.appendChild(document.createTextNode(" ")); td.appendChild(el("span", "badge", "새 메시지")); }
      tr.appendChild(td);
      tr.appendChild(el("td", null, it.department_name));
      var kind = el("td");
      if (it.emergency) { kind.appendChild(el("strong", "urgent", "긴급")); }
      else if (it.callback) {
        kind.appendChild(el("strong", "cb", "회신 전화"));
        kind.appendChild(el("span", "muted", " " + it.callback.phone + (it.callback.outcome_name ? " · " + it.callback.outcome_name : "")));
      } else { kind.textContent = it.reason_name; }
      tr.appendChild(kind);
      tr.appendChild(el("td", null, (it.channel_name || "") + " · " + (it.lang_name || "")));
      tr.appendChild(el("td", null, it.status === "queued" ? "대기" : (it.mine ? "내 상담" : (it.agent_name || "상담 중"))));
      var sum = el("td");
      sum.appendChild(el("span", "summary", it.summary));
      if (it.last_message) { sum.appendChild(el("span", "last", "마지막: " + it.last_message)); }
      tr.appendChild(sum);
      var w = el("td"); w.setAttribute("data-sla", String(it.id)); slaCell(it, w); tr.appendChild(w);
      tbody.appendChild(tr);
    });
  }

  function tick() {
    items.forEach(function (it) {
      var td = document.querySelector('td[data-sla="' + it.id + '"]');
      if (td) { slaCell(it, td); }
    });
  }

  function sortItems(list) {
    /* Emergencies pinned on top, then priority, then the oldest. */
    return list.slice().sort(function (a, b) {
      if (a.emergency !== b.emergency) { return a.emergency ? -1 : 1; }
      if (a.priority !== b.priority) { return b.priority - a.priority; }
      return a.waiting_s === b.waiting_s ? a.id - b.id : b.waiting_s - a.waiting_s;
    });
  }

  function refreshQueue() {
    return api("GET", "/console/api/queue").then(function (j) {
      items = sortItems(j.items); loadedAt = Date.now();
      if (j.sla) { sla = j.sla; }
      var fresh = known === null ? [] : items.filter(function (it) { return !known[it.id] && it.status === "queued"; });
      known = {}; items.forEach(function (it) { known[it.id] = true; });
      var urgent = fresh.filter(function (it) { return it.emergency; });
      if (urgent.length) {
        showAlert("긴급 상담 #" + urgent[0].id + " (" + urgent[0].department_name + "): " + urgent[0].summary);
        beep(true); notify("긴급 상담 #" + urgent[0].id, urgent[0].summary);
      } else if (fresh.length) {
        beep(false); notify("새 상담 #" + fresh[0].id, fresh[0].summary);
      }
      renderQueue();
      body.setAttribute("data-queue", "ready");
    }).catch(function (e) { setStatus("대기열을 불러오지 못했습니다: " + e.message); });
  }

  function nextItem() {
    var next = items.filter(function (it) { return it.status === "queued" && visible(it); })[0]
      || items.filter(function (it) { return it.status === "queued"; })[0];
    if (next) { window.location.href = "/console/handoffs/" + next.id; }
  }

  function bindQueue() {
    Array.prototype.forEach.call(document.querySelectorAll(".tab"), function (b) {
      b.addEventListener("click", function () {
        tab = b.getAttribute("data-tab");
        Array.prototype.forEach.call(document.querySelectorAll(".tab"), function (o) { o.setAttribute("aria-pressed", o === b ? "true" : "false"); });
        renderQueue();
      });
    });
    ["f-dept", "f-channel", "f-lang", "f-search"].forEach(function (id) {
      var e = document.getElementById(id);
      if (e) { e.addEventListener(id === "f-search" ? "input" : "change", renderQueue); }
    });
    var on = document.getElementById("alerts-on");
    if (on) {
      on.addEventListener("click", function () {
        alertsOn = true; on.textContent = "알림 켜짐"; on.setAttribute("aria-pressed", "true");
        if (window.Notification && Notification.permission === "default") { Notification.requestPermission(); }
        beep(false);
      });
    }
    document.addEventListener("keydown", function (ev) {
      var t = ev.target && ev.target.tagName;
      if (t === "INPUT" || t === "TEXTAREA" || t === "SELECT") { return; }
      if (ev.key === "n" || ev.key === "N") { ev.preventDefault(); nextItem(); }
      else if (ev.key === "/") { ev.preventDefault(); document.getElementById("f-search").focus(); }
    });
    var sf = document.getElementById("search-form");
    if (sf) {
      sf.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var q = document.getElementById("history-q").value.trim();
        var out = document.getElementById("search-results");
        api("GET", "/console/api/search?q=" + encodeURIComponent(q)).then(function (j) {
          while (out.firstChild) { out.removeChild(out.firstChild); }
          if (!j.items.length) { out.appendChild(el("li", null, "찾은 대화가 없습니다.")); }
          j.items.forEach(function (it) {
            var li = el("li"); var a = el("a", null, "상담 #" + it.handoff_id);
            a.href = "/console/handoffs/" + encodeURIComponent(it.handoff_id);
            li.appendChild(a);
            li.appendChild(el("span", "muted", " " + it.department_name + " · " + it.channel_name + " · " + it.at_local + " · " + (STATUS[it.status] || it.status)));
            li.appendChild(el("span", "last", it.text));
            out.appendChild(li);
          });
        }).catch(function (e) { while (out.firstChild) { out.removeChild(out.firstChild); } out.appendChild(el("li", null, "검색 실패: " + e.message)); });
      });
    }
    setInterval(tick, 1000);
    setInterval(refreshQueue, 30000);
    refreshQueue();
  }

  /* --- hand-off page ---------------------------------------------------------------------- */
  function scrollTimeline() {
    var list = document.getElementById("timeline");
    if (list) { list.scrollTop = list.scrollHeight; }
  }

  function addMessage(author, text, channel) {
    var list = document.getElementById("timeline");
    if (!list) { return; }
    var li = el("li", "msg " + author);
    var now = new Date();
    var hh = ("0" + now.getHours()).slice(-2) + ":" + ("0" + now.getMinutes()).slice(-2);
    li.appendChild(el("span", "meta", (AUTHOR[author] || author) + (channel ? " · " + channel : "") + " · " + hh));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", "text", text));
    list.appendChild(li);
    scrollTimeline();
    var live = document.getElementById("timeline-live");
    if (live && author === "resident") { live.textContent = "주민: " + text; }
  }

  function addNote(who, text) {
    var list = document.getElementById("notes");
    if (!list) { return; }
    var li = el("li");
    li.appendChild(el("span", "meta", who));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", "text", text));
    list.appendChild(li);
  }

  function result(text) { var r = document.getElementById("action-result"); if (r) { r.textContent = text; } }
  function setHandoffStatus(s) {
    var e = document.getElementById("handoff-status"); if (e) { e.textContent = STATUS[s] || s; }
    body.setAttribute("data-status", s);
    if (s === "closed") { readOnly(); }
  }
  function readOnly() {
    /* A closed conversation keeps its record but no live controls. */
    ["reply-form", "note-form", "transfer-form", "resolve-form", "handback", "claim", "callback-reveal"].forEach(function (id) {
      var e = document.getElementById(id); if (e) { e.remove(); }
    });
    Array.prototype.forEach.call(document.querySelectorAll(".callback-outcome, .use-text, .status-form"), function (e) { e.remove(); });
    if (!document.getElementById("closed-banner")) {
      var b = el("p", "banner", "종료된 상담입니다. 기록만 볼 수 있습니다."); b.id = "closed-banner";
      var h1 = document.querySelector("h1"); if (h1 && h1.parentNode) { h1.parentNode.insertBefore(b, h1.nextSibling); }
    }
  }

  function bindHandoff() {
    var base = "/console/api/handoffs/" + handoffId;
    scrollTimeline();
    api("GET", base).then(function (d) {
      var last = 0;
      (d.timeline || []).forEach(function (m) { if (m.direction === "in" && m.this_conversation) { last = Math.max(last, m.id); } });
      markSeen(handoffId, last);
    }).catch(function () { /* the page still works */ });
    if (body.getAttribute("data-status") === "closed") { return; }
    var claim = document.getElementById("claim");
    function doClaim() {
      if (!claim || !claim.parentNode) { return; }
      api("POST", base + "/claim").then(function () { setHandoffStatus("claimed"); claim.remove(); result("상담을 배정받았습니다. 주민에게 연결을 알렸습니다."); })
        .catch(function (e) { result("배정 실패: " + e.message); });
    }
    if (claim) { claim.addEventListener("click", doClaim); }
    var replyForm = document.getElementById("reply-form");
    var replyText = document.getElementById("reply-text");
    function send() {
      var text = replyText.value.trim();
      if (!text) { return; }
      api("POST", base + "/reply", { text: text }).then(function (j) {
        replyText.value = "";
        setHandoffStatus("claimed");
        if (claim && claim.parentNode) { claim.remove(); }
        result(j.delivered ? "답변을 보냈습니다." : "답변을 저장했습니다 (이 채널은 즉시 전달되지 않음).");
      }).catch(function (e) { result("보내기 실패: " + e.message); });
    }
    replyForm.addEventListener("submit", function (ev) { ev.preventDefault(); send(); });
    replyText.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); send(); }
    });
    var canned = document.querySelectorAll(".use-text.canned");
    Array.prototype.forEach.call(document.querySelectorAll(".use-text"), function (b) {
      b.addEventListener("click", function () { replyText.value = b.getAttribute("data-text") || ""; replyText.focus(); });
    });
    document.addEventListener("keydown", function (ev) {
      if (!ev.altKey) { return; }
      var k = ev.key;
      if (/^[1-9]$/.test(k) && canned[parseInt(k, 10) - 1]) { ev.preventDefault(); canned[parseInt(k, 10) - 1].click(); }
      else if (k === "c" || k === "C" || ev.code === "KeyC") { ev.preventDefault(); doClaim(); }
      else if (k === "n" || k === "N" || ev.code === "KeyN") {
        ev.preventDefault();
        api("GET", "/console/api/queue").then(function (j) {
          var next = j.items.filter(function (it) { return it.status === "queued" && it.id !== handoffId; })[0];
          if (next) { window.location.href = "/console/handoffs/" + next.id; } else { result("대기 중인 다른 상담이 없습니다."); }
        });
      }
    });
    document.getElementById("note-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var input = document.getElementById("note-text");
      var text = input.value.trim();
      if (!text) { return; }
      api("POST", base + "/note", { text: text }).then(function () { input.value = ""; result("메모를 저장했습니다."); })
        .catch(function (e) { result("메모 실패: " + e.message); });
    });
    document.getElementById("transfer-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var dept = document.getElementById("transfer-dept");
      var reason = document.getElementById("transfer-reason").value.trim();
      api("POST", base + "/transfer", { department: dept.value, reason: reason }).then(function () {
        result(dept.options[dept.selectedIndex].text + "(으)로 이관했습니다. 주민에게 알렸습니다."); setHandoffStatus("queued");
      }).catch(function (e) { result("이관 실패: " + e.message); });
    });
    document.getElementById("resolve-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var code = document.getElementById("resolution").value;
      api("POST", base + "/resolve", { resolution_code: code }).then(function (j) {
        (j.sent || []).forEach(function (t) { addMessage("bot", t, ""); });
        setHandoffStatus("closed");
        result("상담을 종료했습니다. 주민에게 종료를 알리고 만족도 조사를 보냈습니다.");
      }).catch(function (e) { result("종료 실패: " + e.message); });
    });
    document.getElementById("handback").addEventListener("click", function () {
      api("POST", base + "/handback").then(function () { setHandoffStatus("closed"); result("챗봇에게 돌려주었습니다."); })
        .catch(function (e) { result("실패: " + e.message); });
    });
    var reveal = document.getElementById("reveal");
    if (reveal) {
      reveal.addEventListener("click", function () {
        api("POST", base + "/reveal").then(function (j) {
          document.getElementById("phones").textContent = (j.phones || []).join(", ");
          reveal.remove();
        }).catch(function (e) { result("조회 실패: " + e.message); });
      });
    }
    var cbReveal = document.getElementById("callback-reveal");
    if (cbReveal) {
      cbReveal.addEventListener("click", function () {
        api("POST", base + "/callback/reveal").then(function (j) {
          var span = document.getElementById("callback-phone");
          while (span.firstChild) { span.removeChild(span.firstChild); }
          var a = el("a", null, j.phone); a.href = "tel:" + String(j.phone).replace(/[^0-9+]/g, "");
          span.appendChild(a);
          cbReveal.remove();
          result("번호 조회가 기록되었습니다.");
        }).catch(function (e) { result(e.message.indexOf("take the hand-off") >= 0 ? "먼저 상담을 배정받으세요." : "조회 실패: " + e.message); });
      });
    }
    Array.prototype.forEach.call(document.querySelectorAll(".callback-outcome"), function (b) {
      b.addEventListener("click", function () {
        api("POST", base + "/callback/outcome", { outcome: b.getAttribute("data-outcome") }).then(function (j) {
          document.getElementById("callback-attempts").textContent = String(j.attempts);
          document.getElementById("callback-outcome").textContent = j.outcome_name;
          if (j.status === "done") { Array.prototype.forEach.call(document.querySelectorAll(".callback-outcome"), function (o) { o.remove(); }); }
          result("통화 결과를 기록했습니다: " + j.outcome_name + (j.notified ? " (주민에게 알림)" : ""));
        }).catch(function (e) { result(e.message.indexOf("take the hand-off") >= 0 ? "먼저 상담을 배정받으세요." : "기록 실패: " + e.message); });
      });
    });
    Array.prototype.forEach.call(document.querySelectorAll(".status-form"), function (f) {
      f.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var ticket = f.getAttribute("data-ticket");
        var data = { status: f.elements.status.value, note: f.elements.note.value || null,
                     expected: f.elements.expected.value || null };
        api("POST", "/console/api/requests/" + encodeURIComponent(ticket) + "/status", data).then(function (j) {
          var li = f.closest("li");
          var st = li && li.querySelector(".req-status");
          if (st) { st.textContent = f.elements.status.options[f.elements.status.selectedIndex].text; }
          result(j.notified ? "상태를 바꾸고 주민에게 알렸습니다." : "상태를 바꿨습니다.");
        }).catch(function (e) { result("상태 변경 실패: " + e.message); });
      });
    });
  }

  /* --- live socket ------------------------------------------------------------------------ */
  var retry = 1000;
  function connect() {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var ws = new WebSocket(proto + "//" + location.host + "/console/ws");
    ws.onopen = function () {
      retry = 1000;
      if (page === "handoff" && handoffId) { ws.send(JSON.stringify({ type: "watch", handoff_id: handoffId })); }
    };
    ws.onmessage = function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f.type === "ready") { setStatus("실시간 연결됨"); body.setAttribute("data-live", "ready"); return; }
      var topic = f.topic || "";
      if (page === "queue" && topic.indexOf("dept:") === 0) { refreshQueue(); return; }
      if (page === "wallboard" && topic.indexOf("dept:") === 0) { refreshWallboard(); return; }
      if (page === "handoff" && topic === "handoff:" + handoffId) {
        if (f.type === "message") { addMessage("resident", f.text || "", ""); markSeen(handoffId, 1e15); }
        else if (f.type === "agent") { addMessage("agent", f.text || "", ""); }
        else if (f.type === "system") { addMessage("bot", f.text || "", ""); }
        else if (f.type === "note") { addNote(f.who || "", f.text || ""); }
        else if (f.type === "claimed") { setHandoffStatus("claimed"); }
        else if (f.type === "closed") { setHandoffStatus("closed"); }
        else if (f.type === "transferred") { setHandoffStatus("queued"); }
      }
    };
    ws.onclose = function (ev) {
      body.removeAttribute("data-live");
      if (ev.code === 4401) { setStatus("로그인이 필요합니다."); return; }
      setStatus("연결이 끊어졌습니다. 다시 연결하는 중…");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    };
  }

  /* --- supervisor pages ------------------------------------------------------------------ */
  Array.prototype.forEach.call(document.querySelectorAll(".bar[data-w]"), function (b) {
    b.style.width = Math.max(1, parseInt(b.getAttribute("data-w") || "0", 10)) + "%";
  });

  function cell(tr, text) { tr.appendChild(el("td", null, text)); }
  function refreshWallboard() {
    return api("GET", "/console/api/wallboard").then(function (w) {
      var t = w.totals;
      document.getElementById("wb-queued").textContent = String(t.queued);
      document.getElementById("wb-progress").textContent = String(t.in_progress);
      document.getElementById("wb-breached").textContent = String(t.sla_breached);
      document.getElementById("wb-risk").textContent = String(t.sla_at_risk);
      document.getElementById("wb-emergencies").textContent = String(t.emergencies);
      var now = new Date();
      document.getElementById("wb-at").textContent = now.toTimeString().slice(0, 8);
      var tb = document.getElementById("wb-depts");
      while (tb.firstChild) { tb.removeChild(tb.firstChild); }
      w.departments.forEach(function (d) {
        var tr = el("tr"); tr.setAttribute("data-dept", d.department);
        var td = el("td"); var a = el("a", null, d.department_name);
        a.href = "/console/drill?preset=today&department=" + encodeURIComponent(d.department);
        td.appendChild(a); tr.appendChild(td);
        cell(tr, String(d.queued)); cell(tr, String(d.in_progress)); cell(tr, Math.floor((d.longest_wait_s || 0) / 60) + "분");
        cell(tr, String(d.sla_breached)); cell(tr, String(d.sla_at_risk)); cell(tr, String(d.emergencies));
        tb.appendChild(tr);
      });
      var ta = document.getElementById("wb-agents");
      while (ta.firstChild) { ta.removeChild(ta.firstChild); }
      w.agents.forEach(function (a) {
        var tr = el("tr"); var td = el("td"); var link = el("a", null, a.name);
        link.href = "/console/drill?preset=today&agent_id=" + encodeURIComponent(a.agent_id);
        td.appendChild(link); tr.appendChild(td);
        cell(tr, (a.department_names || []).join(", ") || "전체"); cell(tr, a.load + " / " + a.capacity);
        ta.appendChild(tr);
      });
      body.setAttribute("data-wallboard", String(t.queued));
    }).catch(function (e) { setStatus("현황을 불러오지 못했습니다: " + e.message); });
  }

  if (page === "handoff") { bindHandoff(); }
  if (page === "queue") { bindQueue(); }
  if (page === "wallboard") { setInterval(refreshWallboard, 30000); }
  if (page === "queue" || page === "handoff" || page === "wallboard") { connect(); }
})();
