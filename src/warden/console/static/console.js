// Warden console: the page scripts (the CSP allows no inline script). Charts: every
// element with class "chart" and a data-src draws the JSON series found there with uPlot:
// {"x": [unix seconds...], "series": [{"label": "...", "values": [...]}]}.
(function () {
  "use strict";
  var COLORS = ["#2f5bd3", "#c0392b", "#1e8449", "#b9770e", "#7d3c98"];

  function draw(el) {
    fetch(el.dataset.src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (data) {
        el.textContent = "";
        var series = [{}];
        var columns = [data.x];
        data.series.forEach(function (s, i) {
          series.push({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2,
                        fill: i === 0 ? "rgba(47,91,211,0.08)" : undefined });
          columns.push(s.values);
        });
        var width = Math.max(260, el.clientWidth || 600);
        var usd = el.dataset.format === "usd";
        var yAxis = { size: usd ? 84 : 50 };
        if (usd) {
          yAxis.values = function (u, vals) { return vals.map(function (v) { return "$" + Number(v.toPrecision(2)); }); };
        }
        var plot = new uPlot({ width: width, height: 220, series: series,
                               axes: [{}, yAxis], legend: { show: true } }, columns, el);
        el.dataset.points = String(data.x.length);
        el.dataset.series = String(data.series.length);
        el.dataset.rendered = "1";
        window.addEventListener("resize", function () {
          plot.setSize({ width: Math.max(260, el.clientWidth || 600), height: 220 });
        });
      })
      .catch(function (err) { el.dataset.error = String(err); el.textContent = "Chart unavailable (" + err + ")."; });
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll(".chart[data-src]"), draw);
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
