/* LashOps live client: no build step, no dependencies.
 *
 * LashOps.follow(path, {cursor, workspace, onEvent, reload}) opens ws(s)://<host><path>?after=<cursor>,
 * applies each event once (durable events are deduplicated by cursor), reconnects with its last
 * cursor after a drop, and on stream.gap calls reload() (which re-reads the page state) and
 * continues from the gap's latest_cursor. Live-lane events ("live": true) are passed through.
 */
(function () {
  "use strict";

  function csrfToken() {
    var m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function api(method, url, body, workspace) {
    var headers = { "Content-Type": "application/json", "X-CSRFToken": csrfToken() };
    if (workspace) headers["X-LashOps-Workspace"] = workspace;
    return fetch(url, {
      method: method, headers: headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) {
          var err = new Error((data.error && data.error.message) || ("HTTP " + r.status));
          err.status = r.status;  // callers tell a refusal (409) from other failures
          err.code = data.error && data.error.code;
          throw err;
        }
        return data;
      });
    });
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }

  function follow(path, opts) {
    var state = { cursor: opts.cursor, socket: null, closed: false, attempts: 0, reloading: false };
    var status = document.getElementById("stream-status");

    function show(text, cls) {
      if (!status) return;
      status.textContent = text;
      status.className = "stream-status " + (cls || "");
    }

    function url() {
      var proto = location.protocol === "https:" ? "wss://" : "ws://";
      var q = [];
      if (state.cursor !== null && state.cursor !== undefined) q.push("after=" + state.cursor);
      if (opts.workspace) q.push("workspace=" + encodeURIComponent(opts.workspace));
      return proto + location.host + path + (q.length ? "?" + q.join("&") : "");
    }

    function resync(latest) {
      state.reloading = true;
      show("re-syncing", "warn");
      return Promise.resolve(opts.reload ? opts.reload() : null).then(function (snapshot) {
        state.reloading = false;
        if (snapshot && typeof snapshot.cursor === "number") state.cursor = Math.max(snapshot.cursor, latest || 0);
        else if (latest !== undefined) state.cursor = latest;
        show("live", "ok");
      });
    }

    function onMessage(msg) {
      if (msg.type === "stream.ready") {
        state.attempts = 0;
        show("live", "ok");
        if (opts.onReady) opts.onReady(msg.data);
        return;
      }
      if (msg.type === "stream.gap") {
        resync(msg.data.latest_cursor);
        return;
      }
      if (msg.type === "stream.error") {
        state.cursor = null; // e.g. cursor_ahead after a database reset: start live, reload state
        resync();
        return;
      }
      if (msg.type === "pong") return;
      if (msg.cursor !== null && msg.cursor !== undefined) {
        if (state.cursor !== null && msg.cursor <= state.cursor) return; // already applied
        state.cursor = msg.cursor;
      }
      try { opts.onEvent(msg); } catch (e) { console.error(e); }
    }

    function connect() {
      if (state.closed) return;
      show("connecting", "warn");
      var ws = new WebSocket(url());
      state.socket = ws;
      ws.onmessage = function (e) { onMessage(JSON.parse(e.data)); };
      ws.onclose = function () {
        state.socket = null;
        if (state.closed) return;
        show("reconnecting", "bad");
        state.attempts += 1;
        setTimeout(connect, Math.min(5000, 250 * Math.pow(2, state.attempts)));
      };
    }

    connect();
    return {
      get cursor() { return state.cursor; },
      close: function () { state.closed = true; if (state.socket) state.socket.close(); },
    };
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  function debounce(fn, ms) {
    var t = null;
    return function () { clearTimeout(t); t = setTimeout(fn, ms); };
  }

  var PALETTE = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d"];

  /* series: {name: [{t: iso, v: number}]} -> an SVG line chart with a legend. */
  function lineChart(container, series, opts) {
    opts = opts || {};
    var W = opts.width || 560, H = opts.height || 160, P = 28;
    var names = Object.keys(series);
    container.innerHTML = "";
    if (!names.length) { container.appendChild(el("p", { cls: "muted", text: "no data yet" })); return; }
    var xs = [], ys = [0];
    names.forEach(function (n) { series[n].forEach(function (p) { xs.push(Date.parse(p.t)); ys.push(p.v); }); });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y1 = Math.max.apply(null, ys) || 1;
    if (opts.from) { x0 = Math.min(x0, Date.parse(opts.from)); }  // a fixed window (the burn range)
    if (opts.to) { x1 = Math.max(x1, Date.parse(opts.to)); }
    if (x1 === x0) { x0 -= 60000; x1 += 60000; }
    function X(t) { return P + (W - 2 * P) * (Date.parse(t) - x0) / (x1 - x0); }
    function Y(v) { return H - P + -(H - 2 * P) * v / y1; }
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("class", "chart");
    var axis = document.createElementNS(ns, "path");
    axis.setAttribute("d", "M" + P + " " + (H - P) + " H" + (W - P) + " M" + P + " " + P + " V" + (H - P));
    axis.setAttribute("class", "axis");
    svg.appendChild(axis);
    var label = document.createElementNS(ns, "text");
    label.setAttribute("x", 2); label.setAttribute("y", P - 8); label.setAttribute("class", "tick");
    label.textContent = (opts.format || String)(y1);
    svg.appendChild(label);
    if (opts.from) {
      [[x0, P, "start"], [x1, W - P, "end"]].forEach(function (tick) {
        var t = document.createElementNS(ns, "text");
        t.setAttribute("x", tick[1]); t.setAttribute("y", H - P + 14); t.setAttribute("class", "tick");
        t.setAttribute("text-anchor", tick[2]);
        t.textContent = timeLabel(tick[0], x1 - x0);
        svg.appendChild(t);
      });
    }
    var legend = el("div", { cls: "legend" });
    names.forEach(function (n, i) {
      var pts = series[n].slice().sort(function (a, b) { return Date.parse(a.t) - Date.parse(b.t); });
      var d = pts.map(function (p, j) { return (j ? "L" : "M") + X(p.t).toFixed(1) + " " + Y(p.v).toFixed(1); }).join(" ");
      var line = document.createElementNS(ns, "path");
      line.setAttribute("d", d);
      line.setAttribute("stroke", PALETTE[i % PALETTE.length]);
      line.setAttribute("class", "series");
      svg.appendChild(line);
      pts.forEach(function (p) {
        var c = document.createElementNS(ns, "circle");
        c.setAttribute("cx", X(p.t)); c.setAttribute("cy", Y(p.v)); c.setAttribute("r", 2.5);
        c.setAttribute("fill", PALETTE[i % PALETTE.length]);
        svg.appendChild(c);
      });
      legend.appendChild(el("span", { style: "color:" + PALETTE[i % PALETTE.length], text: "● " + n }));
    });
    container.appendChild(svg);
    container.appendChild(legend);
  }

  /* A compact local time for an axis end, with the date when the window is longer than a few hours. */
  function timeLabel(ms, span) {
    var d = new Date(ms), hm = ("0" + d.getHours()).slice(-2) + ":" + ("0" + d.getMinutes()).slice(-2);
    return span > 6 * 3600000 ? (d.getMonth() + 1) + "/" + d.getDate() + " " + hm : hm;
  }

  /* nodes: [{id, group}], edges: [{a, b}] -> an SVG graph on a circle. */
  function graph(container, nodes, edges, colorOf) {
    var W = 420, H = 300, R = 115, ns = "http://www.w3.org/2000/svg";
    container.innerHTML = "";
    var pos = {};
    nodes.forEach(function (n, i) {
      var a = 2 * Math.PI * i / Math.max(1, nodes.length) - Math.PI / 2;
      pos[n.id] = [W / 2 + R * Math.cos(a), H / 2 + R * Math.sin(a)];
    });
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("class", "graph");
    edges.forEach(function (e) {
      if (!pos[e.a] || !pos[e.b]) return;
      var l = document.createElementNS(ns, "line");
      l.setAttribute("x1", pos[e.a][0]); l.setAttribute("y1", pos[e.a][1]);
      l.setAttribute("x2", pos[e.b][0]); l.setAttribute("y2", pos[e.b][1]);
      l.setAttribute("class", "edge");
      svg.appendChild(l);
    });
    nodes.forEach(function (n) {
      var g = document.createElementNS(ns, "g");
      var c = document.createElementNS(ns, "circle");
      c.setAttribute("cx", pos[n.id][0]); c.setAttribute("cy", pos[n.id][1]); c.setAttribute("r", 9);
      c.setAttribute("class", "node state-" + (colorOf ? colorOf(n) : ""));
      var t = document.createElementNS(ns, "text");
      t.setAttribute("x", pos[n.id][0] + 12); t.setAttribute("y", pos[n.id][1] + 4);
      t.textContent = n.id;
      g.appendChild(c); g.appendChild(t);
      svg.appendChild(g);
    });
    container.appendChild(svg);
  }

  function fmtEvent(e) {
    var subject = Object.keys(e.subject || {}).map(function (k) { return k + "=" + e.subject[k]; }).join(" ");
    return (e.cursor !== null && e.cursor !== undefined ? "#" + e.cursor + " " : "~ ") + e.type + (subject ? "  " + subject : "");
  }

  function appendFeed(list, e, max) {
    list.appendChild(el("li", { cls: e.live ? "live" : "", text: fmtEvent(e) }));
    while (list.children.length > (max || 60)) list.removeChild(list.firstChild);
  }

  function snapshotFrom(id) {
    return JSON.parse(document.getElementById(id).textContent);
  }

  window.LashOps = {
    follow: follow, api: api, getJSON: getJSON, el: el, debounce: debounce, lineChart: lineChart,
    graph: graph, fmtEvent: fmtEvent, appendFeed: appendFeed, snapshotFrom: snapshotFrom,
  };
})();
