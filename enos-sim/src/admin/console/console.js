// The web console of enos-sim. Everything shown comes from the admin API of the server
// that served this script, with its token; data is written as text, never as markup.
"use strict";

const state = {
  token: null,
  devices: [],
  selected: null, // "pk/dk"
  device: null,
  refreshing: false,
  again: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function time(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function text(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

// ----- the token -----

function takeToken() {
  const m = /(?:^#|&)token=([0-9a-fA-F]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("enos-sim-token", m[1]);
    history.replaceState(null, "", location.pathname);
  }
  state.token = sessionStorage.getItem("enos-sim-token");
}

function needToken(why) {
  $("app").hidden = true;
  $("login").hidden = false;
  if (why) $("login").querySelector("p").textContent = why;
}

// ----- the API -----

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { authorization: "Bearer " + state.token };
  const init = { method, headers };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const v = await r.json().catch(() => ({ error: "the answer is not JSON" }));
  if (r.status === 401) {
    sessionStorage.removeItem("enos-sim-token");
    needToken("The token was refused: open the address enos-sim serve printed, or paste its token.");
  }
  if (!r.ok) throw new ApiError(r.status, v.error || "HTTP " + r.status);
  return v;
}

function path(device) {
  const [pk, dk] = device.split("/");
  return "/devices/" + encodeURIComponent(pk) + "/" + encodeURIComponent(dk);
}

// ----- live changes -----

async function listen() {
  for (;;) {
    try {
      const r = await fetch("/live", { headers: { authorization: "Bearer " + state.token } });
      if (!r.ok) throw new Error("HTTP " + r.status);
      setLive(true);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (message.startsWith("event: change")) refresh();
        }
      }
    } catch (e) {
      // Goes on below: the server went, or the token changed.
    }
    setLive(false);
    await new Promise((done) => setTimeout(done, 2000));
    if (!state.token) return;
  }
}

function setLive(on) {
  const b = $("live");
  b.textContent = on ? "live" : "reconnecting";
  b.className = "badge " + (on ? "on" : "off");
}

// ----- rendering -----

async function refresh() {
  if (state.refreshing) {
    state.again = true;
    return;
  }
  state.refreshing = true;
  try {
    do {
      state.again = false;
      state.devices = await api("GET", "/devices");
      renderList();
      if (state.selected) {
        const [device, record] = await Promise.all([
          api("GET", path(state.selected)),
          api("GET", path(state.selected) + "/record"),
        ]);
        state.device = device;
        renderDevice(device, record);
      }
    } while (state.again);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404 && state.selected) {
      state.selected = null;
      $("detail").hidden = true;
      $("pick").hidden = false;
    }
  } finally {
    state.refreshing = false;
  }
}

function renderList() {
  const filter = $("filter").value.trim().toLowerCase();
  const byName = new Map(state.devices.map((d) => [d.productKey + "/" + d.deviceKey, d]));
  const subsOf = new Map();
  for (const d of state.devices) {
    if (d.gateway && byName.has(d.gateway)) {
      if (!subsOf.has(d.gateway)) subsOf.set(d.gateway, []);
      subsOf.get(d.gateway).push(d);
    }
  }
  const online = state.devices.filter((d) => d.online).length;
  $("summary").textContent = state.devices.length + " devices, " + online + " online";
  const list = $("devices");
  const items = [];
  const item = (d, sub) => {
    const name = d.productKey + "/" + d.deviceKey;
    if (filter && !name.toLowerCase().includes(filter)) return;
    const li = el(
      "li",
      {
        "data-device": name,
        class: [d.online ? "online" : "offline", sub ? "sub" : "", name === state.selected ? "selected" : ""].join(" "),
        title: d.online ? "online" : "offline",
      },
      el("span", { class: "dot" }),
      el("span", { class: "name" }, name),
    );
    if (subsOf.has(name)) li.append(el("span", { class: "tag" }, "gateway · " + subsOf.get(name).length));
    if (!d.enabled) li.append(el("span", { class: "tag" }, "disabled"));
    li.addEventListener("click", () => select(name));
    items.push(li);
  };
  for (const d of state.devices) {
    const name = d.productKey + "/" + d.deviceKey;
    if (d.gateway && byName.has(d.gateway)) continue; // listed under its gateway
    item(d, false);
    for (const s of subsOf.get(name) || []) item(s, true);
  }
  list.replaceChildren(...items);
}

function select(name) {
  state.selected = name;
  charts.clear();
  $("pick").hidden = true;
  $("detail").hidden = false;
  for (const a of ["service-answer", "set-answer", "ota-answer", "action-answer"]) $(a).textContent = "";
  refresh();
}

function renderDevice(d, record) {
  $("device-name").textContent = d.productKey + "/" + d.deviceKey;
  const on = $("device-online");
  on.textContent = d.online ? "online" : "offline";
  on.className = "badge " + (d.online ? "on" : "off");
  const en = $("device-enabled");
  en.textContent = d.enabled ? "enabled" : "disabled";
  en.className = "badge " + (d.enabled ? "on" : "off");
  $("toggle").textContent = d.enabled ? "Disable" : "Enable";
  const facts = ["asset " + d.assetId];
  if (d.firmwareVersion) facts.push("firmware " + d.firmwareVersion);
  if (d.gateway) facts.push("sub-device of " + d.gateway);
  if (d.subDevices && d.subDevices.length) facts.push(d.subDevices.length + " sub-devices");
  if (!d.activated) facts.push("not activated");
  $("device-facts").textContent = facts.join(" · ");
  renderPoints(d);
  rows("events", d.events.slice().reverse().slice(0, 50), (e) => [time(e.time), e.event, text(e.params)]);
  rows("reports", d.reports.slice().reverse().slice(0, 50), (e) => [time(e.time), e.method, text(e.params)]);
  rows("tags", Object.entries(d.tags), ([k, v]) => [k, v]);
  rows("attributes", Object.entries(d.attributes), ([k, v]) => [k, text(v)]);
  rows("record", record.slice().reverse().slice(0, 100), (r) => [
    time(r.at),
    r.direction === "in" ? "→" : "←",
    r.kind,
    r.topic || "",
    r.payload,
  ]);
}

function rows(id, list, cells) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...list.map((x) => el("tr", {}, ...cells(x).map((c) => el("td", {}, c)))));
}

// One chart per measure point, kept while the device stays selected.
const charts = new Map();

function renderPoints(d) {
  const series = new Map();
  for (const h of d.history || []) {
    if (!series.has(h.point)) series.set(h.point, []);
    series.get(h.point).push([h.time, h.value]);
  }
  const names = Object.keys(d.measurepoints).sort();
  const box = $("points");
  if (!names.length) {
    box.replaceChildren(el("p", { class: "facts" }, "No measure point posted yet."));
    charts.clear();
    return;
  }
  const cards = names.map((name) => {
    let c = charts.get(name);
    if (!c) {
      const canvas = el("canvas", { width: 300, height: 110 });
      c = {
        card: el("div", { class: "point", "data-point": name }, el("div", { class: "point-name" }, name)),
        value: el("div", { class: "value" }),
        when: el("div", { class: "when" }),
        canvas,
      };
      c.card.append(c.value, c.when, canvas);
      charts.set(name, c);
    }
    const last = d.measurepoints[name];
    c.value.textContent = text(last.value);
    c.when.textContent = time(last.time);
    const points = (series.get(name) || []).filter(([, v]) => typeof v === "number").sort((a, b) => a[0] - b[0]);
    c.card.dataset.samples = String(points.length);
    draw(c.canvas, points);
    return c.card;
  });
  box.replaceChildren(...cards);
}

function draw(canvas, points) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300;
  const h = canvas.clientHeight || 110;
  if (canvas.width !== w * ratio) {
    canvas.width = w * ratio;
    canvas.height = h * ratio;
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = "10px system-ui, sans-serif";
  g.fillStyle = "#6b7280";
  if (!points.length) {
    g.fillText("no numeric values", 8, h / 2);
    return;
  }
  const pad = { l: 40, r: 6, t: 8, b: 16 };
  const t0 = points[0][0];
  const t1 = points[points.length - 1][0];
  let lo = Math.min(...points.map((p) => p[1]));
  let hi = Math.max(...points.map((p) => p[1]));
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const x = (t) => pad.l + (t1 === t0 ? (w - pad.l - pad.r) / 2 : ((t - t0) / (t1 - t0)) * (w - pad.l - pad.r));
  const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (h - pad.t - pad.b);
  g.strokeStyle = "#e5e7eb";
  g.beginPath();
  g.moveTo(pad.l, pad.t);
  g.lineTo(pad.l, h - pad.b);
  g.lineTo(w - pad.r, h - pad.b);
  g.stroke();
  g.fillText(String(+hi.toPrecision(4)), 2, pad.t + 8);
  g.fillText(String(+lo.toPrecision(4)), 2, h - pad.b);
  g.fillText(time(t0), pad.l, h - 3);
  if (t1 !== t0) {
    const label = time(t1);
    g.fillText(label, w - pad.r - g.measureText(label).width, h - 3);
  }
  g.strokeStyle = "#2563eb";
  g.fillStyle = "#2563eb";
  g.lineWidth = 1.5;
  g.beginPath();
  points.forEach(([t, v], i) => (i ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
  g.stroke();
  for (const [t, v] of points.slice(-50)) {
    g.beginPath();
    g.arc(x(t), y(v), 2, 0, 2 * Math.PI);
    g.fill();
  }
}

// ----- forms and buttons -----

function parseJson(id) {
  try {
    return JSON.parse($(id).value);
  } catch (e) {
    throw new Error("not JSON: " + e.message);
  }
}

function show(id, what) {
  $(id).textContent = typeof what === "string" ? what : JSON.stringify(what, null, 2);
}

function onForm(formId, answerId, run) {
  $(formId).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!state.selected) return;
    show(answerId, "waiting for the device...");
    try {
      show(answerId, await run());
    } catch (e) {
      show(answerId, "error: " + e.message);
    }
    refresh();
  });
}

function wire() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("enos-sim-token", $("token-input").value.trim());
    start();
  });
  $("filter").addEventListener("input", renderList);
  onForm("service-form", "service-answer", () =>
    api("POST", path(state.selected) + "/services/" + encodeURIComponent($("service-id").value.trim()), parseJson("service-params")),
  );
  onForm("set-form", "set-answer", () => api("POST", path(state.selected) + "/points/set", parseJson("set-points")));
  onForm("ota-form", "ota-answer", () => api("POST", path(state.selected) + "/ota", parseJson("ota-firmware")));
  $("cut").addEventListener("click", async () => {
    const r = await api("POST", path(state.selected) + "/cut").catch((e) => ({ error: e.message }));
    show("action-answer", r.error ? "error: " + r.error : r.cut ? "connection cut" : "not connected");
    refresh();
  });
  $("toggle").addEventListener("click", async () => {
    const what = state.device && state.device.enabled ? "disable" : "enable";
    const r = await api("POST", path(state.selected) + "/" + what).catch((e) => ({ error: e.message }));
    show("action-answer", r.error ? "error: " + r.error : what + "d");
    refresh();
  });
}

let listening = false;

function start() {
  takeToken();
  if (!state.token) {
    needToken();
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  refresh();
  if (!listening) {
    listening = true;
    listen().finally(() => (listening = false));
  }
}

wire();
start();
