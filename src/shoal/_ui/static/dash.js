// shoal dashboard: live updates and charts. Every page reads fine without this file
// (server-rendered HTML); with it, a server-sent event announces each change and the
// page's live sections ([data-live]) are swapped for fresh ones, keeping focus, open
// <details> and scroll; charts are drawn with uPlot from the JSON the page carries.
(function () {
  "use strict";
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
  var plots = [];

  function drawCharts() {
    plots.forEach(function (p) { p.destroy(); });
    plots = [];
    if (typeof uPlot === "undefined") return;
    document.querySelectorAll("script.chart-data").forEach(function (script) {
      var data = JSON.parse(script.textContent || "[]");
      var scope = script.parentElement;
      data.forEach(function (c, i) {
        var fig = scope.querySelector('figure.chart[data-chart="' + i + '"] .plot');
        if (!fig) return;
        var width = Math.max(Math.min(fig.clientWidth || 600, 900), 260);
        var series = [{ label: c.x_label || "iteration" }];
        c.lines.forEach(function (line, j) {
          var mean = line[0] === "mean";
          series.push({ label: line[0], stroke: mean ? "#000" : COLORS[j % COLORS.length],
                        width: mean ? 2.5 : 1.5, dash: mean ? [6, 4] : undefined,
                        spanGaps: true });
        });
        var opts = { width: width, height: 240, series: series,
                     scales: { x: { time: false } },
                     axes: [{ label: c.x_label || "iteration", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, {}] };
        var rows = [c.x].concat(c.lines.map(function (l) { return l[1]; }));
        plots.push(new uPlot(opts, rows, fig));
        fig.parentElement.classList.add("drawn");
      });
    });
  }

  function openDetails(root) {
    var open = {};
    root.querySelectorAll("details[open]").forEach(function (d, i) {
      open[d.querySelector("summary") ? d.querySelector("summary").textContent : i] = true;
    });
    return open;
  }

  function edited(root) {
    return Array.prototype.some.call(root.querySelectorAll("input, select, textarea"), function (c) {
      if (c.tagName === "SELECT") {
        var initial = 0; // a select with no option marked selected shows its first
        Array.prototype.forEach.call(c.options, function (o, i) { if (o.defaultSelected) initial = i; });
        return c.selectedIndex !== initial;
      }
      if (c.type === "checkbox" || c.type === "radio") return c.checked !== c.defaultChecked;
      return c.type !== "hidden" && c.value !== c.defaultValue;
    });
  }

  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin",
                          headers: { "Accept": "text/html", "X-Shoal-Live": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (!fresh || fresh.innerHTML === el.innerHTML) return;
          if (el.contains(document.activeElement)) return; // never pull focus away
          if (edited(el)) return; // nor a choice the user has not submitted yet
          var open = openDetails(el);
          el.replaceWith(fresh);
          fresh.querySelectorAll("details").forEach(function (d) {
            var s = d.querySelector("summary");
            if (s && open[s.textContent]) d.open = true;
          });
        });
        drawCharts();
        var n = document.body.dataset.updates = String(+(document.body.dataset.updates || 0) + 1);
        state("live · " + n + " update" + (n === "1" ? "" : "s"));
      })
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  function state(text) {
    var el = document.getElementById("live-state");
    if (el) el.textContent = text;
  }

  function listen() {
    var url = document.body.dataset.events;
    if (!url || typeof EventSource === "undefined") return;
    var es = new EventSource(url);
    es.onopen = function () { state("live"); };
    es.onmessage = refresh;
    es.onerror = function () { state("reconnecting…"); };
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.documentElement.classList.add("js");
    drawCharts();
    listen();
  });
})();
