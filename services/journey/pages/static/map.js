// The journey map graph: cytoscape + dagre (journeys loop, so a graph layout, not a Sankey).
// Data: GET #map-graph[data-src] → {"journeys","steps","nodes":[{"id","count","starts","ends",…}],
// "edges":[{"source","target","count","duration_s":{"mean","p50","p90"}}]} (the map API's shape).
(function () {
  "use strict";
  var REFRESH_MS = 30000; // the map is living: re-read while the page is open
  var state = { cy: null, key: null, timer: null, data: null, src: null };
  window.waypointMap = state;

  function seconds(s) {
    if (s === null || s === undefined) { return ""; }
    if (s < 90) { return Math.round(s) + " s"; }
    if (s < 5400) { return Math.round(s / 60) + " min"; }
    if (s < 172800) { return Math.round(s / 3600) + " h"; }
    return Math.round(s / 86400) + " d";
  }

  // PENDING(issue 9): the journey-quality API decides the pain-point fields; any of these,
  // as a share 0..1, colours a node.
  function pain(node) {
    var keys = ["pain_score", "abandon_rate", "repeat_rate", "transfer_rate"];
    var worst = 0;
    keys.forEach(function (k) { if (typeof node[k] === "number" && node[k] > worst) { worst = node[k]; } });
    return worst;
  }

  function elements(data) {
    var maxNode = Math.max.apply(null, [1].concat(data.nodes.map(function (n) { return n.count || 0; })));
    var maxEdge = Math.max.apply(null, [1].concat(data.edges.map(function (e) { return e.count || 0; })));
    var nodes = data.nodes.map(function (n) {
      return { data: {
        id: String(n.id), label: n.id + "\n" + n.count,
        size: 26 + 54 * Math.sqrt((n.count || 0) / maxNode),
        pain: pain(n) >= 0.2 ? "yes" : "no"
      } };
    });
    var edges = data.edges.map(function (e, i) {
      var p50 = e.duration_s ? e.duration_s.p50 : null;
      return { data: {
        id: "e" + i, source: String(e.source), target: String(e.target),
        label: e.count + (p50 !== null && p50 !== undefined ? " · " + seconds(p50) : ""),
        width: 1 + 9 * (e.count || 0) / maxEdge, count: e.count
      } };
    });
    return nodes.concat(edges);
  }

  var STYLE = [
    { selector: "node", style: {
      "label": "data(label)", "text-wrap": "wrap", "text-valign": "center", "font-size": 10,
      "width": "data(size)", "height": "data(size)", "background-color": "#dbe5fb",
      "border-color": "#2457c5", "border-width": 1, "color": "#1c2330" } },
    { selector: "node[pain = 'yes']", style: { "background-color": "#fbe0de", "border-color": "#b3261e" } },
    { selector: "edge", style: {
      "width": "data(width)", "curve-style": "bezier", "target-arrow-shape": "triangle",
      "line-color": "#8a9ab8", "target-arrow-color": "#8a9ab8", "label": "data(label)",
      "font-size": 9, "text-background-color": "#fff", "text-background-opacity": 0.8 } },
    { selector: "edge:loop", style: { "loop-direction": "0deg", "loop-sweep": "-40deg" } }
  ];

  function draw(container, data) {
    var key = JSON.stringify(data);
    if (state.cy && key === state.key) { return; }
    state.key = key;
    state.data = data;
    if (state.cy) { state.cy.destroy(); }
    state.cy = window.cytoscape({
      container: container, elements: elements(data), style: STYLE,
      layout: { name: "dagre", rankDir: "LR", nodeSep: 30, rankSep: 80 },
      wheelSensitivity: 0.3
    });
    state.cy.on("tap", "node", function (event) {
      var form = document.getElementById("map-filters");
      if (!form) { return; }
      form.elements.focus.value = event.target.id();
      form.elements.view.value = "tactical";
      form.requestSubmit();
    });
    state.cy.on("tap", "edge", function (event) {
      var edge = event.target.data();
      window.location.assign(container.dataset.drill + "&edge=" +
        encodeURIComponent(edge.source + ">" + edge.target));
    });
    container.dataset.nodes = String(data.nodes.length);
    container.dataset.edges = String(data.edges.length);
  }

  function load() {
    var container = document.getElementById("map-graph");
    if (!container) { return; }
    fetch(container.dataset.src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        container.dataset.status = String(response.status);
        return response.ok ? response.json() : null;
      })
      .then(function (data) { if (data) { draw(container, data); } })
      .catch(function () { container.dataset.status = "failed"; });
  }

  function start() {
    var container = document.getElementById("map-graph");
    state.src = container ? container.dataset.src : null;
    state.key = null;
    load();
    if (state.timer) { clearInterval(state.timer); }
    state.timer = setInterval(load, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", start);
  // The filters form swaps #map-body (a new data-src): draw the new map.
  document.addEventListener("htmx:afterSettle", function () {
    var container = document.getElementById("map-graph");
    if (container && container.dataset.src !== state.src) { start(); }
  });
})();
