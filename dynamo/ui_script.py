"""The ring page's script (JavaScript, inlined into the page by dynamo/ui.py; no file is served apart).

Theory of operation: the script polls the node's JSON routes (ROUTES) every POLL_MS and redraws: the Q
partitions as SVG arcs clockwise from the top, coloured by owner and hatched when the owner is seen down,
red marks outside the ring on each spacing violation, the node table, the summary, pending transfers and
the key lookup (highlighted on the ring). With a snapshot embedded in the page (tools/ringviz --html) it
draws that once and polls nothing. Rules it keeps:
- Text, never markup, from the node: every value goes in with textContent or setAttribute.
- Its pure helpers (summarise, windowViolations, violationsMin, arcPath, letter) load without a DOM and
  are exported under Node.js, so tests check them against ring/ (ownership bounds, spacing).
- Colour is never the only signal: each node has a letter, each arc a tooltip, each state a word.
- A missing /admin/transfers (404) means "not known here", not an error; a failed poll keeps the last
  picture, says so, and tries again.
"""

RING_SCRIPT = r"""
"use strict";
var RingUI = (function () {
  var SVG_NS = "http://www.w3.org/2000/svg";
  var ROUTES = {ring: "/admin/ring", members: "/admin/members", transfers: "/admin/transfers",
                preflist: "/admin/preflist"};
  var POLL_MS = 2000, TIMEOUT_MS = 1800, R_OUTER = 210, R_INNER = 150;

  function nodeIds(ring) {
    var seen = Object.create(null), out = [];
    Object.keys(ring.nodes || {}).concat(ring.owners || []).forEach(function (id) {
      if (!seen[id]) { seen[id] = true; out.push(id); }
    });
    return out.sort();
  }

  function windowViolations(owners, targetN) {
    var q = owners.length, width = Math.min(targetN, q), starts = [];
    for (var s = 0; s < q; s++) {
      var seen = Object.create(null);
      for (var k = 0; k < width; k++) {
        var owner = owners[(s + k) % q];
        if (seen[owner]) { starts.push(s); break; }
        seen[owner] = true;
      }
    }
    return starts;
  }

  function violationsMin(q, nodes, targetN) {
    if (nodes > targetN) return 0;
    if (nodes < targetN) return q;
    return q % targetN === 0 ? 0 : 2;
  }

  // Balance and spacing of a /admin/ring document, as ring/report.py computes them.
  function summarise(ring) {
    var ids = nodeIds(ring), owners = ring.owners || [], counts = Object.create(null), owning = [];
    ids.forEach(function (id) { counts[id] = 0; });
    owners.forEach(function (id) { counts[id] += 1; });
    ids.forEach(function (id) { if (counts[id] > 0) owning.push(counts[id]); });
    var q = owners.length, s = owning.length, targetN = ring.target_n || 3;
    var low = s ? Math.floor(q / s) : 0, high = s ? low + (q % s ? 1 : 0) : 0;
    var min = s ? Math.min.apply(null, owning) : 0, max = s ? Math.max.apply(null, owning) : 0;
    return {nodes: ids, counts: counts, partitions: q, owning: s, min: min, max: max, idealLow: low,
            idealHigh: high, balanced: low <= min && max <= high, violations: windowViolations(owners, targetN),
            violationsMin: violationsMin(q, s, targetN), targetN: targetN};
  }

  function letter(index) {  // 0 -> A, 25 -> Z, 26 -> AA
    var text = "";
    for (var n = index + 1; n > 0; n = Math.floor((n - 1) / 26)) {
      text = String.fromCharCode(65 + (n - 1) % 26) + text;
    }
    return text;
  }

  function colour(index) {
    return "hsl(" + ((index * 137.508 + 210) % 360).toFixed(1) + ", 62%, 52%)";
  }

  function point(angle, r) {
    return (r * Math.sin(angle)).toFixed(2) + "," + (-r * Math.cos(angle)).toFixed(2);
  }

  // The outline of `count` partitions from `start` between radii r0 < r1 (partition 0 at the top).
  function arcPath(start, count, q, r0, r1) {
    var a0 = 2 * Math.PI * start / q, a1 = 2 * Math.PI * (start + count) / q;
    var large = a1 - a0 > Math.PI ? 1 : 0;
    return "M" + point(a0, r1) + "A" + r1 + "," + r1 + " 0 " + large + " 1 " + point(a1, r1) +
           "L" + point(a1, r0) + "A" + r0 + "," + r0 + " 0 " + large + " 0 " + point(a0, r0) + "Z";
  }

  // The list of moves in a /admin/transfers answer: the answer itself if a list, else its first list field.
  function transferList(data) {
    if (!data || data.missing) return null;
    if (Array.isArray(data)) return data;
    var keys = Object.keys(data);
    for (var i = 0; i < keys.length; i++) if (Array.isArray(data[keys[i]])) return data[keys[i]];
    return null;
  }

  function movingPartitions(data) {
    return (transferList(data) || []).filter(function (t) {
      return t && typeof t.partition === "number" && t.state !== "done";
    });
  }

  function lookupPath(query) {
    var path = ROUTES.preflist + "?bucket=" + encodeURIComponent(query.bucket) +
               "&key=" + encodeURIComponent(query.key);
    return query.n_val ? path + "&n_val=" + encodeURIComponent(query.n_val) : path;
  }

  var pure = {summarise: summarise, windowViolations: windowViolations, violationsMin: violationsMin,
              arcPath: arcPath, letter: letter, nodeIds: nodeIds, lookupPath: lookupPath,
              transferList: transferList, movingPartitions: movingPartitions, ROUTES: ROUTES};
  if (typeof document === "undefined") return pure;

  // ---- the page ------------------------------------------------------------------------------------
  var state = {ring: null, members: null, transfers: undefined, lookup: null, query: null, drawn: ""};
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function getJSON(path) {
    var controller = typeof AbortController !== "undefined" ? new AbortController() : null;
    var timer = controller ? setTimeout(function () { controller.abort(); }, TIMEOUT_MS) : null;
    return fetch(path, {cache: "no-store", signal: controller ? controller.signal : undefined})
      .then(function (response) {
        if (response.status === 404) return {missing: true};
        if (!response.ok) {
          return response.text().then(function (t) { throw new Error(path + ": " + response.status + " " + t); });
        }
        return response.json();
      })
      .finally(function () { if (timer) clearTimeout(timer); });
  }

  function statusOf(id) {
    var node = (state.ring.nodes || {})[id];
    return node && node.status ? node.status : "unknown";
  }

  function memberOf(id) {
    var list = (state.members && state.members.members) || [];
    for (var i = 0; i < list.length; i++) if (list[i].node === id) return list[i];
    return {};
  }

  function drawRing(summary) {
    var ring = state.ring, q = summary.partitions, index = Object.create(null);
    summary.nodes.forEach(function (id, i) { index[id] = i; });
    var arcs = clear($("arcs")), marks = clear($("marks")), centre = clear($("centre"));
    var showLetters = 2 * Math.PI * R_OUTER / q >= 14;
    (ring.owners || []).forEach(function (owner, p) {
      var down = statusOf(owner) !== "up", d = arcPath(p, 1, q, R_INNER, R_OUTER);
      var arc = svg("path", {d: d, fill: colour(index[owner]), "class": down ? "arc down" : "arc"});
      arc.appendChild(svg("title", {}, "partition " + p + ": " + owner + " (" + statusOf(owner) + ")"));
      arcs.appendChild(arc);
      if (down) arcs.appendChild(svg("path", {d: d, fill: "url(#hatch)", "class": "hatch"}));
      if (showLetters) {
        var at = point(2 * Math.PI * (p + 0.5) / q, (R_INNER + R_OUTER) / 2).split(",");
        arcs.appendChild(svg("text", {x: at[0], y: at[1], "class": "arc-letter"}, letter(index[owner])));
      }
    });
    summary.violations.forEach(function (start) {
      marks.appendChild(svg("path", {d: arcPath(start, summary.targetN, q, R_OUTER + 5, R_OUTER + 11),
                                     "class": "violation"}));
    });
    movingPartitions(state.transfers).forEach(function (t) {
      if (t.partition < 0 || t.partition >= q) return;
      var mark = svg("path", {d: arcPath(t.partition, 1, q, R_OUTER + 13, R_OUTER + 20), "class": "moving"});
      mark.appendChild(svg("title", {}, "partition " + t.partition + " moving: " + (t.source || t.from || "?") +
                                        " → " + (t.target || t.to || "?") + " (" + (t.state || "pending") + ")"));
      marks.appendChild(mark);
    });
    if (state.lookup && !state.lookup.error) drawLookup(marks, state.lookup, q);
    centre.appendChild(svg("text", {x: 0, y: -10, "class": "centre-big"}, "v" + ring.version));
    centre.appendChild(svg("text", {x: 0, y: 12, "class": "centre-small"}, q + " partitions"));
    centre.appendChild(svg("text", {x: 0, y: 28, "class": "centre-small"}, summary.owning + " owners"));
    $("ring-desc").textContent = "Ring version " + ring.version + ": " + q + " partitions. " +
      summary.nodes.map(function (id) { return id + " owns " + summary.counts[id] + " (" + statusOf(id) + ")"; })
        .join("; ") + ". " + summary.violations.length + " spacing violations.";
  }

  function drawLookup(marks, found, q) {
    var mid = 2 * Math.PI * (found.partition + 0.5) / q;
    marks.appendChild(svg("path", {d: arcPath(found.partition, 1, q, R_INNER - 4, R_OUTER + 4), "class": "key-arc"}));
    var tip = point(mid, R_OUTER + 14).split(","), text = point(mid, R_OUTER + 32).split(",");
    marks.appendChild(svg("circle", {cx: tip[0], cy: tip[1], r: 5, "class": "key-dot"}));
    marks.appendChild(svg("text", {x: text[0], y: text[1], "class": "key-label"}, "key"));
    var badges = found.primaries.map(function (r, i) { return [r, String(i + 1), false]; })
      .concat(found.fallbacks.map(function (r) { return [r, "F", true]; }));
    badges.forEach(function (badge, i) {
      var r = badge[0], angle = 2 * Math.PI * (r.partition + 0.5) / q;
      var at = point(angle, R_INNER - 16 - 20 * i).split(",");  // stacked inwards: neighbours never overlap
      var g = svg("g", {"class": badge[2] ? "badge fallback" : "badge"});
      g.appendChild(svg("circle", {cx: at[0], cy: at[1], r: 9}));
      g.appendChild(svg("text", {x: at[0], y: at[1]}, badge[1]));
      g.appendChild(svg("title", {}, (badge[2] ? "fallback " + r.node + " for " + r.fallback_for : "primary " +
        badge[1] + ": " + r.node) + " (found at partition " + r.partition + ")"));
      marks.appendChild(g);
    });
  }

  function row(cells) {
    var tr = el("tr");
    cells.forEach(function (cell) {
      var td = el("td");
      if (cell instanceof Node) td.appendChild(cell);
      else td.textContent = cell === undefined || cell === null ? "–" : String(cell);
      tr.appendChild(td);
    });
    return tr;
  }

  function swatch(i, down) {
    var box = svg("svg", {width: 18, height: 18, viewBox: "0 0 18 18", "aria-hidden": "true"});
    box.appendChild(svg("rect", {width: 18, height: 18, rx: 3, fill: colour(i)}));
    if (down) box.appendChild(svg("rect", {width: 18, height: 18, rx: 3, fill: "url(#hatch)"}));
    return box;
  }

  function drawNodes(summary) {
    var body = clear($("nodes-body"));
    summary.nodes.forEach(function (id, i) {
      var info = (state.ring.nodes || {})[id] || {}, member = memberOf(id), status = statusOf(id);
      var name = el("span", id); if (state.members && state.members.node === id) name.textContent += " (this node)";
      body.appendChild(row([swatch(i, status !== "up"), letter(i), name, el("span", status, "status-" + status),
                            member.membership, summary.counts[id], info.http, info.rpc, member.hints_pending]));
    });
  }

  function drawSummary(summary) {
    var dl = clear($("summary")), ring = state.ring;
    function item(term, value) { dl.appendChild(el("dt", term)); dl.appendChild(el("dd", value)); }
    item("ring version", ring.version);
    item("partitions (Q) · n_val · target_n", summary.partitions + " · " + ring.n_val + " · " + summary.targetN);
    item("balance", "min " + summary.min + ", max " + summary.max + " partitions per node (ideal " +
         summary.idealLow + "–" + summary.idealHigh + "): " + (summary.balanced ? "balanced" : "NOT balanced"));
    var v = summary.violations;
    item("spacing", v.length + " of " + summary.partitions + " windows of " + summary.targetN +
         " partitions repeat an owner (fewest possible " + summary.violationsMin + ")" +
         (v.length ? ": windows starting at " + v.slice(0, 12).join(", ") + (v.length > 12 ? ", …" : "") : ""));
    if (state.members && state.members.node) item("answered by", state.members.node);
  }

  function drawTransfers() {
    var box = clear($("transfers")), data = state.transfers;
    if (data === undefined) { box.appendChild(el("p", "Not asked yet.")); return; }
    if (data === null || data.missing) {
      box.appendChild(el("p", "Not known: this node has no " + ROUTES.transfers + " route."));
      return;
    }
    var list = transferList(data);
    if (!Array.isArray(data)) {  // the answer's own scalar fields, e.g. versions and done/remaining counts
      var facts = Object.keys(data).filter(function (k) {
        return data[k] === null || typeof data[k] !== "object";
      }).map(function (k) { return k + ": " + (data[k] === null ? "–" : data[k]); });
      if (facts.length) box.appendChild(el("p", facts.join(" · ")));
    }
    if (list && list.length === 0) { box.appendChild(el("p", "No transfers under way.")); return; }
    if (list && list.every(function (t) { return t && typeof t === "object" && !Array.isArray(t); })) {
      var columns = [];
      list.forEach(function (t) {
        Object.keys(t).forEach(function (k) { if (columns.indexOf(k) < 0) columns.push(k); });
      });
      var table = el("table"), head = el("tr"), body = el("tbody");
      columns.forEach(function (c) { var th = el("th", c); th.scope = "col"; head.appendChild(th); });
      table.appendChild(el("thead")).appendChild(head);
      list.forEach(function (t) {
        body.appendChild(row(columns.map(function (c) {
          return t[c] !== null && typeof t[c] === "object" ? JSON.stringify(t[c]) : t[c];
        })));
      });
      table.appendChild(body);
      box.appendChild(el("p", list.length + " listed; " + movingPartitions(data).length +
                              " not done (blue marks on the ring)"));
      box.appendChild(table);
      return;
    }
    box.appendChild(el("pre", JSON.stringify(data, null, 2)));
  }

  function drawLookupText() {
    var box = clear($("lookup-result")), found = state.lookup;
    if (!found) return;
    if (found.error) { box.appendChild(el("p", found.error, "error")); return; }
    box.appendChild(el("p", found.bucket + "/" + found.key + " → partition " + found.partition + " of " +
                       found.partitions + " (n_val " + found.n_val + ", ring v" + found.ring_version + ")"));
    var ol = el("ol");
    found.primaries.forEach(function (r) {
      ol.appendChild(el("li", "primary " + r.node + " (found at partition " + r.partition + "): " + r.status));
    });
    box.appendChild(ol);
    if (found.fallbacks.length) {
      var ul = el("ul");
      found.fallbacks.forEach(function (r) {
        ul.appendChild(el("li", "fallback " + r.node + " stands in for " + r.fallback_for + " (partition " +
                              r.partition + "): " + r.status));
      });
      box.appendChild(ul);
    }
    box.appendChild(el("p", "Requests go to: " + (found.targets.join(", ") || "nobody (no live replica)")));
  }

  function render() {
    if (!state.ring || state.ring.missing) return;
    var summary = summarise(state.ring);
    var key = JSON.stringify([state.ring, state.lookup, movingPartitions(state.transfers)]);
    if (key !== state.drawn) { drawRing(summary); state.drawn = key; }
    drawSummary(summary);
    drawNodes(summary);
    drawTransfers();
    drawLookupText();
  }

  function fetchLookup() {
    if (!state.query) return Promise.resolve();
    return getJSON(lookupPath(state.query)).then(function (found) { state.lookup = found; },
      function (error) { state.lookup = {error: String(error.message || error)}; });
  }

  function poll() {
    Promise.all([getJSON(ROUTES.ring), getJSON(ROUTES.members),
                 getJSON(ROUTES.transfers).catch(function () { return null; }), fetchLookup()])
      .then(function (got) {
        state.ring = got[0]; state.members = got[1].missing ? null : got[1]; state.transfers = got[2];
        render();
        $("status").textContent = "Live: updated " + new Date().toLocaleTimeString() +
                                  " (every " + POLL_MS / 1000 + " s).";
        $("status").className = "ok";
      }, function (error) {
        $("status").textContent = "Cannot reach the node (" + (error.message || error) + "); showing the last " +
          "answer, retrying every " + POLL_MS / 1000 + " s.";
        $("status").className = "stale";
      })
      .finally(function () { setTimeout(poll, POLL_MS); });
  }

  // The lookup is kept in the page's own query (/ui/ring?bucket=B&key=K), so a link shows the same key.
  function remember(query) {
    if (typeof history === "undefined" || !history.replaceState) return;
    var search = query ? lookupPath(query).slice(ROUTES.preflist.length) : "";
    history.replaceState(null, "", location.pathname + search);
  }

  function lookupFromLocation() {
    if (typeof URLSearchParams === "undefined") return;
    var params = new URLSearchParams(location.search);
    if (!params.get("bucket") || !params.get("key")) return;
    $("bucket").value = params.get("bucket"); $("key").value = params.get("key");
    $("n-val").value = params.get("n_val") || "";
    state.query = {bucket: params.get("bucket"), key: params.get("key"), n_val: params.get("n_val") || ""};
  }

  function start() {
    var snapshot = JSON.parse($("snapshot").textContent);
    $("lookup").addEventListener("submit", function (event) {
      event.preventDefault();
      var query = {bucket: $("bucket").value, key: $("key").value, n_val: $("n-val").value};
      if (!query.bucket || !query.key) return;
      state.query = query;
      remember(query);
      fetchLookup().then(render);
    });
    $("lookup-clear").addEventListener("click", function () {
      state.query = null; state.lookup = null; remember(null); render();
    });
    if (snapshot) {
      state.ring = snapshot.ring; state.members = snapshot.members; state.transfers = snapshot.transfers;
      state.lookup = snapshot.lookup || null;
      $("lookup").hidden = true;
      $("lookup-note").textContent = "A snapshot cannot look keys up: run python -m tools.ringviz --key bucket/key, " +
        "or open /ui/ring on a node.";
      $("status").textContent = "Snapshot of " + snapshot.source + ", taken " + snapshot.taken + " (not live).";
      render();
      return;
    }
    lookupFromLocation();
    poll();
  }

  start();
  return pure;
})();
if (typeof module !== "undefined" && module.exports) module.exports = RingUI;
"""
