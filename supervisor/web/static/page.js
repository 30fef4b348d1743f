// The status page's script: fetches the data the page shows every few seconds and
// redraws it (no reload), and keeps the QR image fresh while the session needs one.
// Text only ever goes in through textContent: nothing from the API becomes HTML.
"use strict";
(function () {
  var body = document.body;
  var kind = body.dataset.page;
  if (!kind) { return; }
  var every = Math.max(0.5, parseFloat(body.dataset.refresh || "1")) * 1000;
  var GROUPS = { healthy: "healthy", starting: "recovering", unhealthy: "recovering",
    verifying: "recovering", unknown: "recovering", needs_person: "needs_person",
    gave_up: "gave_up", gone: "gone" };

  function span(seconds) {
    var s = Math.round(Math.abs(seconds));
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m" + two(s % 60) + "s"; }
    if (s < 86400) { return Math.floor(s / 3600) + "h" + two(Math.floor(s % 3600 / 60)) + "m"; }
    return Math.floor(s / 86400) + "d" + two(Math.floor(s % 86400 / 3600)) + "h";
  }
  function age(since, now) { return since ? span((Date.parse(now) - Date.parse(since)) / 1000) : "\u2013"; }
  function later(seconds) {
    if (seconds === null || seconds === undefined) { return "\u2013"; }
    return seconds >= 0.5 ? "in " + span(seconds) : "now";
  }
  function dash(value) { return value === null || value === undefined || value === "" ? "\u2013" : String(value); }
  function paused(s, long) {
    if (!s.paused) { return "no"; }
    return "by " + s.paused_by + (long ? " at " + s.paused_at : "");
  }
  function cells(s, now) {
    return [["Name", null], ["ID", s.id], ["Status", dash(s.status)], ["Class", s["class"]],
      ["Phase", s.phase], ["In state", age(s.since, now)], ["Attempts", String(s.attempts)],
      ["Next attempt", later(s.next_attempt_in)], ["Last outcome", dash(s.last_outcome)],
      ["Paused", paused(s, false)]];
  }
  function row(s, now) {
    var tr = document.createElement("tr");
    tr.className = "g-" + (GROUPS[s.phase] || "recovering");
    tr.dataset.id = s.id;
    cells(s, now).forEach(function (cell) {
      var td = document.createElement("td");
      td.dataset.label = cell[0];
      if (cell[0] === "Name") {
        var a = document.createElement("a");
        a.href = "/sessions/" + encodeURIComponent(s.id);
        a.textContent = s.name || s.id;
        td.appendChild(a);
      } else {
        if (cell[0] === "ID") { td.className = "id"; }
        td.textContent = cell[1];
      }
      tr.appendChild(td);
    });
    return tr;
  }

  function drawIndex(data) {
    var rows = document.getElementById("rows");
    var fresh = document.createDocumentFragment();
    data.sessions.forEach(function (s) { fresh.appendChild(row(s, data.now)); });
    rows.replaceChildren(fresh);
    Object.keys(data.summary).forEach(function (key) {
      var count = document.querySelector('.count[data-group="' + key + '"]');
      if (count) {
        count.querySelector("b").textContent = String(data.summary[key]);
        count.classList.toggle("zero", data.summary[key] === 0);
      }
    });
    var matched = document.getElementById("matched");
    matched.textContent = data.matched + " of " + data.total + " session(s)" +
      (data.pages > 1 ? ", page " + data.page + " of " + data.pages : "");
  }

  var qr = document.getElementById("qr");
  var qrImage = document.getElementById("qr-image");
  var qrTimer = null;
  function showQr(needed) {
    if (!qr) { return; }
    if (needed) {
      qr.hidden = false;
      if (!qrImage.getAttribute("src")) { qrImage.src = qr.dataset.src + "?t=" + Date.now(); }
      if (qrTimer === null) {
        qrTimer = setInterval(function () { qrImage.src = qr.dataset.src + "?t=" + Date.now(); },
          Math.max(5, parseFloat(qr.dataset.every || "15")) * 1000);
      }
    } else {
      qr.hidden = true;
      qrImage.removeAttribute("src");
      if (qrTimer !== null) { clearInterval(qrTimer); qrTimer = null; }
    }
  }

  function drawSession(data) {
    var s = data.session;
    var shown = { id: s.id, status: dash(s.status), "class": s["class"], phase: s.phase,
      since: age(s.since, data.now), attempts: String(s.attempts),
      next_attempt_in: later(s.next_attempt_in), last_outcome: dash(s.last_outcome),
      paused: paused(s, true) };
    Object.keys(shown).forEach(function (key) {
      var dd = document.querySelector('#facts [data-key="' + key + '"]');
      if (dd) { dd.textContent = shown[key]; }
    });
    showQr(s.phase === "needs_person");
    // Only the action that applies: pause while supervised, resume while paused.
    var pause = document.querySelector('form[data-action="pause"]');
    var resume = document.querySelector('form[data-action="resume"]');
    if (pause) { pause.hidden = Boolean(s.paused); }
    if (resume) { resume.hidden = !s.paused; }
  }

  function poll() {
    fetch(body.dataset.api, { credentials: "same-origin", cache: "no-store",
      headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (data) {
        if (data) { (kind === "index" ? drawIndex : drawSession)(data); }
      })
      .catch(function () { /* the daemon is restarting: try again at the next turn */ })
      .finally(function () { setTimeout(poll, every); });
  }
  if (kind === "session") { showQr(qr && !qr.hidden); }
  setTimeout(poll, every);
}());
