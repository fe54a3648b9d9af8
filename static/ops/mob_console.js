/* The mob page's console timeline: each frame with its delivery state (attempt N of M, when the
 * next attempt is due, the last error) and a "Retry now" button on frames that failed or wait for
 * a retry. Fed by the page's snapshot (setFrames) and by the console socket's events (apply), which
 * may arrive in either order: a frame is only replaced by a newer frame_version.
 *
 * LashOps.consoleTimeline(list, {mobId, workspace}) -> {setFrames(frames), apply(event)}
 */
(function () {
  "use strict";

  var L = window.LashOps;
  // Kinds that are delivered to a member (mobs_app.delivery.DELIVERED_KINDS): the others have no delivery.
  var DELIVERED = { send: 1, dispatch: 1, peer_message: 1 };

  function seqOf(cursor) {
    var m = /^(?:console:)?(\d+)$/.exec(String(cursor));
    return m ? Number(m[1]) : null;
  }

  /* waiting (accepted after a failed attempt), in_progress, failed, delivered, pending, or "" (not delivered). */
  function deliveryState(f) {
    if (!DELIVERED[f.kind]) return "";
    if (f.status === "delivery_failed") return "failed";
    if (f.status === "dispatching") return "in_progress";
    if (f.status === "accepted") return f.delivery_attempts > 0 ? "waiting" : "pending";
    if (f.status === "delivered" || f.status === "completed") return "delivered";
    return "";
  }

  function retriable(f) {
    var s = deliveryState(f);
    return s === "failed" || s === "waiting";
  }

  function clock(iso) {
    var d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleTimeString([], { hour12: false });
  }

  function dueText(iso) {
    var s = Math.round((Date.parse(iso) - Date.now()) / 1000);
    return s > 0 ? "in " + s + "s" : "due now";
  }

  function consoleTimeline(list, opts) {
    var frames = {}, messages = {}, maxAttempts = opts.maxAttempts || null;

    function upsert(f) {
      var seq = f.seq !== undefined ? f.seq : seqOf(f.cursor);
      if (seq === null) return;
      var old = frames[seq];
      if (old && (old.frame_version || 0) > (f.frame_version || 0)) return; // an older read of the frame
      frames[seq] = Object.assign({}, old || {}, f, { seq: seq });
    }

    function attemptsOf(f) {
      var m = f.max_attempts || maxAttempts;
      return "attempt " + f.delivery_attempts + (m ? " of " + m : "");
    }

    function deliveryLine(f) {
      var state = deliveryState(f), parts = [];
      if (state === "waiting") {
        parts.push(L.el("b", { text: "retrying" }), " · " + attemptsOf(f) + " failed · next attempt at " + clock(f.next_attempt_at) + " ");
        parts.push(L.el("span", { cls: "due", "data-due": f.next_attempt_at, text: "(" + dueText(f.next_attempt_at) + ")" }));
      } else if (state === "in_progress") {
        parts.push(L.el("b", { text: "delivering" }), " · " + attemptsOf(f) + " in progress");
      } else if (state === "failed") {
        var m = f.max_attempts || maxAttempts;
        parts.push(L.el("b", { text: "delivery failed" }), " · gave up after " + f.delivery_attempts + (m ? " of " + m : "") + " attempts");
      } else if (state === "delivered") {
        parts.push(L.el("b", { text: "delivered" }), f.delivery_attempts > 1 ? " · on " + attemptsOf(f) : "");
      } else if (state === "pending") {
        parts.push(L.el("b", { text: "waiting for delivery" }));
      }
      return parts;
    }

    function item(f) {
      var p = f.payload || {};
      var text = p.text || p.content || p.message || JSON.stringify(p);
      var state = deliveryState(f);
      var li = L.el("li", {
        "data-seq": String(f.seq), "data-kind": f.kind, "data-status": f.status, "data-delivery": state,
        cls: state ? "delivery-" + state : "",
      }, [L.el("span", { cls: "frame-text", text: "console:" + f.seq + " [" + f.identity + "] " + f.kind + " " + f.status + ": " + text })]);
      if (!state) return li;
      var info = L.el("div", { cls: "delivery" }, deliveryLine(f));
      if (f.last_error && state === "delivered") {
        info.appendChild(L.el("div", { cls: "last-error earlier", text: "earlier error: " + f.last_error }));
      } else if (f.last_error) {
        info.appendChild(L.el("div", { cls: "last-error", text: "last error: " + f.last_error }));
      }
      if (retriable(f)) {
        var button = L.el("button", { type: "button", cls: "retry", text: "Retry now" });
        button.onclick = function () { retry(f.seq, button); };
        info.appendChild(button);
      }
      if (state === "delivered") delete messages[f.seq]; // the retry's outcome shows for itself
      var msg = messages[f.seq];
      if (msg) info.appendChild(L.el("span", { cls: "retry-result " + msg.cls, role: "status", text: msg.text }));
      li.appendChild(info);
      return li;
    }

    function retry(seq, button) {
      button.disabled = true;
      var url = "/api/mobs/" + encodeURIComponent(opts.mobId) + "/console/console:" + seq + "/retry";
      L.api("POST", url, undefined, opts.workspace).then(function (frame) {
        messages[seq] = { text: "retry requested", cls: "ok" };
        upsert(frame);
        draw();
      }, function (err) {
        var why = err.status === 409
          ? "Retry refused" + (err.code ? " (" + err.code + ")" : "") + ": " + err.message
          : "Retry failed: " + err.message;
        messages[seq] = { text: why, cls: "bad" };
        draw();
      });
    }

    function draw() {
      var atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
      list.innerHTML = "";
      Object.keys(frames).map(Number).sort(function (a, b) { return a - b; }).forEach(function (seq) {
        list.appendChild(item(frames[seq]));
      });
      if (atBottom) list.scrollTop = list.scrollHeight;
    }

    // "in 4s" counts down without a redraw.
    setInterval(function () {
      list.querySelectorAll(".due").forEach(function (span) {
        span.textContent = "(" + dueText(span.getAttribute("data-due")) + ")";
      });
    }, 1000);

    return {
      setFrames: function (list_, max) {
        if (max) maxAttempts = max;
        list_.forEach(upsert);
        draw();
      },
      /* Applies console.frame, console.frame_updated and the delivery events; true when it drew. */
      apply: function (e) {
        var d = e.data || {};
        if (e.type === "console.frame" || e.type === "console.frame_updated") {
          upsert(d);
        } else if (e.type === "console.delivery_retry_scheduled" || e.type === "console.delivery_gave_up") {
          var seq = seqOf(d.cursor);
          if (seq === null || !frames[seq]) return false;
          if (d.max_attempts) frames[seq].max_attempts = d.max_attempts;
          if (d.error) frames[seq].last_error = d.error;
        } else {
          return false;
        }
        draw();
        return true;
      },
    };
  }

  L.consoleTimeline = consoleTimeline;
})();
