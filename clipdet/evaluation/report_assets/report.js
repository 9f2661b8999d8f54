"use strict";
(function () {
  // Data: embedded JSON (one-file reports) or window.CLIPDET_DATA (report_files/data.js).
  const embedded = document.getElementById("clipdet-data");
  const data = embedded ? JSON.parse(embedded.textContent) : window.CLIPDET_DATA;
  const summary = data.summary;
  const rows = data.rows.map((row, index) => Object.assign({ index: index }, row));
  const detectors = summary.detectors;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function fmt(value, digits) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  }
  function signed(value) {
    return value === null || value === undefined ? "–" : (value > 0 ? "+" : "") + value.toFixed(2);
  }

  // Summary
  const dl = document.getElementById("summary");
  [["images", summary.images], ["scored", summary.scored], ["failed", summary.failed]].concat(
   summary.calibration ? [["verdicts", summary.flagged + " synthetic, " + summary.real + " real, " +
     summary.inconclusive + " inconclusive" + (summary.coverage === null ? "" :
       " (coverage " + summary.coverage.toFixed(2) + ")")], ["calibration", summary.calibration]] :
   [["flagged synthetic", summary.flagged + " (score > " + summary.threshold + ")"]]).concat([
   ["models", summary.models.join(", ")], ["fusion", summary.fusion],
   ["run date", summary.date], ["clipdet", summary.version]]).concat(
    summary.provenance ? [["provenance evidence", Object.keys(summary.provenance).length ?
      Object.keys(summary.provenance).map(function (k) { return k + " " + summary.provenance[k]; }).join(", ") :
      "none found"]] : []).forEach(function (pair) {
    const box = el("div");
    box.appendChild(el("dt", null, pair[0]));
    box.appendChild(el("dd", null, pair[1]));
    dl.appendChild(box);
  });
  document.getElementById("command").textContent = summary.command;

  // each detector's card (trained on, covers, licence, figures, blind spots), linked from "models"
  const cardNames = Object.keys(summary.model_cards || {});
  if (cardNames.length) {
    const section = document.getElementById("model-cards");
    section.hidden = false;
    cardNames.forEach(function (name) {
      const details = el("details", "model-card");
      details.id = "card-" + name;
      details.appendChild(el("summary", null, name));
      details.appendChild(el("pre", null, summary.model_cards[name]));
      section.appendChild(details);
    });
    const models = dl.querySelectorAll("dd")[[...dl.querySelectorAll("dt")].findIndex(function (dt) {
      return dt.textContent === "models"; })];
    models.textContent = "";
    summary.models.forEach(function (name, i) {
      if (i) models.appendChild(document.createTextNode(", "));
      if (summary.model_cards[name]) {
        const link = el("a", null, name);
        link.href = "#card-" + name;
        link.title = name + "'s model card";
        link.addEventListener("click", function () { document.getElementById("card-" + name).open = true; });
        models.appendChild(link);
      } else {
        models.appendChild(document.createTextNode(name));
      }
    });
  }

  // Metrics (labelled lists)
  if (data.metrics) {
    document.getElementById("metrics").hidden = false;
    const holder = document.getElementById("metric-tables");
    Object.keys(data.metrics.tables).forEach(function (metric) {
      const spec = data.metrics.tables[metric];
      const table = el("table", "metrics");
      table.appendChild(el("caption", null, metric === "auc" ? "AUC" : "balanced accuracy (threshold 0)"));
      const head = el("tr");
      head.appendChild(el("th", null, "model"));
      spec.columns.forEach(function (c) { head.appendChild(el("th", null, c)); });
      table.appendChild(head);
      spec.rows.forEach(function (r) {
        const tr = el("tr");
        tr.appendChild(el("th", null, r[0]));
        r.slice(1).forEach(function (v) { tr.appendChild(el("td", null, fmt(v === null ? null : 100 * v, 1))); });
        table.appendChild(tr);
      });
      holder.appendChild(table);
    });
    const plots = document.getElementById("plots");
    data.metrics.plots.forEach(function (p) {
      const img = el("img");
      img.src = p.src;
      img.alt = p.title;
      img.title = p.title;
      plots.appendChild(img);
    });
  }

  // One shared LLR scale for every bar
  let scale = 1;
  rows.forEach(function (row) {
    detectors.concat(["fusion"]).forEach(function (name) {
      const v = name === "fusion" ? row.fusion : row.scores[name];
      if (v !== null && v !== undefined && isFinite(v)) scale = Math.max(scale, Math.abs(v), Math.abs(summary.threshold));
    });
  });
  function position(value) { return 50 + 50 * Math.max(-1, Math.min(1, value / scale)); }

  function bar(label, value) {
    const line = el("div", "bar");
    line.appendChild(el("span", "label", label));
    const track = el("div", "track");
    if (value !== null && value !== undefined) {
      const fill = el("div", "fill " + (value > 0 ? "pos" : "neg"));
      const from = Math.min(position(0), position(value)), to = Math.max(position(0), position(value));
      fill.style.left = from + "%";
      fill.style.width = (to - from) + "%";
      track.appendChild(fill);
    }
    const mark = el("div", "mark");
    mark.style.left = position(summary.threshold) + "%";
    mark.title = "threshold " + summary.threshold;
    track.appendChild(mark);
    line.appendChild(track);
    line.appendChild(el("span", "value", signed(value)));
    return line;
  }

  const lightbox = document.getElementById("lightbox");
  lightbox.addEventListener("click", function () { lightbox.hidden = true; });

  // A video: its facts, a strip of its sampled frames and their scores over time
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    Object.keys(attributes).forEach(function (k) { node.setAttribute(k, attributes[k]); });
    return node;
  }
  function videoPanel(video) {
    const panel = el("div", "video");
    panel.appendChild(el("div", "video-facts",
      video.frames + " frames of " + fmt(video.duration, 1) + " s; largest frame " +
      signed(video.frame_max) + "; temporal " + fmt(video.temporal, 3)));
    if (video.strip && video.strip.length) {
      const strip = el("div", "strip");
      video.strip.forEach(function (f) {
        const img = el("img");
        img.loading = "lazy";
        img.src = f.src;
        img.alt = "frame at " + fmt(f.t, 2) + " s";
        img.title = img.alt;
        strip.appendChild(img);
      });
      panel.appendChild(strip);
    }
    const points = (video.curve || []).filter(function (p) { return p[0] !== null && p[1] !== null; });
    if (points.length) {
      const width = 280, height = 56, span = Math.max(video.duration || 0, points[points.length - 1][0], 1e-6);
      const top = Math.max(scale, Math.max.apply(null, points.map(function (p) { return Math.abs(p[1]); })));
      const y = function (v) { return height / 2 - (height / 2 - 3) * v / top; };
      const plot = svg("svg", { "class": "curve", viewBox: "0 0 " + width + " " + height, preserveAspectRatio: "none" });
      plot.appendChild(svg("line", { x1: 0, x2: width, y1: y(summary.threshold), y2: y(summary.threshold), "class": "threshold" }));
      plot.appendChild(svg("polyline", { points: points.map(function (p) {
        return (width * p[0] / span).toFixed(1) + "," + y(p[1]).toFixed(1);
      }).join(" ") }));
      const title = svg("title", {});
      title.textContent = "frame scores over time (line: the verdict threshold)";
      plot.appendChild(title);
      panel.appendChild(plot);
    }
    return panel;
  }

  // groups of copies (--group): each group's verdict and evidence, its members with their own
  const groupSizes = {};
  rows.forEach(function (row) { if (row.group) groupSizes[row.group] = (groupSizes[row.group] || 0) + 1; });
  if ((summary.groups || []).length) {
    const section = document.getElementById("groups");
    section.hidden = false;
    summary.groups.forEach(function (g) {
      const box = el("div", "copy-group " + (g.verdict || "failed"));
      box.dataset.group = g.group;
      const llrs = Object.keys(g.llrs).map(function (k) { return k + " " + signed(g.llrs[k]); }).join(", ");
      box.appendChild(el("div", "group-head", g.group + ": " + g.size + " copies, " +
        (g.verdict || "not scored") + (g.reason ? " (" + g.reason.replace(/_/g, " ") + ")" : "") +
        "; group LLR " + llrs + "; best copy " + g.best_copy));
      const members = el("div", "members");
      rows.filter(function (row) { return row.group === g.group; }).forEach(function (row) {
        const member = el("figure", "member");
        if (row.thumb) {
          const img = el("img");
          img.loading = "lazy";
          img.src = row.thumb;
          img.alt = row.name;
          member.appendChild(img);
        }
        const own = summary.has_fusion ? row.fusion : row.scores[detectors[0]];
        member.appendChild(el("figcaption", null, row.name + " · " + (row.verdict || "–") + " · LLR " +
          signed(own) + (row.facts ? " · " + row.facts : "")));
        members.appendChild(member);
      });
      box.appendChild(members);
      section.appendChild(box);
    });
  }

  function card(row) {
    const state = row.error ? "failed" : row.verdict;
    const box = el("article", "card " + state);
    box.dataset.index = row.index;
    if (row.thumb) {
      const img = el("img", "thumb");
      img.loading = "lazy";
      img.src = row.thumb;
      img.alt = "thumbnail";
      box.appendChild(img);
    } else {
      box.appendChild(el("div", "placeholder", row.error ? "not readable" : "no preview"));
    }
    const body = el("div");
    body.appendChild(el("div", "name", row.name));
    const badge = el("span", "verdict " + state, row.error ? "failed" : (row.verdict || "–"));
    if (row.reason) badge.title = row.reason.replace(/_/g, " ");
    body.appendChild(badge);
    if (row.reason && row.verdict === "inconclusive") body.appendChild(el("div", "reason", row.reason.replace(/_/g, " ")));
    const bars = el("div", "bars");
    detectors.forEach(function (name) { bars.appendChild(bar(name, row.scores[name])); });
    if (summary.has_fusion) bars.appendChild(bar("fusion", row.fusion));
    body.appendChild(bars);
    row.attribution.forEach(function (a) {
      const parts = a.top.map(function (t) { return t[0] + " " + fmt(100 * t[1], 0) + "%"; });
      body.appendChild(el("div", "attribution",
        a.model + ": " + (a.label || "–") + (parts.length ? " (" + parts.join(", ") + ")" : "") +
        "; unknown-score " + fmt(a.unknown, 2)));
    });
    row.concepts.forEach(function (c) {
      const parts = c.pairs.map(function (p) { return p[1] === null ? p[0] : p[0] + " " + signed(p[1]); });
      const line = el("div", "concepts", c.model + " concepts: " + parts.join(", "));
      line.title = "the concepts with the largest contributions to " + c.model +
        "'s logit (> 0: towards synthetic)";
      body.appendChild(line);
    });
    if (row.provenance.length) {
      const evidence = el("ul", "provenance");
      row.provenance.forEach(function (token) { evidence.appendChild(el("li", null, token)); });
      body.appendChild(evidence);
    }
    if (row.video) body.appendChild(videoPanel(row.video));
    if (row.generator) body.appendChild(el("div", "generator", "generator named: " + row.generator));
    if (row.facts) body.appendChild(el("div", "facts", row.facts));
    if (row.group && (groupSizes[row.group] || 0) > 1) {
      body.appendChild(el("div", "group", "group " + row.group + ": one of " + groupSizes[row.group] + " copies"));
    }
    if (row.error) body.appendChild(el("div", "error", row.error));
    if (row.maps.length) {
      const maps = el("div", "maps");
      row.maps.forEach(function (m) {
        const img = el("img");
        img.loading = "lazy";
        img.src = m.src;
        img.alt = "evidence map of " + m.model;
        img.title = "evidence map of " + m.model + " (mean " + signed(m.mean) + "); click to enlarge";
        img.addEventListener("click", function () {
          document.getElementById("lightbox-image").src = m.src;
          lightbox.hidden = false;
        });
        maps.appendChild(img);
      });
      body.appendChild(maps);
    }
    box.appendChild(body);
    return box;
  }

  // Sorting, filtering, search, pages
  const sort = document.getElementById("sort");
  const keys = (summary.has_fusion ? ["fusion"] : []).concat(detectors);
  keys.forEach(function (k) { sort.appendChild(new Option(k + " (highest first)", k)); });
  sort.appendChild(new Option("file name", "name"));
  sort.appendChild(new Option("input order", "input"));
  const filter = document.getElementById("filter");
  const search = document.getElementById("search");
  let page = 0;

  function valueOf(row, key) {
    const v = key === "fusion" ? row.fusion : row.scores[key];
    return v === null || v === undefined ? -Infinity : v;
  }
  function visible() {
    const text = search.value.trim().toLowerCase();
    const kept = rows.filter(function (row) {
      if (filter.value === "errors" && !row.error) return false;
      if ((filter.value === "synthetic" || filter.value === "real" || filter.value === "inconclusive") && (row.error || row.verdict !== filter.value)) return false;
      return !text || row.name.toLowerCase().indexOf(text) >= 0;
    });
    const key = sort.value;
    if (key === "name") kept.sort(function (a, b) { return a.name < b.name ? -1 : a.name > b.name ? 1 : 0; });
    else if (key !== "input") kept.sort(function (a, b) { return valueOf(b, key) - valueOf(a, key) || a.index - b.index; });
    return kept;
  }
  function render() {
    const kept = visible();
    const pages = Math.max(1, Math.ceil(kept.length / summary.page_rows));
    page = Math.min(page, pages - 1);
    const holder = document.getElementById("cards");
    holder.replaceChildren();
    kept.slice(page * summary.page_rows, (page + 1) * summary.page_rows).forEach(function (row) {
      holder.appendChild(card(row));
    });
    document.getElementById("count").textContent = kept.length + " of " + rows.length + " images";
    document.getElementById("page").textContent = " page " + (page + 1) + " of " + pages + " ";
    document.getElementById("pager").hidden = pages < 2;
  }
  [sort, filter].forEach(function (control) { control.addEventListener("change", function () { page = 0; render(); }); });
  search.addEventListener("input", function () { page = 0; render(); });
  document.getElementById("prev").addEventListener("click", function () { page = Math.max(0, page - 1); render(); });
  document.getElementById("next").addEventListener("click", function () { page += 1; render(); });
  render();
})();
