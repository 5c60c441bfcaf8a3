/* Imagegate dashboard: copy buttons, confirmations, charts (Chart.js, vendored), the
   playground's input images (choose, drop or paste) and live progress. Small and
   dependency-free apart from Chart.js; no inline scripts (CSP). */
(function () {
  "use strict";

  var TIER_COLORS = { fast: "#3047d6", standard: "#0f9d58", ultra: "#b26a00" };
  window.imagegateCharts = {};

  function copyButtons() {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var text = document.getElementById(button.dataset.copy).textContent;
        var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done);
        } else {
          var area = document.createElement("textarea");
          area.value = text; document.body.appendChild(area); area.select();
          document.execCommand("copy"); area.remove(); done();
        }
      });
    });
  }

  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
      });
    });
  }

  function chartConfig(kind, data) {
    var base = { responsive: true, maintainAspectRatio: false, animation: false,
                 plugins: { legend: { position: "bottom" } } };
    if (kind === "images-by-tier") {
      return { type: "bar", data: { labels: data.labels, datasets: Object.keys(data.tiers).map(function (tier) {
        return { label: tier, data: data.tiers[tier], backgroundColor: TIER_COLORS[tier] || "#888" };
      }) }, options: Object.assign(base, { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } }) };
    }
    if (kind === "latency") {
      return { type: "line", data: { labels: data.labels, datasets: [
        { label: "p50 ms", data: data.p50, borderColor: "#3047d6", spanGaps: true },
        { label: "p95 ms", data: data.p95, borderColor: "#b42318", spanGaps: true }
      ] }, options: Object.assign(base, { scales: { y: { beginAtZero: true } } }) };
    }
    if (kind === "revenue") {
      return { type: "line", data: { labels: data.labels, datasets: [
        { label: "revenue", data: data.revenue, borderColor: "#0f9d58" },
        { label: "upstream cost", data: data.upstream_cost, borderColor: "#b42318" }
      ] }, options: Object.assign(base, { scales: { y: { beginAtZero: true } } }) };
    }
    return null;
  }

  function charts() {
    if (typeof window.Chart === "undefined") { return; }
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var data = JSON.parse(document.getElementById(canvas.dataset.source).textContent);
      var config = chartConfig(canvas.dataset.chart, data);
      if (config) { window.imagegateCharts[canvas.id] = new window.Chart(canvas, config); }
    });
  }

  function fact(list, name, value) {
    var dt = document.createElement("dt"); dt.textContent = name;
    var dd = document.createElement("dd"); dd.textContent = value === null || value === undefined ? "–" : value;
    list.appendChild(dt); list.appendChild(dd);
  }

  function showJob(job, detailUrl) {
    var status = document.getElementById("playground-status");
    var facts = document.getElementById("playground-facts");
    var gallery = document.getElementById("playground-images");
    status.textContent = job.status === "succeeded" ? "Done." : job.status === "failed" ? "Failed." : (job.status === "running" ? "Generating…" : "Queued…");
    if (job.status === "queued" || job.status === "running") { return false; }
    facts.textContent = ""; gallery.textContent = "";
    fact(facts, "Served tier", job.served_tier);
    fact(facts, "Model", job.model);
    fact(facts, "Latency", job.latency_ms === null ? null : job.latency_ms + " ms");
    fact(facts, "Cost", job.usage.amount + " " + job.usage.currency.toUpperCase());
    if (job.error) { fact(facts, "Error", job.error.code + ": " + job.error.message); }
    var inputs = document.getElementById("playground-inputs");
    var inputsFigure = document.getElementById("playground-inputs-figure");
    inputs.textContent = "";
    (job.inputs || []).forEach(function (item, index) {
      if (!item.url) { return; }
      var img = document.createElement("img");
      img.src = item.url; img.className = "input";
      img.alt = item.role === "mask" ? "Mask" : "Input image " + (index + 1);
      inputs.appendChild(img);
    });
    inputsFigure.hidden = !inputs.children.length;
    job.images.forEach(function (image, index) {
      if (image.filtered) {
        var note = document.createElement("div"); note.className = "filtered";
        note.textContent = "Filtered by the safety system (not billed)"; gallery.appendChild(note); return;
      }
      var img = document.createElement("img");
      img.src = image.url; img.alt = "Generated image " + (index + 1); img.className = "generated";
      img.width = image.width || 256; img.height = image.height || 256;
      gallery.appendChild(img);
    });
    var link = document.createElement("a"); link.href = detailUrl; link.textContent = "Open the job";
    status.appendChild(document.createTextNode(" ")); status.appendChild(link);
    return true;
  }

  /* The file input is the one source of truth: dropped or pasted images are added to its
     FileList (through a DataTransfer), so the form posts them like chosen ones. */
  function inputImages(form) {
    var input = document.getElementById("playground-images-input");
    var zone = document.getElementById("playground-dropzone");
    var previews = document.getElementById("playground-input-previews");
    var clear = document.getElementById("playground-clear-images");
    if (!input || !zone) { return; }
    var accepted = ["image/png", "image/jpeg", "image/webp"];
    var render = function () {
      previews.textContent = "";
      Array.prototype.forEach.call(input.files, function (file, index) {
        var img = document.createElement("img");
        img.src = URL.createObjectURL(file); img.alt = "Input image " + (index + 1) + ": " + file.name;
        previews.appendChild(img);
      });
      clear.hidden = !input.files.length;
    };
    var add = function (files) {
      var transfer = new DataTransfer();
      Array.prototype.forEach.call(input.files, function (file) { transfer.items.add(file); });
      Array.prototype.forEach.call(files, function (file) {
        if (accepted.indexOf(file.type) >= 0) { transfer.items.add(file); }
      });
      input.files = transfer.files;
      render();
    };
    input.addEventListener("change", render);
    zone.addEventListener("dragover", function (event) { event.preventDefault(); zone.classList.add("dragging"); });
    zone.addEventListener("dragleave", function () { zone.classList.remove("dragging"); });
    zone.addEventListener("drop", function (event) {
      event.preventDefault(); zone.classList.remove("dragging");
      if (event.dataTransfer && event.dataTransfer.files) { add(event.dataTransfer.files); }
    });
    document.addEventListener("paste", function (event) {
      var items = (event.clipboardData && event.clipboardData.files) || [];
      if (items.length) { event.preventDefault(); add(items); }
    });
    clear.addEventListener("click", function () { input.value = ""; render(); });
  }

  function playground() {
    var form = document.getElementById("playground-form");
    if (!form) { return; }
    inputImages(form);
    var errorBox = document.getElementById("playground-error");
    var result = document.getElementById("playground-result");
    var button = form.querySelector("button[type=submit]");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      errorBox.hidden = true; button.disabled = true;
      fetch(form.action || window.location.href, {
        method: "POST", body: new FormData(form), credentials: "same-origin",
        headers: { "X-Requested-With": "fetch", "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value }
      }).then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      }).then(function (answer) {
        if (!answer.ok) {
          var messages = [];
          Object.keys(answer.body.errors || {}).forEach(function (field) {
            messages.push((field === "__all__" ? "" : field + ": ") + answer.body.errors[field].join(" "));
          });
          errorBox.textContent = messages.join(" ") || "The request failed.";
          errorBox.hidden = false; button.disabled = false; return;
        }
        result.hidden = false;
        document.getElementById("playground-status").textContent = "Queued…";
        document.getElementById("playground-facts").textContent = "";
        document.getElementById("playground-images").textContent = "";
        var poll = function () {
          fetch(answer.body.status_url, { credentials: "same-origin" }).then(function (r) { return r.json(); })
            .then(function (job) {
              if (showJob(job, answer.body.detail_url)) { button.disabled = false; } else { setTimeout(poll, 500); }
            }).catch(function () { setTimeout(poll, 2000); });
        };
        poll();
      }).catch(function () {
        errorBox.textContent = "Network error; try again."; errorBox.hidden = false; button.disabled = false;
      });
    });
  }

  function jobDetail() {
    var live = document.getElementById("job-live");
    if (!live) { return; }
    var poll = function () {
      fetch(live.dataset.statusUrl, { credentials: "same-origin" }).then(function (r) { return r.json(); })
        .then(function (job) {
          if (["succeeded", "failed", "canceled"].indexOf(job.status) >= 0) { window.location.reload(); }
          else { setTimeout(poll, 1000); }
        }).catch(function () { setTimeout(poll, 3000); });
    };
    setTimeout(poll, 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    copyButtons(); confirmations(); charts(); playground(); jobDetail();
  });
})();
