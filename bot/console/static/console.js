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

  /* --- queue page ------------------------------------------------------------------------- */
  function renderQueue(items) {
    var tbody = document.getElementById("queue-body");
    if (!tbody) { return; }
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    var count = document.getElementById("queue-count");
    if (count) { count.textContent = "(" + items.length + "건)"; }
    if (!items.length) {
      var tr0 = el("tr", "empty");
      var td0 = el("td", null, "대기 중인 상담이 없습니다.");
      td0.colSpan = 7;
      tr0.appendChild(td0);
      tbody.appendChild(tr0);
      return;
    }
    items.forEach(function (it) {
      var tr = el("tr");
      tr.setAttribute("data-id", String(it.id));
      var a = el("a", null, "#" + it.id);
      a.href = "/console/handoffs/" + encodeURIComponent(it.id);
      var td = el("td"); td.appendChild(a); tr.appendChild(td);
      tr.appendChild(el("td", null, it.department_name));
      var pr = el("td");
      if (it.priority >= 100) { pr.appendChild(el("strong", "urgent", "긴급")); } else { pr.textContent = String(it.priority); }
      tr.appendChild(pr);
      tr.appendChild(el("td", null, it.channel || ""));
      tr.appendChild(el("td", null, it.status === "queued" ? "대기" : (it.mine ? "내 상담" : "상담 중")));
      tr.appendChild(el("td", null, it.summary));
      tr.appendChild(el("td", null, Math.floor(it.waiting_s / 60) + "분"));
      tbody.appendChild(tr);
    });
  }

  function refreshQueue() {
    return api("GET", "/console/api/queue").then(function (j) { renderQueue(j.items); })
      .catch(function (e) { setStatus("대기열을 불러오지 못했습니다: " + e.message); });
  }

  /* --- hand-off page ---------------------------------------------------------------------- */
  function addMessage(author, text, channel) {
    var list = document.getElementById("timeline");
    if (!list) { return; }
    var li = el("li", "msg " + author);
    var now = new Date();
    var hh = ("0" + now.getHours()).slice(-2) + ":" + ("0" + now.getMinutes()).slice(-2);
    li.appendChild(el("span", "meta", (AUTHOR[author] || author) + " · " + (channel || "") + " · " + hh));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", "text", text));
    list.appendChild(li);
    li.scrollIntoView({ block: "nearest" });
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
  function setHandoffStatus(s) { var e = document.getElementById("handoff-status"); if (e) { e.textContent = STATUS[s] || s; } }

  function bindHandoff() {
    var base = "/console/api/handoffs/" + handoffId;
    var channelName = "";
    var claim = document.getElementById("claim");
    if (claim) {
      claim.addEventListener("click", function () {
        api("POST", base + "/claim").then(function () { setHandoffStatus("claimed"); claim.remove(); result("상담을 배정받았습니다."); })
          .catch(function (e) { result("배정 실패: " + e.message); });
      });
    }
    var replyForm = document.getElementById("reply-form");
    var replyText = document.getElementById("reply-text");
    replyForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var text = replyText.value.trim();
      if (!text) { return; }
      api("POST", base + "/reply", { text: text }).then(function (j) {
        replyText.value = "";
        setHandoffStatus("claimed");
        if (claim && claim.parentNode) { claim.remove(); }
        result(j.delivered ? "답변을 보냈습니다." : "답변을 저장했습니다 (이 채널은 즉시 전달되지 않음).");
      }).catch(function (e) { result("보내기 실패: " + e.message); });
    });
    Array.prototype.forEach.call(document.querySelectorAll(".use-text"), function (b) {
      b.addEventListener("click", function () { replyText.value = b.getAttribute("data-text") || ""; replyText.focus(); });
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
      var dept = document.getElementById("transfer-dept").value;
      var reason = document.getElementById("transfer-reason").value.trim();
      api("POST", base + "/transfer", { department: dept, reason: reason }).then(function () {
        result("이관했습니다."); setHandoffStatus("queued");
      }).catch(function (e) { result("이관 실패: " + e.message); });
    });
    document.getElementById("resolve-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var code = document.getElementById("resolution").value;
      api("POST", base + "/resolve", { resolution_code: code }).then(function (j) {
        setHandoffStatus("closed");
        (j.sent || []).forEach(function (t) { addMessage("bot", t, channelName); });
        result("상담을 종료했습니다. 주민에게 만족도 조사를 보냈습니다.");
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
      if (page === "handoff" && topic === "handoff:" + handoffId) {
        if (f.type === "message") { addMessage("resident", f.text || "", ""); }
        else if (f.type === "agent") { addMessage("agent", f.text || "", ""); }
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

  if (page === "handoff") { bindHandoff(); }
  if (page === "queue" || page === "handoff") { connect(); }
})();
