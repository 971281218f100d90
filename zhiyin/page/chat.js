// The chat page: protocol 1 over the websocket (docs/chat-protocol.md). No framework, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
// Inside an editor: the webview itself, or a frame in it; the editor opens cited files.
const editor = typeof acquireVsCodeApi === "function" ? acquireVsCodeApi()
  : window.parent !== window ? { postMessage: (m) => window.parent.postMessage(m, "*") } : null;
const params = new URLSearchParams(location.hash.slice(1));
const token = params.get("token") || new URLSearchParams(location.search).get("token") || "";
const md = window.markdownit({
  html: false, linkify: false, breaks: false,
  highlight(code, lang) {
    if (lang && hljs.getLanguage(lang)) return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
    return "";  // markdown-it escapes it
  },
});

let strings = {};
let socket = null;
let conversation = null;  // the open conversation's id
let turn = null;  // the streaming answer: {id, element, text}
let statusTimer = null;
let nextId = 1;

// --- words and looks -------------------------------------------------------------------------------

function setting(name, fallback) { return localStorage.getItem("zhiyin." + name) || fallback; }

function chosenLanguage() {
  const lang = setting("lang", "auto");  // the page's own setting, else the framing editor's, else the browser's
  return lang === "auto" ? (params.get("lang") || navigator.language || "en") : lang;
}

async function loadStrings() {
  const response = await fetch("/strings.json?lang=" + encodeURIComponent(chosenLanguage()));
  const data = await response.json();
  strings = data.strings;
  document.documentElement.lang = data.locale === "zh_CN" ? "zh-CN" : "en";
  document.title = strings.title;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = strings[el.dataset.i18n];
  $("input").placeholder = strings.placeholder;
  $("send").title = "Enter";
  return data.locale;
}

function t(key, values = {}) {
  return (strings[key] || key).replace(/\{(\w+)\}/g, (_, name) => values[name] ?? "");
}

function applyTheme() {
  const theme = setting("theme", "auto");
  const dark = theme === "dark" || (theme === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  $("hl-light").disabled = dark;
  $("hl-dark").disabled = !dark;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// --- the socket --------------------------------------------------------------------------------------

function connect() {
  setStatus(t("statusConnecting"));
  const url = `ws://${location.host}/chat?token=${encodeURIComponent(token)}&lang=${encodeURIComponent(chosenLanguage())}`;
  socket = new WebSocket(url);
  let opened = false;
  socket.onopen = () => {
    opened = true;
    if (editor) editor.postMessage({ type: "ready" });  // the editor may ask now
  };
  socket.onmessage = (event) => receive(JSON.parse(event.data));
  socket.onclose = () => {
    setStatus(opened ? t("statusDisconnected") : t("statusRefused"), true);
    finishTurn(true);
  };
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function receive(m) {
  switch (m.type) {
    case "hello":
      $("repository").textContent = m.repository ? "· " + m.repository : "";
      send({ type: "status" });
      send({ type: "conversations" });
      break;
    case "status": showStatus(m); break;
    case "started":
      if (conversation !== m.conversation) { conversation = m.conversation; send({ type: "conversations" }); }
      break;
    case "token":
      if (turn && m.id === turn.id) { turn.text += m.text; scheduleRender(); }
      break;
    case "notice":
      if (turn && m.id === turn.id) addNotice(turn.element, m.message);
      break;
    case "done":
      if (turn && m.id === turn.id) {
        renderAnswer(turn.element, turn.text + (m.cancelled ? " " + t("stopped") : ""));
        addCitations(turn.element, m.citations);
        if (m.stats) turn.element.title = `${m.stats.promptTokens} prompt tokens (${m.stats.cachedTokens} cached), ` +
          `${m.stats.timeToFirstTokenS}s to first token, ${m.stats.tokensPerS} tokens/s`;
        finishTurn(false);
      }
      break;
    case "edits": showEdits(m); finishTurn(false); break;
    case "applied": case "rejected": showEditOutcome(m); break;
    case "remembered":
      if (turn && m.id === turn.id) { renderAnswer(turn.element, m.message); finishTurn(false); }
      else addMessage("assistant", m.message);
      break;
    case "conversations": showConversations(m.items); break;
    case "conversation": showConversation(m); break;
    case "deleted":
      if (m.conversation === conversation) newChat();
      send({ type: "conversations" });
      break;
    case "source": showSource(m); break;
    case "error":
      if (turn && m.id === turn.id) {
        const p = document.createElement("p");
        p.className = "error-text";
        p.textContent = m.message;
        turn.element.querySelector(".body").append(p);
        finishTurn(false);
      } else {
        setStatus(m.message, true);
      }
      break;
  }
}

function showStatus(m) {
  clearTimeout(statusTimer);
  const work = (m.work || []).map((w) => `${w.title}${w.message ? " — " + w.message : ""}`).join(" · ");
  let text;
  if (!m.engine.loaded) text = work || t("statusLoadingModel");
  else if (!m.index.ready && m.repository) text = work || t("statusIndexing");
  else text = `${t("statusReady")} · ${m.model}`;
  if (m.engine.queued && turn) text += " · " + t("queued", { count: m.engine.queued });
  setStatus(text);
  if (!m.engine.loaded || (!m.index.ready && m.repository) || turn) {
    statusTimer = setTimeout(() => send({ type: "status" }), 1500);
  }
}

// --- messages ----------------------------------------------------------------------------------------

function addMessage(role, text, citations) {
  const el = document.createElement("div");
  el.className = "message " + role;
  const who = document.createElement("div");
  who.className = "who";
  const name = document.createElement("span");
  name.textContent = role === "user" ? t("you") : t("assistant");
  who.append(name);
  if (role === "user") {
    const keep = document.createElement("button");
    keep.textContent = t("remember");
    keep.title = t("rememberTitle");
    keep.className = "remember";
    keep.onclick = () => { send({ type: "remember", id: "r" + nextId++, text }); keep.disabled = true; };
    who.append(keep);
  }
  const body = document.createElement("div");
  body.className = "body";
  el.append(who, body);
  if (role === "user") body.textContent = text;
  else renderAnswer(el, text);
  if (citations && citations.length) addCitations(el, citations);
  $("messages").append(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

function renderAnswer(el, text) {
  el.querySelector(".body").innerHTML = md.render(text);  // html: false, so the model cannot inject markup
  for (const pre of el.querySelectorAll("pre")) {
    if (pre.querySelector(".copy")) continue;
    const copy = document.createElement("button");
    copy.className = "copy";
    copy.textContent = t("copy");
    copy.onclick = () => navigator.clipboard?.writeText(pre.innerText).then(() => { copy.textContent = t("copied"); });
    pre.before(copy);
  }
}

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    if (!turn) return;
    renderAnswer(turn.element, turn.text);
    turn.element.scrollIntoView({ block: "end" });
  });
}

function addNotice(el, text) {
  const p = document.createElement("div");
  p.className = "notice";
  p.textContent = text;
  el.querySelector(".who").after(p);
}

function addCitations(el, citations) {
  if (!citations || !citations.length) return;
  const box = document.createElement("div");
  box.className = "citations";
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = t("sources") + ":";
  box.append(label);
  for (const c of citations) {
    const a = document.createElement("a");
    a.href = c.uri ? `${c.uri}#L${c.startLine}` : "#";
    a.className = "citation";
    a.dataset.path = c.path;
    a.textContent = `[${c.n}] ${c.path}:${c.startLine}` + (c.endLine > c.startLine ? `-${c.endLine}` : "");
    a.onclick = (event) => {
      event.preventDefault();
      if (editor) editor.postMessage({ type: "open", path: c.path, line: c.startLine, uri: c.uri });
      else send({ type: "source", id: "s" + nextId++, path: c.path, startLine: c.startLine, endLine: c.endLine });
    };
    box.append(a);
  }
  el.append(box);
}

function showSource(m) {
  const lines = m.text.split("\n");
  $("source-title").textContent = `${m.path}:${m.startLine}-${m.startLine + lines.length - 1}`;
  const language = hljs.getLanguage(m.path.split(".").pop()) ? m.path.split(".").pop() : null;
  const code = $("source-code");
  if (language) code.innerHTML = hljs.highlight(m.text, { language, ignoreIllegals: true }).value;
  else code.textContent = m.text;
  $("source").hidden = false;
}

// --- asking --------------------------------------------------------------------------------------------

function parseAttachments(text) {
  const files = [], symbols = [];
  for (const match of text.matchAll(/(?:^|\s)@([\w.\/\-\u4e00-\u9fff]+)(?::(\d+)(?:-(\d+))?)?/g)) {
    const [, name, start, end] = match;
    if (name.includes("/") || name.includes(".")) {
      files.push({ path: name, startLine: start ? +start : null, endLine: end ? +end : (start ? +start : null) });
    } else {
      symbols.push(name);
    }
  }
  return { files, symbols, changes: /(^|\s)#changes\b/.test(text) };
}

// extra: fields the chat message carries besides what the text names (an editor's selections, path)
function ask(text, extra = {}) {
  text = text.trim();
  if (!text || turn) return;
  const id = "t" + nextId++;
  addMessage("user", text);
  const element = addMessage("assistant", "");
  element.classList.add("streaming");
  turn = { id, element, text: "" };
  $("send").disabled = true;
  $("stop").hidden = false;
  if (text.startsWith("/edit ")) {
    send({ type: "edit", id, text: text.slice(6) });
  } else if (text.startsWith("/remember ")) {
    send({ type: "remember", id, text: text.slice(10) });
  } else {
    send({ type: "chat", id, text, conversation, ...parseAttachments(text), ...extra });
  }
  send({ type: "status" });
}

// The editor that frames the page asks on the user's behalf ("ask about selection", "explain", "fix").
window.addEventListener("message", (event) => {
  const m = event.data;
  if (event.source !== window.parent || window.parent === window || !m || m.type !== "ask") return;
  const extra = {};
  if (Array.isArray(m.selections)) extra.selections = m.selections;
  if (typeof m.path === "string") extra.path = m.path;
  ask(String(m.text || ""), extra);
});

function finishTurn(lost) {
  if (!turn) return;
  turn.element.classList.remove("streaming");
  if (lost) renderAnswer(turn.element, turn.text + " " + t("stopped"));
  turn = null;
  $("send").disabled = false;
  $("stop").hidden = true;
}

// --- edits ---------------------------------------------------------------------------------------------

function showEdits(m) {
  const el = turn ? turn.element : addMessage("assistant", "");
  const body = el.querySelector(".body");
  body.textContent = "";
  const box = document.createElement("div");
  box.className = "edit";
  box.dataset.plan = m.plan || "";
  const title = document.createElement("strong");
  title.textContent = m.files.length ? t("proposedEdit") + ": " + m.instruction : t("noEdit");
  box.append(title);
  for (const file of m.files) {
    const f = document.createElement("div");
    f.className = "file";
    const name = document.createElement("div");
    name.className = "file-name";
    name.textContent = file.path;
    const diff = document.createElement("div");
    diff.className = "diff";
    for (const line of file.diff.split("\n")) {
      if (line.startsWith("---") || line.startsWith("+++") || line === "") continue;
      const row = document.createElement("div");
      row.className = line[0] === "+" ? "add" : line[0] === "-" ? "del" : line.startsWith("@@") ? "hunk" : "";
      row.textContent = line;
      diff.append(row);
    }
    f.append(name, diff);
    box.append(f);
  }
  for (const [path, why] of Object.entries(m.problems || {})) {
    const p = document.createElement("div");
    p.className = "error-text";
    p.textContent = `${path}: ${why}`;
    box.append(p);
  }
  if (m.plan) {
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    const apply = document.createElement("button");
    apply.className = "primary apply";
    apply.textContent = t("apply");
    const reject = document.createElement("button");
    reject.className = "reject";
    reject.textContent = t("reject");
    apply.onclick = () => { send({ type: "apply", plan: m.plan }); apply.disabled = reject.disabled = true; };
    reject.onclick = () => { send({ type: "reject", plan: m.plan }); apply.disabled = reject.disabled = true; };
    const outcome = document.createElement("span");
    outcome.className = "outcome";
    buttons.append(apply, reject, outcome);
    box.append(buttons);
  }
  body.append(box);
}

function showEditOutcome(m) {
  const box = document.querySelector(`.edit[data-plan="${m.plan}"]`);
  if (!box) return;
  const outcome = box.querySelector(".outcome");
  outcome.textContent = m.type === "rejected" ? t("rejected") : m.message;
  outcome.classList.toggle("error-text", m.type === "applied" && !m.applied);
}

// --- conversations --------------------------------------------------------------------------------

function showConversations(items) {
  const list = $("conversations");
  list.textContent = "";
  if (!items.length) {
    const empty = document.createElement("li");
    empty.className = "empty";
    empty.textContent = t("noConversations");
    list.append(empty);
  }
  for (const item of items) {
    const li = document.createElement("li");
    li.classList.toggle("active", item.id === conversation);
    const a = document.createElement("a");
    a.href = "#";
    a.textContent = item.title;
    a.title = new Date(item.updated * 1000).toLocaleString();
    a.onclick = (event) => { event.preventDefault(); if (!turn) send({ type: "load", conversation: item.id }); };
    const remove = document.createElement("button");
    remove.textContent = "×";
    remove.title = t("delete");
    remove.onclick = () => send({ type: "delete", conversation: item.id });
    li.append(a, remove);
    list.append(li);
  }
}

function showConversation(m) {
  conversation = m.id;
  $("messages").textContent = "";
  for (const message of m.messages) addMessage(message.role, message.text, message.citations);
  send({ type: "conversations" });
}

function newChat() {
  if (turn) return;
  conversation = null;
  $("messages").textContent = "";
  $("source").hidden = true;
  send({ type: "conversations" });
  $("input").focus();
}

// --- start ---------------------------------------------------------------------------------------------

async function start() {
  $("language").value = setting("lang", "auto");
  $("theme").value = setting("theme", "auto");
  applyTheme();
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
  await loadStrings();
  $("composer").onsubmit = (event) => { event.preventDefault(); const text = $("input").value; $("input").value = ""; ask(text); };
  $("input").onkeydown = (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {  // not while an IME composes
      event.preventDefault();
      $("composer").requestSubmit();
    }
  };
  $("stop").onclick = () => { if (turn) send({ type: "cancel", id: turn.id }); };
  $("new-chat").onclick = newChat;
  $("source-close").onclick = () => { $("source").hidden = true; };
  $("language").onchange = async () => {
    localStorage.setItem("zhiyin.lang", $("language").value);
    const locale = await loadStrings();
    send({ type: "locale", locale });
    send({ type: "conversations" });
  };
  $("theme").onchange = () => { localStorage.setItem("zhiyin.theme", $("theme").value); applyTheme(); };
  connect();
}

start();
