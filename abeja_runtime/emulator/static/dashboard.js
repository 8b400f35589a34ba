/* abeja-runtime emulator dashboard: login from the URL fragment, live charts (uPlot).
 *
 * No build step, no framework: the server renders the pages; this script
 *  - trades a "#token=..." fragment for the session cookie and removes it from the address bar,
 *  - on a job page, polls the statistics endpoint every second for the points after its cursor,
 *    draws one chart per numeric statistic (one line per stage) and refreshes status/progress,
 *  - on a compare page, does the same for several jobs, one chart per stage and statistic.
 * x is epochs: progress_percentage * num_epochs (fractional within an epoch), else epoch, else
 * the report's number. NaN/"Infinity"/"-Infinity" are null (a gap); an absent value is undefined
 * (the line continues over it). A list of objects (system.gpus) is one line per element,
 * labelled by its "index" ("GPU 1"). Units come from the name's suffix (_percent: %, _bytes: B,
 * KiB ... GiB, _bytes_per_s, _c / temperature: °C, _w / power: W, _s: s) and label the ticks
 * and the legend. Everything from the server is put in the page as text only.
 * State is kept on window.abejaDashboard so that a test can read what the charts hold.
 */
(function () {
  "use strict";

  var POLL_MS = 1000;
  var POLL_DONE_MS = 5000;
  var COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"];
  var STAGE_ORDER = ["train", "validation"];
  var HEAD_KEYS = { epoch: 1, num_epochs: 1, progress_percentage: 1, stages: 1 };

  var state = window.abejaDashboard = {
    page: "", charts: {}, points: 0, polls: 0, pollMs: POLL_MS, ready: false, errors: [],
    jobs: {}, format: function (v, unit, biggest) { return withUnit(v, unit, biggest); }
  };

  function tokenFromFragment() {
    var match = /(?:^#|&)token=([^&]*)/.exec(location.hash || "");
    return match ? decodeURIComponent(match[1]) : null;
  }

  function stripFragment() {
    if (location.hash) {
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function loginFromFragment() {
    var token = tokenFromFragment();
    stripFragment();
    if (!token) { return; }
    var message = document.getElementById("login-message");
    fetch("/_dashboard/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: token })
    }).then(function (response) {
      if (response.status === 204) {
        location.reload();
      } else if (message) {
        message.textContent = "The token in the link is not this emulator's: paste the current one.";
        message.className = "error";
      }
    }).catch(function (error) {
      if (message) { message.textContent = "Could not log in: " + error; }
    });
  }

  // -- statistics to series ---------------------------------------------------------

  function numeric(value) {
    if (typeof value === "number") { return isFinite(value) ? value : null; }
    if (value === "NaN" || value === "Infinity" || value === "-Infinity") { return null; }
    return undefined; // not a numeric statistic
  }

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  /* "GPU 1" for system.gpus[k] with "index": 1; "<list> <k>" for other lists. */
  function elementLabel(listKey, item, position) {
    var id = isObject(item) && typeof item.index === "number" ? item.index : position;
    return (listKey === "gpus" ? "GPU" : listKey) + " " + id;
  }

  /* Pushes [path, value, line] per numeric leaf; a list's elements become lines. */
  function flatten(value, prefix, out, line) {
    if (isObject(value)) {
      Object.keys(value).forEach(function (key) {
        if (line && key === "index") { return; } // an element's identity, not a figure
        flatten(value[key], prefix ? prefix + "." + key : key, out, line);
      });
    } else if (Array.isArray(value)) {
      var listKey = prefix.split(".").pop();
      value.forEach(function (item, i) {
        var label = elementLabel(listKey, item, i);
        flatten(item, prefix, out, line ? line + " · " + label : label);
      });
    } else {
      var n = numeric(value);
      if (n !== undefined) { out.push([prefix, n, line || ""]); }
    }
  }

  /* [[metric, line, value], ...] for one statistics document; line: the stage, a list
   * element ("GPU 0"), both ("train · GPU 0"), or "" for a plain top-level value. */
  function numericValues(doc) {
    var out = [];
    if (!isObject(doc)) { return out; }
    if (isObject(doc.stages)) {
      var names = STAGE_ORDER.filter(function (s) { return s in doc.stages; });
      Object.keys(doc.stages).forEach(function (s) { if (names.indexOf(s) < 0) { names.push(s); } });
      names.forEach(function (stage) {
        var pairs = [];
        flatten(doc.stages[stage], "", pairs, "");
        pairs.forEach(function (p) { out.push([p[0], p[2] ? stage + " · " + p[2] : stage, p[1]]); });
      });
    }
    Object.keys(doc).forEach(function (key) {
      if (HEAD_KEYS[key]) { return; }
      var pairs = [];
      flatten(doc[key], key, pairs, "");
      pairs.forEach(function (p) { out.push([p[0], p[2], p[1]]); });
    });
    return out;
  }

  function xOf(doc, index) {
    var p = doc ? doc.progress_percentage : undefined;
    var total = doc ? doc.num_epochs : undefined;
    if (typeof p === "number" && typeof total === "number" && total > 0) { return p * total; }
    if (doc && typeof doc.epoch === "number") { return doc.epoch; }
    return index + 1;
  }

  /* One job's history as columns: xs and, per series key, values aligned with xs. */
  function Series() {
    this.xs = [];
    this.columns = {};  // key -> values
    this.order = [];    // keys in first-seen order
    this.meta = {};     // key -> {metric, stage}
  }
  Series.prototype.add = function (doc) {
    var index = this.xs.length;
    this.xs.push(xOf(doc, index));
    var seen = {};
    var self = this;
    numericValues(doc).forEach(function (v) {
      var key = v[0] + "\u0000" + v[1];
      if (!(key in self.columns)) {
        self.columns[key] = new Array(index).fill(undefined);
        self.order.push(key);
        self.meta[key] = { metric: v[0], stage: v[1] };
      }
      self.columns[key].push(v[2]);
      seen[key] = true;
    });
    this.order.forEach(function (key) {
      if (!seen[key]) { self.columns[key].push(undefined); }
    });
  };

  // -- charts -----------------------------------------------------------------------

  function chartsBox() { return document.getElementById("charts"); }

  function stageColor(stage, i) {
    if (stage === "train") { return COLORS[0]; }
    if (stage === "validation") { return COLORS[1]; }
    return COLORS[(i + 2) % COLORS.length];
  }

  /* A number for people: 0.0001 as 1e-4, 140000000 as 140M, never 1.4e+8. */
  function plain(v, digits) {
    var a = Math.abs(v);
    if (a !== 0 && a < 1e-3) { return +v.toExponential(digits - 1) + ""; }
    var big = [[1e12, "T"], [1e9, "G"], [1e6, "M"]];
    for (var i = 0; i < big.length; i++) {
      if (a >= big[i][0] && a < 1e15) { return +(v / big[i][0]).toPrecision(digits) + big[i][1]; }
    }
    return String(+v.toPrecision(digits));
  }

  function fmt(v) {
    if (v === null || v === undefined) { return "–"; }
    return plain(v, 6);
  }

  /* The unit of a metric, from its name's last part. */
  function unitOf(metric) {
    var name = metric.split(".").pop();
    if (/percent$/.test(name)) { return "%"; }
    if (/bytes_per_s$/.test(name)) { return "B/s"; }
    if (/bytes$/.test(name)) { return "B"; }
    if (/(^|_)c$|temperature$/.test(name)) { return "°C"; }
    if (/(^|_)w$|power$/.test(name)) { return "W"; }
    if (/(^|_)s$|seconds$/.test(name)) { return "s"; }
    return "";
  }

  var BINARY = [["TiB", 1099511627776], ["GiB", 1073741824], ["MiB", 1048576], ["KiB", 1024]];

  /* [suffix, divisor] for values up to `biggest` in `unit` (bytes in binary units). */
  function scaleFor(unit, biggest) {
    if (unit === "B" || unit === "B/s") {
      var per = unit === "B/s" ? "/s" : "";
      for (var i = 0; i < BINARY.length; i++) {
        if (biggest >= BINARY[i][1]) { return [BINARY[i][0] + per, BINARY[i][1]]; }
      }
    }
    return [unit, 1];
  }

  /* v with its unit, scaled as `biggest` is ("1.5 GiB", "97 %", "71 °C"). */
  function withUnit(v, unit, biggest) {
    if (v === null || v === undefined) { return "–"; }
    var scale = scaleFor(unit, Math.abs(biggest === undefined ? v : biggest));
    var text = scale[1] === 1 ? plain(v, 4) : String(+(v / scale[1]).toPrecision(4));
    return scale[0] ? text + " " + scale[0] : text;
  }

  /* Byte axes tick at powers of two (0.25, 0.5, 1 GiB), not at 1e8 steps. */
  var BINARY_INCRS = [];
  for (var pow = 0; pow <= 50; pow++) { BINARY_INCRS.push(Math.pow(2, pow)); }

  function yAxis(unit) {
    var axis = {
      values: function (u, vals) {
        var biggest = 0;
        vals.forEach(function (v) { if (v !== null && Math.abs(v) > biggest) { biggest = Math.abs(v); } });
        return vals.map(function (v) { return withUnit(v, unit, biggest); });
      },
      // wide enough for its longest label: never clipped
      size: function (u, values) {
        var longest = 0;
        (values || []).forEach(function (t) { longest = Math.max(longest, String(t).length); });
        return Math.max(40, longest * 7 + 18);
      }
    };
    if (unit === "B" || unit === "B/s") { axis.incrs = BINARY_INCRS; }
    return axis;
  }

  function makeChart(key, title, labels, colors, data) {
    var box = chartsBox();
    var empty = document.getElementById("charts-empty");
    if (empty) { empty.remove(); }
    var holder = document.createElement("figure");
    holder.className = "chart";
    holder.dataset.chart = key;
    box.appendChild(holder);
    var width = Math.max(320, Math.min(540, (box.clientWidth || 540) - 8));
    var unit = unitOf(key.split("\u0000")[0]);
    var series = [{ label: "epoch", value: function (u, v) { return fmt(v); } }];
    labels.forEach(function (label, i) {
      series.push({
        label: label, stroke: colors[i], width: 1.5, spanGaps: false,
        value: function (u, v) { return withUnit(v, unit); }
      });
    });
    var chart = new uPlot({
      title: unit ? title + " (" + scaleFor(unit, 0)[0].replace(/^B/, "bytes") + ")" : title,
      width: width, height: 240,
      scales: { x: { time: false } },
      axes: [{ label: "epoch" }, yAxis(unit)],
      series: series
    }, data, holder);
    chart.abejaLabels = labels.slice();
    chart.abejaUnit = unit;
    state.charts[key] = chart;
    return chart;
  }

  function setChart(key, title, labels, colors, data) {
    var chart = state.charts[key];
    if (chart && chart.abejaLabels.join("\u0000") === labels.join("\u0000")) {
      chart.setData(data);
      return;
    }
    if (chart) {
      var old = chart.root.parentNode;
      chart.destroy();
      if (old) { old.remove(); }
    }
    makeChart(key, title, labels, colors, data);
  }

  function drawJob(series) {
    var byMetric = {};
    var metrics = [];
    series.order.forEach(function (key) {
      var m = series.meta[key].metric;
      if (!(m in byMetric)) { byMetric[m] = []; metrics.push(m); }
      byMetric[m].push(key);
    });
    metrics.forEach(function (metric) {
      var keys = byMetric[metric].slice().sort(function (a, b) {
        var sa = series.meta[a].stage, sb = series.meta[b].stage;
        var ra = STAGE_ORDER.indexOf(sa), rb = STAGE_ORDER.indexOf(sb);
        ra = ra < 0 ? 9 : ra; rb = rb < 0 ? 9 : rb;
        return ra !== rb ? ra - rb : sa.localeCompare(sb, "en", { numeric: true });
      });
      var labels = keys.map(function (k) { return series.meta[k].stage || metric; });
      var colors = keys.map(function (k, i) { return stageColor(series.meta[k].stage, i); });
      var data = [series.xs].concat(keys.map(function (k) { return series.columns[k]; }));
      setChart(metric, metric, labels, colors, data);
    });
  }

  // -- the job's facts ----------------------------------------------------------------

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; }
  }

  function setTime(id, iso) {
    var el = document.getElementById(id);
    if (!el) { return; }
    el.textContent = iso ? iso.slice(0, 19).replace("T", " ") + " UTC" : "—";
    if (iso) { el.setAttribute("datetime", iso); }
  }

  function duration(start, end) {
    if (!start) { return "—"; }
    var finish = end ? Date.parse(end) : Date.now();
    var s = Math.max(0, Math.floor((finish - Date.parse(start)) / 1000));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (h) { return h + " h " + pad(m) + " min " + pad(r) + " s"; }
    if (m) { return m + " min " + pad(r) + " s"; }
    return r + " s";
  }

  function progressText(doc) {
    if (!isObject(doc)) { return "no statistics yet"; }
    var parts = [];
    if (typeof doc.epoch === "number") {
      parts.push("epoch " + doc.epoch + (typeof doc.num_epochs === "number" ? "/" + doc.num_epochs : ""));
    }
    if (typeof doc.progress_percentage === "number") {
      parts.push(Math.round(doc.progress_percentage * 100) + " %");
    }
    return parts.length ? parts.join(" · ") : "—";
  }

  /* progress_percentage, else epoch / num_epochs (a job that reports epochs only), in [0, 1]. */
  function progressFraction(doc) {
    var f = doc.progress_percentage;
    if (typeof f !== "number" || !isFinite(f)) {
      if (typeof doc.epoch !== "number" || typeof doc.num_epochs !== "number" || !(doc.num_epochs > 0)) {
        return null;
      }
      f = doc.epoch / doc.num_epochs;
    }
    return Math.min(1, Math.max(0, f));
  }

  function valueText(v) {
    if (v === null || v === undefined) { return "—"; }
    return typeof v === "string" ? v : JSON.stringify(v);
  }

  function flattenAll(value, prefix, out) {
    if (isObject(value)) {
      Object.keys(value).forEach(function (k) { flattenAll(value[k], prefix ? prefix + "." + k : k, out); });
    } else if (Array.isArray(value) && value.length && value.every(isObject)) {
      // a list of objects (system.gpus): one row per figure, "gpus[0].utilization_percent"
      value.forEach(function (item, i) { flattenAll(item, prefix + "[" + i + "]", out); });
    } else {
      out.push([prefix, value]);
    }
  }

  function renderLatest(doc) {
    var table = document.getElementById("latest-statistics");
    if (!table || !isObject(doc)) { return; }
    var rows = [];
    if (isObject(doc.stages)) {
      var names = STAGE_ORDER.filter(function (s) { return s in doc.stages; });
      Object.keys(doc.stages).forEach(function (s) { if (names.indexOf(s) < 0) { names.push(s); } });
      names.forEach(function (stage) {
        var pairs = [];
        flattenAll(doc.stages[stage], "", pairs);
        pairs.forEach(function (p) { rows.push([stage, p[0], valueText(p[1])]); });
      });
    }
    Object.keys(doc).forEach(function (key) {
      if (HEAD_KEYS[key]) { return; }
      var pairs = [];
      flattenAll(doc[key], key, pairs);
      pairs.forEach(function (p) { rows.push(["—", p[0], valueText(p[1])]); });
    });
    var body = document.createElement("tbody");
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      r.forEach(function (cell, i) {
        var td = document.createElement("td");
        td.textContent = i === 0 && cell === "" ? "—" : cell;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.replaceChild(body, table.tBodies[0]);
  }

  function renderJob(job, lastDoc) {
    var status = document.getElementById("job-status");
    if (status && job.status) {
      status.textContent = job.status;
      status.className = "status status-" + job.status;
    }
    setText("job-status-message", job.status_message || "—");
    setTime("job-start", job.start_time);
    setTime("job-completion", job.completion_time);
    setText("job-duration", duration(job.start_time, job.completion_time));
    if (lastDoc) {
      var bar = document.getElementById("job-progress");
      var fraction = progressFraction(lastDoc);
      if (bar && fraction !== null) { bar.value = fraction; }
      setText("job-progress-text", progressText(lastDoc));
      renderLatest(lastDoc);
    }
  }

  // -- polling ------------------------------------------------------------------------

  /* Polls one job's statistics; calls onPoints(points, job) for every answer. */
  function poller(url, onPoints) {
    var cursor = 0;
    function next(delay) { setTimeout(tick, delay); }
    function tick() {
      fetch(url + "?after=" + cursor, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.status === 401) { location.reload(); return null; }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (body) {
          if (!body) { return; }
          cursor = body.next;
          state.polls += 1;
          onPoints(body.points, body.job);
          next(body.more ? 0 : (body.job.terminal ? POLL_DONE_MS : POLL_MS));
        })
        .catch(function (error) {
          state.errors.push(String(error));
          next(POLL_DONE_MS);
        });
    }
    tick();
  }

  function startJobPage(main) {
    var series = new Series();
    var last = null;
    state.series = series;
    poller(main.dataset.statisticsUrl, function (points, job) {
      points.forEach(function (p) { series.add(p.statistics); last = p.statistics; });
      state.points += points.length;
      if (points.length) { drawJob(series); }
      renderJob(job, points.length ? last : null);
      state.ready = true;
    });
    window.addEventListener("resize", function () { resizeAll(); });
  }

  function startComparePage() {
    var items = Array.prototype.slice.call(document.querySelectorAll(".compare-job"));
    var jobs = items.map(function (li, i) {
      var swatch = li.querySelector(".swatch");
      if (swatch) { swatch.style.background = COLORS[i % COLORS.length]; }
      return { id: li.dataset.jobId, url: li.dataset.statisticsUrl, series: new Series(), color: COLORS[i % COLORS.length] };
    });
    var answered = 0;
    function draw() {
      var keys = [];
      jobs.forEach(function (job) {
        job.series.order.forEach(function (k) { if (keys.indexOf(k) < 0) { keys.push(k); } });
      });
      keys.forEach(function (key) {
        var tables = [];
        var labels = [];
        var colors = [];
        var meta = null;
        jobs.forEach(function (job) {
          var s = job.series;
          if (!(key in s.columns)) { return; }
          meta = s.meta[key];
          var xs = [], ys = [];
          s.columns[key].forEach(function (v, i) {
            if (v !== undefined) { xs.push(s.xs[i]); ys.push(v); }
          });
          tables.push([xs, ys]);
          labels.push(job.id);
          colors.push(job.color);
        });
        var title = meta.stage ? meta.metric + " · " + meta.stage : meta.metric;
        setChart(key, title, labels, colors, uPlot.join(tables));
      });
    }
    jobs.forEach(function (job) {
      state.jobs[job.id] = job.series;
      var first = true;
      poller(job.url, function (points) {
        points.forEach(function (p) { job.series.add(p.statistics); });
        state.points += points.length;
        if (first) { first = false; answered += 1; }
        if (points.length) { draw(); }
        if (answered === jobs.length) { state.ready = true; }
      });
    });
  }

  function resizeAll() {
    var box = chartsBox();
    if (!box) { return; }
    var width = Math.max(320, Math.min(540, box.clientWidth - 8));
    Object.keys(state.charts).forEach(function (k) { state.charts[k].setSize({ width: width, height: 240 }); });
  }

  function start() {
    var main = document.querySelector("main");
    state.page = main ? main.dataset.page : "";
    if (state.page === "login") { loginFromFragment(); return; }
    stripFragment(); // already logged in: the token must not stay in the address bar
    if (typeof uPlot === "undefined") { return; }
    if (state.page === "job") { startJobPage(main); }
    if (state.page === "compare") { startComparePage(); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
