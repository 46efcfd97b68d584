/*
 * PCRM web chat widget. Embed with one tag:
 *   <script src="https://example.go.kr/webchat/widget.js" data-lang="ko" defer></script>
 * Optional attributes: data-lang="ko|en" (initial language), data-title="..." (panel title).
 *
 * Every message text is put on the page with textContent, never as HTML.
 */
(function () {
  "use strict";
  if (window.__pcrmWebchat) return;
  window.__pcrmWebchat = true;

  var script = document.currentScript || document.querySelector('script[src*="webchat/widget.js"]');
  var scriptUrl = new URL(script ? script.src : "/webchat/widget.js", window.location.href);
  var prefix = scriptUrl.pathname.replace(/widget\.js$/, "");
  var httpBase = scriptUrl.origin + prefix;
  var wsBase = (scriptUrl.protocol === "https:" ? "wss://" : "ws://") + scriptUrl.host + prefix + "ws";

  // The session key: only this browser holds it; the server derives the session id from it
  // (bot/webchat_keys.py). It is sent in the socket's subprotocol list and a header, never in a URL.
  var STORE_SESSION = "pcrm-webchat-key";
  var STORE_LANG = "pcrm-webchat-lang";
  var STORE_OPEN = "pcrm-webchat-open";
  // The last bot reply's quick replies ({text, buttons, hints}); the history endpoint has only
  // texts, so without this a reload mid-form lost the 예/아니요 buttons of the open question.
  var STORE_QUICK = "pcrm-webchat-quick";
  var MAX_TEXT = 5000;

  var T = {
    ko: {
      launcher: "민원 상담", title: "민원 상담", close: "상담창 닫기", other: "English", otherLang: "en",
      otherLabel: "Switch to English", log: "대화 내용", input: "메시지 입력",
      placeholder: "궁금한 점을 입력하세요", send: "보내기", typing: "상담봇이 답변을 작성하고 있어요…",
      connecting: "연결하는 중…", reconnecting: "연결이 끊어졌어요. 다시 연결하는 중…",
      you: "나", bot: "상담봇", agent: "상담원", quick: "빠른 답변", newMsg: "새 메시지",
      welcome: "안녕하세요! 민원 상담 창구예요. 궁금한 점을 물어보시거나 불편 사항을 신고해 주세요.",
      starters: ["쓰레기 배출 요일이 궁금해요", "민원실 운영 시간", "도로 파손 신고"],
      location: "현재 위치 보내기", locationSent: "📍 위치를 보냈어요", locationFailed: "위치를 가져오지 못했어요.",
      tooLong: "메시지는 5000자까지 보낼 수 있어요.", error: "문제가 생겼어요: ", link: "자세히 보기",
      hint: "Enter 키로 보내고 Esc 키로 닫아요.", emergency: "긴급"
    },
    en: {
      launcher: "Help chat", title: "Resident help chat", close: "Close chat", other: "한국어", otherLang: "ko",
      otherLabel: "한국어로 전환", log: "Conversation", input: "Your message",
      placeholder: "Type your question", send: "Send", typing: "The assistant is typing…",
      connecting: "Connecting…", reconnecting: "Connection lost. Reconnecting…",
      you: "You", bot: "Assistant", agent: "Agent", quick: "Quick replies", newMsg: "new message",
      welcome: "Hello! Ask a question about city services or report a problem.",
      starters: ["When is trash collected?", "Office hours", "Report a pothole"],
      location: "Send my location", locationSent: "📍 Location sent", locationFailed: "Could not get your location.",
      tooLong: "Messages can be at most 5000 characters.", error: "Something went wrong: ", link: "More details",
      hint: "Press Enter to send and Esc to close.", emergency: "Urgent"
    }
  };

  function store(key, value) {
    try {
      if (value === undefined) return window.localStorage.getItem(key);
      if (value === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, value);
    } catch (e) { /* storage disabled: the session lives as long as the page */ }
    return null;
  }

  function randomId(bytes) {
    var a = new Uint8Array(bytes);
    (window.crypto || window.msCrypto).getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function newKey() {
    var a = new Uint8Array(32);
    (window.crypto || window.msCrypto).getRandomValues(a);
    var bin = "";
    for (var i = 0; i < a.length; i++) bin += String.fromCharCode(a[i]);
    return window.btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function newSession() {
    var id = newKey();
    store(STORE_SESSION, id);
    store(STORE_QUICK, null);
    return id;
  }

  var session = store(STORE_SESSION);
  var returning = !!(session && /^[A-Za-z0-9_-]{22,86}$/.test(session));
  if (!returning) session = newSession();
  var lang = store(STORE_LANG) || (script && script.getAttribute("data-lang")) || document.documentElement.lang || "ko";
  lang = lang.slice(0, 2) === "en" ? "en" : "ko";
  var customTitle = script && script.getAttribute("data-title");

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // --- stylesheet -----------------------------------------------------------------------------
  var css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = httpBase + "widget.css";
  document.head.appendChild(css);

  // --- DOM ------------------------------------------------------------------------------------
  var uid = "pcrm-wc-" + randomId(3);
  var root = el("aside", "pcrm-wc");
  root.id = uid;

  var launcher = el("button", "pcrm-wc-launcher");
  launcher.type = "button";
  launcher.setAttribute("aria-haspopup", "dialog");
  launcher.setAttribute("aria-expanded", "false");
  launcher.setAttribute("aria-controls", uid + "-panel");
  var launcherIcon = el("span", "pcrm-wc-launcher-icon");
  launcherIcon.setAttribute("aria-hidden", "true");
  var launcherText = el("span", "pcrm-wc-launcher-text");
  var launcherBadge = el("span", "pcrm-wc-badge");
  launcherBadge.hidden = true;
  launcher.appendChild(launcherIcon);
  launcher.appendChild(launcherText);
  launcher.appendChild(launcherBadge);

  var panel = el("div", "pcrm-wc-panel");
  panel.id = uid + "-panel";
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-modal", "false");
  panel.setAttribute("aria-labelledby", uid + "-title");
  panel.setAttribute("aria-describedby", uid + "-hint");
  panel.hidden = true;

  var header = el("div", "pcrm-wc-header");
  var title = el("h2", "pcrm-wc-title");
  title.id = uid + "-title";
  var headerButtons = el("div", "pcrm-wc-header-buttons");
  var langBtn = el("button", "pcrm-wc-lang");
  langBtn.type = "button";
  var closeBtn = el("button", "pcrm-wc-close");
  closeBtn.type = "button";
  var closeIcon = el("span", null, "×");
  closeIcon.setAttribute("aria-hidden", "true");
  closeBtn.appendChild(closeIcon);
  headerButtons.appendChild(langBtn);
  headerButtons.appendChild(closeBtn);
  header.appendChild(title);
  header.appendChild(headerButtons);

  var hint = el("p", "pcrm-wc-sr");
  hint.id = uid + "-hint";

  var log = el("div", "pcrm-wc-log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  log.setAttribute("aria-relevant", "additions");
  log.tabIndex = 0;

  var status = el("div", "pcrm-wc-status");
  status.setAttribute("role", "status");
  status.setAttribute("aria-live", "polite");
  var typing = el("span", "pcrm-wc-typing");
  typing.hidden = true;
  var dots = el("span", "pcrm-wc-dots");
  dots.setAttribute("aria-hidden", "true");
  dots.appendChild(el("span"));
  dots.appendChild(el("span"));
  dots.appendChild(el("span"));
  var typingText = el("span");
  typing.appendChild(dots);
  typing.appendChild(typingText);
  var connText = el("span", "pcrm-wc-conn");
  status.appendChild(typing);
  status.appendChild(connText);

  var form = el("form", "pcrm-wc-form");
  form.setAttribute("novalidate", "");
  var label = el("label", "pcrm-wc-sr");
  label.htmlFor = uid + "-input";
  var input = el("input", "pcrm-wc-input");
  input.id = uid + "-input";
  input.type = "text";
  input.autocomplete = "off";
  input.maxLength = MAX_TEXT;
  var sendBtn = el("button", "pcrm-wc-send");
  sendBtn.type = "submit";
  form.appendChild(label);
  form.appendChild(input);
  // Photos (issue 20): a camera button before "send"; the file goes to /webchat/photo and the
  // bot's replies come back over the socket. Phones open the camera (capture).
  var PHOTO_T = {
    ko: { photo: "사진 보내기", sent: "📷 사진을 보냈어요", failed: "사진을 보내지 못했어요: " },
    en: { photo: "Send a photo", sent: "📷 Photo sent", failed: "The photo could not be sent: " }
  };
  var photoLabel = el("label", "pcrm-wc-photo");
  var photoText = el("span", "pcrm-wc-sr");
  var photoIcon = el("span", null, "📷");
  photoIcon.setAttribute("aria-hidden", "true");
  var photoInput = el("input", "pcrm-wc-photo-input");
  photoInput.type = "file";
  photoInput.accept = "image/jpeg,image/png,image/webp,image/gif";
  photoInput.setAttribute("capture", "environment");
  photoLabel.appendChild(photoIcon);
  photoLabel.appendChild(photoText);
  photoLabel.appendChild(photoInput);
  form.appendChild(photoLabel);
  function sendPhoto(file) {
    if (!file) return;
    var body = new FormData();
    body.append("key", session);  // the session key (the server derives the session id from it)
    body.append("lang", lang);
    body.append("file", file);
    clearQuickReplies();
    addMessage("resident", PHOTO_T[lang].sent, {});
    setTyping(true);
    fetch(httpBase + "photo", { method: "POST", body: body })
      .then(function (r) { return r.ok ? r.json() : r.json().then(function (d) { throw new Error(d.detail || r.status); }); })
      .catch(function (e) { setTyping(false); addMessage("bot", PHOTO_T[lang].failed + e.message, {}); })
      .then(function () { photoInput.value = ""; });
  }
  photoInput.addEventListener("change", function () { sendPhoto(photoInput.files[0]); });
  form.appendChild(sendBtn);

  panel.appendChild(header);
  panel.appendChild(hint);
  panel.appendChild(log);
  panel.appendChild(status);
  panel.appendChild(form);
  root.appendChild(panel);
  root.appendChild(launcher);

  function applyLang() {
    var t = T[lang];
    photoText.textContent = PHOTO_T[lang].photo;
    root.setAttribute("lang", lang);
    root.setAttribute("aria-label", t.title);
    launcherText.textContent = t.launcher;
    launcherBadge.textContent = t.newMsg;
    title.textContent = customTitle || t.title;
    langBtn.textContent = t.other;
    langBtn.setAttribute("lang", t.otherLang);
    langBtn.setAttribute("aria-label", t.otherLabel);
    closeBtn.setAttribute("aria-label", t.close);
    closeBtn.title = t.close;
    hint.textContent = t.hint;
    log.setAttribute("aria-label", t.log);
    typingText.textContent = t.typing;
    label.textContent = t.input;
    input.placeholder = t.placeholder;
    sendBtn.textContent = t.send;
    if (connText.textContent) connText.textContent = connected ? "" : t.reconnecting;
  }

  // --- messages -------------------------------------------------------------------------------
  function scrollDown() { log.scrollTop = log.scrollHeight; }

  function clearQuickReplies() {
    var groups = log.querySelectorAll(".pcrm-wc-quick");
    var hadFocus = false;
    for (var i = 0; i < groups.length; i++) {
      if (groups[i].contains(document.activeElement)) hadFocus = true;
      groups[i].parentNode.removeChild(groups[i]);
    }
    if (hadFocus) input.focus();
  }

  function addMessage(author, text, opts) {
    opts = opts || {};
    var t = T[lang];
    var item = el("div", "pcrm-wc-msg pcrm-wc-" + author + (opts.emergency ? " pcrm-wc-emergency" : ""));
    var who = el("span", "pcrm-wc-sr", (author === "resident" ? t.you : author === "agent" ? t.agent : t.bot) + ": ");
    item.appendChild(who);
    if (author === "agent") item.appendChild(el("span", "pcrm-wc-author", opts.name || t.agent));
    if (opts.emergency) item.appendChild(el("strong", "pcrm-wc-tag", t.emergency));
    item.appendChild(el("div", "pcrm-wc-text", text));
    if (opts.link && /^https?:\/\//i.test(opts.link)) {
      var a = el("a", "pcrm-wc-link", t.link);
      a.href = opts.link;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      item.appendChild(a);
    }
    log.appendChild(item);
    scrollDown();
    return item;
  }

  function addQuickReplies(buttons, hints) {
    var t = T[lang];
    var group = el("div", "pcrm-wc-quick");
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", t.quick);
    (buttons || []).forEach(function (b) {
      if (!b || typeof b.title !== "string") return;
      var btn = el("button", "pcrm-wc-chip", b.title);
      btn.type = "button";
      btn.addEventListener("click", function () { sendText(String(b.payload || b.title), b.title); });
      group.appendChild(btn);
    });
    if (hints && hints.rating && !(buttons && buttons.length)) {
      [1, 2, 3, 4, 5].forEach(function (n) {
        var btn = el("button", "pcrm-wc-chip", String(n));
        btn.type = "button";
        btn.addEventListener("click", function () { sendText(String(n)); });
        group.appendChild(btn);
      });
    }
    if (hints && hints.request_location && navigator.geolocation) {
      var loc = el("button", "pcrm-wc-chip pcrm-wc-chip-location", t.location);
      loc.type = "button";
      loc.addEventListener("click", sendLocation);
      group.appendChild(loc);
    }
    if (group.childNodes.length) {
      log.appendChild(group);
      scrollDown();
    }
  }

  function showWelcome() {
    if (log.querySelector(".pcrm-wc-msg")) return;
    addMessage("bot", T[lang].welcome, {});
    addQuickReplies(T[lang].starters.map(function (s) { return { title: s, payload: s }; }), {});
  }

  // --- typing / connection status ------------------------------------------------------------
  var typingTimer = null;
  function setTyping(on) {
    clearTimeout(typingTimer);
    typing.hidden = !on;
    if (on) typingTimer = setTimeout(function () { typing.hidden = true; }, 12000);
  }

  function setConn(text) { connText.textContent = text || ""; }

  // --- socket ---------------------------------------------------------------------------------
  var ws = null;
  var connected = false;
  var attempts = 0;
  var reconnectTimer = null;
  var outbox = [];        // frames waiting for an open socket
  var inflight = {};      // id -> frame, sent but not answered yet (re-sent after a reconnect)

  function connect() {
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) return;
    clearTimeout(reconnectTimer);
    if (!connected && attempts === 0) setConn("");
    var sock = new WebSocket(wsBase + "?lang=" + lang, ["pcrm-webchat", "pcrm-key." + session]);
    ws = sock;
    sock.onopen = function () {
      connected = true;
      attempts = 0;
      setConn("");
      Object.keys(inflight).forEach(function (id) {
        var f = inflight[id];
        if ((f.tries = (f.tries || 0) + 1) > 3) delete inflight[id];
        else sock.send(JSON.stringify(f));
      });
      while (outbox.length) {
        var f = outbox.shift();
        inflight[f.id] = f;
        sock.send(JSON.stringify(f));
      }
    };
    sock.onmessage = function (ev) {
      var frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      handleFrame(frame);
    };
    sock.onclose = function (ev) {
      if (ws === sock) ws = null;
      connected = false;
      setTyping(false);
      if (ev.code === 4400) session = newSession();
      attempts += 1;
      setConn(T[lang].reconnecting);
      var delay = Math.min(15000, 500 * Math.pow(2, attempts - 1)) + Math.floor(Math.random() * 400);
      reconnectTimer = setTimeout(connect, delay);
    };
  }

  function notifyUnread() {
    if (panel.hidden) launcherBadge.hidden = false;
  }

  function handleFrame(frame) {
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "typing") {
      setTyping(true);
    } else if (frame.type === "bot") {
      if (frame.reply_to) delete inflight[frame.reply_to];
      setTyping(false);
      var hints = frame.hints && typeof frame.hints === "object" ? frame.hints : {};
      addMessage("bot", String(frame.text || ""), { emergency: !!hints.emergency, link: hints.link });
      var buttons = Array.isArray(frame.buttons) ? frame.buttons : [];
      addQuickReplies(buttons, hints);
      if (buttons.length || hints.rating || hints.request_location) {
        store(STORE_QUICK, JSON.stringify({ text: String(frame.text || ""), buttons: buttons, hints: hints }));
      }
      notifyUnread();
    } else if (frame.type === "agent") {
      setTyping(false);
      addMessage("agent", String(frame.text || ""), { name: typeof frame.name === "string" ? frame.name : null });
      notifyUnread();
    } else if (frame.type === "error") {
      setTyping(false);
      addMessage("bot", T[lang].error + String(frame.reason || ""), {});
    }
  }

  function enqueue(frame) {
    frame.id = randomId(8);
    frame.lang = lang;
    if (ws && ws.readyState === 1) {
      inflight[frame.id] = frame;
      ws.send(JSON.stringify(frame));
    } else {
      outbox.push(frame);
      connect();
    }
  }

  function sendText(text, shown) {
    text = String(text || "");
    if (!text.trim()) return;
    if (text.length > MAX_TEXT) {
      addMessage("bot", T[lang].tooLong, {});
      return;
    }
    clearQuickReplies();
    store(STORE_QUICK, null);
    addMessage("resident", shown || text, {});
    enqueue({ type: "message", text: text });
  }

  function sendLocation() {
    clearQuickReplies();
    navigator.geolocation.getCurrentPosition(function (pos) {
      addMessage("resident", T[lang].locationSent, {});
      enqueue({ type: "location", lat: pos.coords.latitude, long: pos.coords.longitude });
    }, function () {
      addMessage("bot", T[lang].locationFailed, {});
      input.focus();
    }, { enableHighAccuracy: true, timeout: 10000, maximumAge: 60000 });
    input.focus();
  }

  // --- open / close ---------------------------------------------------------------------------
  function open() {
    panel.hidden = false;
    root.classList.add("pcrm-wc-open");
    launcher.setAttribute("aria-expanded", "true");
    launcherBadge.hidden = true;
    store(STORE_OPEN, "1");
    connect();
    showWelcome();
    scrollDown();
    input.focus();
  }

  function close() {
    panel.hidden = true;
    root.classList.remove("pcrm-wc-open");
    launcher.setAttribute("aria-expanded", "false");
    store(STORE_OPEN, null);
    launcher.focus();
  }

  launcher.addEventListener("click", function () { if (panel.hidden) open(); else close(); });
  closeBtn.addEventListener("click", close);
  panel.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" || ev.key === "Esc") {
      ev.preventDefault();
      close();
    }
  });
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value;
    if (!text.trim()) { input.focus(); return; }
    input.value = "";
    sendText(text);
    input.focus();
  });
  langBtn.addEventListener("click", function () {
    lang = lang === "ko" ? "en" : "ko";
    store(STORE_LANG, lang);
    applyLang();
    var starters = log.querySelectorAll(".pcrm-wc-msg").length === 1;
    if (starters) {  // only the welcome so far: show it in the new language
      while (log.firstChild) log.removeChild(log.firstChild);
      showWelcome();
    }
    langBtn.focus();
  });

  // --- start ----------------------------------------------------------------------------------
  function redraw(messages) {
    if (!messages || !messages.length) return;
    while (log.firstChild) log.removeChild(log.firstChild);
    messages.forEach(function (m) {
      var author = m.author || (m.direction === "in" ? "resident" : "bot");
      var text = typeof m.text === "string" ? m.text : "";
      if (!text && author === "resident") text = T[lang].locationSent;
      addMessage(author === "resident" || author === "agent" ? author : "bot", text, {});
    });
    // The open question's quick replies, if its reply is among the messages since the resident's last.
    var quick = null;
    try { quick = JSON.parse(store(STORE_QUICK) || "null"); } catch (e) { quick = null; }
    if (!quick || typeof quick !== "object") return;
    for (var i = messages.length - 1; i >= 0 && messages[i].direction !== "in"; i--) {
      if (messages[i].text === quick.text) {
        addQuickReplies(Array.isArray(quick.buttons) ? quick.buttons : [], quick.hints || {});
        return;
      }
    }
  }

  function start() {
    document.body.appendChild(root);
    applyLang();
    var wasOpen = store(STORE_OPEN) === "1";
    var after = function () {
      if (wasOpen) open();
      else if (returning) connect();  // agent answers can arrive while the panel is closed
    };
    if (!returning || !window.fetch) { after(); return; }
    fetch(httpBase + "history", { credentials: "omit", headers: { "X-Webchat-Key": session } })
      .then(function (r) { return r.ok ? r.json() : { messages: [] }; })
      .then(function (data) { redraw(data.messages); })
      .catch(function () { /* no history: start fresh */ })
      .then(after);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
