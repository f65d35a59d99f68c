// The journey map graph: cytoscape + dagre (journeys loop, so a graph layout, not a Sankey).
// Data: the JSON in #map-live[data-graph] (the map API's shape: {"journeys","steps","view","focus",
// "nodes":[{"id","count","starts","ends","pain":[…],"pain_impact","feedback":{"count",
// "mean_rating",…},…}],"edges":[{"source","target","count",
// "duration_s":{"mean","p50","p90"}}]}), part of #map-live, which htmx re-reads while the page
// is open; the graph is redrawn when its numbers change.
(function () {
  "use strict";
  var state = { cy: null, key: null, data: null, draws: 0 };
  window.waypointMap = state;

  function seconds(s) {
    if (s === null || s === undefined) { return ""; }
    if (s < 90) { return Math.round(s) + " s"; }
    if (s < 5400) { return Math.round(s / 60) + " min"; }
    if (s < 172800) { return (s / 3600).toFixed(1) + " h"; }
    return (s / 86400).toFixed(1) + " d";
  }

  function elements(data) {
    var maxNode = Math.max.apply(null, [1].concat(data.nodes.map(function (n) { return n.count || 0; })));
    var maxEdge = Math.max.apply(null, [1].concat(data.edges.map(function (e) { return e.count || 0; })));
    var focus = data.focus ? data.focus.id : null;
    var nodes = data.nodes.map(function (n) {
      // pain: what hurts most there (the quality API's pain points, for the nodes with the
      // most impact); feedback: the node's count and mean rating
      var pain = n.pain && n.pain.length ? n.pain.join("\n") : "";
      var fb = n.feedback && n.feedback.count ? "\n\u2605 " +
        (n.feedback.mean_rating !== null && n.feedback.mean_rating !== undefined
          ? n.feedback.mean_rating.toFixed(1) + " " : "") + "(" + n.feedback.count + ")" : "";
      return { data: {
        id: String(n.id), label: n.id + "\n" + n.count + fb + (pain ? "\n" + pain : ""),
        size: 34 + 60 * Math.sqrt((n.count || 0) / maxNode), count: n.count,
        pain: pain ? "yes" : "no", impact: n.pain_impact || 0,
        feedback: n.feedback ? n.feedback.count : 0, focus: n.id === focus ? "yes" : "no"
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
      "label": "data(label)", "text-wrap": "wrap", "text-valign": "center", "font-size": 12,
      "width": "data(size)", "height": "data(size)", "background-color": "#dbe5fb",
      "border-color": "#2457c5", "border-width": 1, "color": "#1c2330" } },
    { selector: "node[pain = 'yes']", style: { "background-color": "#fbe0de", "border-color": "#b3261e" } },
    { selector: "node[focus = 'yes']", style: { "border-width": 4 } },
    { selector: "edge", style: {
      "width": "data(width)", "curve-style": "bezier", "target-arrow-shape": "triangle",
      "line-color": "#8a9ab8", "target-arrow-color": "#8a9ab8", "label": "data(label)",
      "font-size": 11, "text-background-color": "#fff", "text-background-opacity": 0.8,
      "text-background-padding": 1 } },
    { selector: "edge:loop", style: { "loop-direction": "0deg", "loop-sweep": "-40deg" } }
  ];

  function draw(container, data, key) {
    if (state.cy) { state.cy.destroy(); }
    state.key = key;
    state.data = data;
    state.cy = window.cytoscape({
      container: container, elements: elements(data), style: STYLE,
      layout: { name: "dagre", rankDir: "LR", nodeSep: 40, rankSep: 110 }
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
    state.draws += 1;
    container.dataset.nodes = String(data.nodes.length);
    container.dataset.edges = String(data.edges.length);
    container.dataset.journeys = String(data.journeys);
  }

  function render() {
    var container = document.getElementById("map-graph");
    var source = document.getElementById("map-live");
    if (!container || !source) { return; }
    var key = source.dataset.graph;
    // the same numbers in the same container: keep the drawing (and the reader's zoom)
    if (state.cy && key === state.key && state.cy.container() === container) { return; }
    draw(container, JSON.parse(key), key);
  }

  document.addEventListener("DOMContentLoaded", render);
  // the filters form swaps #map-body; polling swaps #map-live: draw what changed
  document.addEventListener("htmx:afterSettle", render);

  // Journey-quality panels (.quality-panel): htmx loads each when it is first shown
  // ("intersect once"); on the map's beat only the loaded panels on screen are re-read, so a
  // panel nobody looks at costs nothing.
  function onScreen(el) {
    var box = el.getBoundingClientRect();
    return box.width > 0 && box.bottom > 0 && box.top < window.innerHeight;
  }

  function refreshPanels() {
    if (!window.htmx) { return; }
    document.querySelectorAll(".quality-panel[data-loaded]").forEach(function (panel) {
      if (onScreen(panel)) { window.htmx.trigger(panel, "refresh"); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var holder = document.getElementById("map-quality");
    var every = holder ? Number(holder.dataset.refresh) : 0;
    if (every > 0) { window.setInterval(refreshPanels, every * 1000); }
  });
})();
