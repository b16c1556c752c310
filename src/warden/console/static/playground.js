// Warden console: the playground streams a reply (SSE over fetch, since EventSource
// cannot POST). Text deltas are appended as they arrive; the run's link at the end.
(function () {
  "use strict";

  function parseFrames(buffer, onEvent) {
    var frames = buffer.split("\n\n");
    var rest = frames.pop();
    frames.forEach(function (raw) {
      var type = "message", data = "";
      raw.split("\n").forEach(function (line) {
        if (line.indexOf("event: ") === 0) { type = line.slice(7); }
        else if (line.indexOf("data: ") === 0) { data += line.slice(6); }
      });
      if (data) { onEvent(type, JSON.parse(data)); }
    });
    return rest;
  }

  function init() {
    var form = document.getElementById("playground");
    if (!form || !window.fetch || !window.TextDecoder) { return; }
    var reply = document.getElementById("reply");
    var meta = document.getElementById("reply-meta");
    var status = document.getElementById("playground-status");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var body = new URLSearchParams(new FormData(form));
      reply.textContent = ""; meta.textContent = ""; reply.dataset.done = "false";
      status.textContent = "Streaming…";
      fetch(form.dataset.stream, { method: "POST", body: body, credentials: "same-origin",
                                   headers: { "Accept": "text/event-stream" } })
        .then(function (r) {
          if (!r.ok || !r.body) {
            return r.text().then(function (html) {
              var doc = new DOMParser().parseFromString(html, "text/html");
              var msg = doc.querySelector(".error-page p");
              throw new Error(msg ? msg.textContent : "HTTP " + r.status);
            });
          }
          var reader = r.body.getReader(), decoder = new TextDecoder(), buffer = "";
          function onEvent(type, data) {
            if (type === "message.delta") { reply.textContent += data.text || ""; }
            if (data.session_id) { form.elements.session_id.value = data.session_id; }
            if (type === "run.completed" || type === "run.failed" || type === "run.cancelled" || type === "run.paused") {
              var a = document.createElement("a");
              a.href = form.action.replace(/\/playground$/, "/runs/") + data.run_id;
              a.textContent = data.run_id;
              meta.textContent = "Run ";
              meta.appendChild(a);
              meta.appendChild(document.createTextNode(" · " + type.slice(4) +
                (type === "run.failed" && data.error ? ": " + data.error.message : "") +
                (type === "run.paused" ? " (waiting for an approval)" : "")));
              reply.dataset.done = "true";
              reply.dataset.status = type.slice(4);
            }
          }
          function pump() {
            return reader.read().then(function (chunk) {
              if (chunk.done) { status.textContent = ""; return; }
              buffer = parseFrames(buffer + decoder.decode(chunk.value, { stream: true }), onEvent);
              return pump();
            });
          }
          return pump();
        })
        .catch(function (err) { status.textContent = String(err.message || err); reply.dataset.done = "true"; reply.dataset.status = "error"; });
    });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
