// flockwatch console: the one script file (the CSP allows no inline script). It draws the
// anomaly-score chart of each element with class "chart" from the JSON block that its
// data-series attribute names (rendered by the server, never run).
(function () {
  "use strict";
  if (typeof uPlot === "undefined") { return; }
  var holders = document.querySelectorAll(".chart[data-series]");
  for (var k = 0; k < holders.length; k++) {
    var block = document.getElementById(holders[k].getAttribute("data-series"));
    if (block) { draw(holders[k], JSON.parse(block.textContent)); }
  }
})();

function draw(holder, s) {
  "use strict";
  var alerting = s.alerting;
  var marks = s.score.map(function (v, i) { return alerting[i] ? v : null; });
  function bands(u) {
    // Alerting windows as red bands behind the lines, from start to end of each window.
    var ctx = u.ctx;
    ctx.save();
    ctx.fillStyle = "rgba(200, 30, 30, 0.12)";
    for (var i = 0; i < s.t.length; i++) {
      if (!alerting[i]) { continue; }
      var x0 = u.valToPos(s.t[i], "x", true);
      var x1 = u.valToPos(s.end[i] || s.t[i], "x", true);
      ctx.fillRect(x0, u.bbox.top, Math.max(2, x1 - x0), u.bbox.height);
    }
    ctx.restore();
  }
  var opts = {
    width: Math.max(320, holder.clientWidth || 1100),
    height: 280,
    scales: { x: { time: true } },
    tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
    series: [
      {},
      { label: "anomaly score", stroke: "#1f5fbf", width: 1.5, points: { show: false } },
      { label: "threshold", stroke: "#888", dash: [6, 4], width: 1, points: { show: false } },
      { label: "alerting window", stroke: "#c81e1e", width: 0,
        points: { show: true, size: 7, fill: "#c81e1e" } }
    ],
    axes: [{}, { label: "score" }],
    hooks: { drawAxes: [bands] }
  };
  var chart = new uPlot(opts, [s.t, s.score, s.threshold, marks], holder);
  holder.setAttribute("data-drawn", String(s.t.length));
  window.addEventListener("resize", function () {
    if (holder.clientWidth) {
      chart.setSize({ width: Math.max(320, holder.clientWidth), height: 280 });
    }
  });
}
