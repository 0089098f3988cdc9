// Live timeline of a run page: follows /api/v1/flex/runs/<id>/stream with
// EventSource (session cookie auth), starting after the last event the page
// rendered, and recolours plan nodes as node events arrive. No build step.
(function () {
  "use strict";
  var list = document.getElementById("timeline");
  if (!list || list.dataset.live !== "1" || !window.EventSource) { return; }
  var state = document.getElementById("live-state");
  var statusBadge = document.getElementById("run-status");
  var planVersion = document.getElementById("plan-version");
  var updated = document.getElementById("run-updated");
  var lastId = list.dataset.lastEventId || "";
  var seen = {};
  Array.prototype.forEach.call(list.querySelectorAll("li[data-id]"), function (li) { seen[li.dataset.id] = true; });
  var TYPES = ["start", "plan_requested", "plan_rejected", "plan_generated", "plan_updated", "node_dispatched",
    "node_start", "node_complete", "node_error", "validation_error", "policy_triggered", "hitl_request", "hitl_update",
    "hitl_resolved", "hitl_escalated", "complete", "log", "goal_evaluated"];
  var COLOURS = { pending: "#9aa5b1", running: "#2f80ed", completed: "#27ae60", failed: "#eb5757",
    awaiting_hitl: "#f2994a", skipped: "#cfd6dd", dispatched: "#9b51e0" };
  var source = null;

  function summary(f) {
    var p = f.payload || {};
    switch (f.type) {
      case "node_dispatched": return p.nodeId + " offered as task " + p.taskId + " (attempt " + p.attempt + ")";
      case "node_start": return p.nodeId + " started (attempt " + p.attempt + ")" + (p.agentId ? " by agent " + p.agentId : (p.claimedBy ? " by " + p.claimedBy : ""));
      case "node_complete": return p.nodeId + " completed \u2192 " + (p.outputFacets || []).join(", ");
      case "node_error": return p.nodeId + ": " + ((p.error || {}).message || "");
      case "hitl_request": return p.kind + ": " + p.question;
      case "hitl_update": return p.requestId + " response #" + p.responseCount + ": " + ((p.response || {}).responseType || "");
      case "hitl_resolved": return p.requestId + " " + p.resolution;
      case "plan_updated": return "plan v" + p.previousVersion + " \u2192 v" + p.version + " (" + p.reason + ")";
      case "plan_generated": return "plan v" + p.version + ": " + (p.nodes || []).length + " nodes";
      case "complete": return "status " + p.status;
      case "policy_triggered": return "policy " + p.policyId + " \u2192 " + ((p.action || {}).type || "");
      case "validation_error": return p.scope + " validation failed (" + (p.errors || []).length + " errors)";
      case "log": return String(p.message || "");
      case "goal_evaluated": return "goal " + p.goalId + (p.met ? " met" : " unmet") + " (attempt " + p.attempt + ")";
      default: return "";
    }
  }

  // "Updated" follows the run: each event is a change of the run, at its
  // timestamp (ISO 8601 UTC, the page renders UTC "YYYY-MM-DD HH:MM:SS").
  function showUpdated(timestamp) {
    if (!updated || !timestamp) { return; }
    var at = new Date(timestamp);
    if (isNaN(at.getTime())) { return; }
    var previous = new Date(updated.getAttribute("datetime") || 0);
    if (!isNaN(previous.getTime()) && at < previous) { return; }
    updated.setAttribute("datetime", at.toISOString());
    updated.textContent = at.toISOString().slice(0, 19).replace("T", " ");
  }

  function setStatus(status) {
    if (!statusBadge || !status) { return; }
    statusBadge.textContent = status;
    statusBadge.className = "badge status-" + status;
  }

  function colourNode(nodeId, status) {
    if (!nodeId) { return; }
    var nodes = document.querySelectorAll("#plan-graph g.plan-node");
    Array.prototype.forEach.call(nodes, function (g) {
      if (g.getAttribute("data-node-id") !== nodeId) { return; }
      g.setAttribute("data-status", status);
      var rect = g.querySelector("rect");
      if (rect) { rect.setAttribute("fill", COLOURS[status] || "#9aa5b1"); }
      var label = g.querySelector(".plan-node-status");
      if (label) { label.textContent = label.textContent.split(" \u00b7 ")[0] + " \u00b7 " + status; }
    });
  }

  function showOutput(payload) {
    var box = document.getElementById("output");
    if (!box) { return; }
    var pre = document.createElement("pre");
    pre.className = "json" + (payload.status === "completed" ? "" : " error");
    pre.textContent = JSON.stringify(payload.output || payload.error || payload, null, 2);
    box.innerHTML = "";
    box.appendChild(pre);
  }

  // The HITL dialogue follows too: new responses and resolutions.
  function requestBox(requestId) {
    return document.querySelector('#dialogue .hitl-request[data-request-id="' + requestId + '"]');
  }

  function addResponse(requestId, r) {
    var box = requestBox(requestId);
    if (!box || !r) { return; }
    var ol = box.querySelector("ol.responses");
    var empty = ol.querySelector("li.muted");
    if (empty) { ol.removeChild(empty); }
    if (ol.querySelector('[data-response-id="' + r.responseId + '"]')) { return; }
    var li = document.createElement("li");
    li.className = "response";
    li.dataset.responseId = r.responseId;
    var who = document.createElement("b"); who.textContent = r.responderDisplayName || "someone";
    li.appendChild(who);
    li.appendChild(document.createTextNode(" \u00b7 " + r.responseType +
      (r.selectedOptionId ? " \u00b7 option " + r.selectedOptionId : "")));
    if (r.freeformText) {
      var q = document.createElement("blockquote"); q.textContent = r.freeformText; li.appendChild(q);
    }
    ol.appendChild(li);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  // A request raised while the page is open: the same box the server renders
  // (runs/_dialogue.html, runs/_review.html), built from the redacted frame.
  function addRequest(p) {
    var dialogue = document.getElementById("dialogue");
    if (!dialogue || !p.requestId || requestBox(p.requestId)) { return; }
    var none = dialogue.querySelector(":scope > p.muted");
    if (none) { dialogue.removeChild(none); }
    var box = el("div", "hitl-request hitl-pending");
    box.dataset.requestId = p.requestId;
    var head = el("div", "hitl-head");
    head.appendChild(el("span", "badge kind", p.kind));
    head.appendChild(document.createTextNode(" "));
    head.appendChild(el("span", "badge urgency-" + (p.urgency || "normal"), p.urgency || "normal"));
    head.appendChild(document.createTextNode(" "));
    head.appendChild(el("span", "badge status-pending", "pending"));
    head.appendChild(document.createTextNode(" "));
    head.appendChild(el("span", "muted", p.requestId + " \u00b7 node " + (p.pendingNodeId || "\u2014") +
      " \u00b7 plan v" + p.planVersion));
    box.appendChild(head);
    box.appendChild(el("p", "question", p.question || ""));
    if (p.operatorPrompt) { box.appendChild(el("p", "muted", p.operatorPrompt)); }
    var review = p.review || {};
    var facets = Object.keys(review);
    if (facets.length) {
      var wrap = el("div", "review");
      wrap.dataset.reviewOf = p.requestId;
      wrap.appendChild(el("div", "review-head", "Under review"));
      facets.forEach(function (name) {
        var facet = el("div", "review-facet");
        facet.dataset.facet = name;
        var label = el("div", "review-facet-name");
        label.appendChild(el("code", "", name));
        facet.appendChild(label);
        var value = review[name];
        facet.appendChild(typeof value === "string" ? el("blockquote", "review-text", value)
          : el("pre", "json", JSON.stringify(value, null, 2)));
        wrap.appendChild(facet);
      });
      box.appendChild(wrap);
    }
    var ol = el("ol", "responses");
    ol.appendChild(el("li", "muted", "No responses yet."));
    box.appendChild(ol);
    dialogue.appendChild(box);
  }

  function resolveRequest(p) {
    var box = requestBox(p.requestId);
    if (!box) { return; }
    (p.responses || []).forEach(function (r) { addResponse(p.requestId, r); });
    box.className = "hitl-request hitl-resolved";
    var badges = box.querySelectorAll(".hitl-head .badge");
    var badge = badges[badges.length - 1];
    if (badge) { badge.textContent = "resolved: " + p.resolution; badge.className = "badge status-resolved"; }
  }

  function onFrame(e) {
    var f;
    try { f = JSON.parse(e.data); } catch (err) { return; }
    if (!f || !f.id || seen[f.id]) { return; }
    seen[f.id] = true;
    lastId = f.id;
    var li = document.createElement("li");
    li.className = "ev ev-" + f.type + " new";
    li.dataset.id = f.id;
    var seq = document.createElement("span"); seq.className = "seq"; seq.textContent = f.seq;
    var type = document.createElement("b"); type.className = "type"; type.textContent = f.type;
    var text = document.createElement("span"); text.className = "summary"; text.textContent = summary(f);
    var time = document.createElement("time"); time.textContent = (f.timestamp || "").slice(11, 19);
    li.appendChild(seq); li.appendChild(document.createTextNode(" ")); li.appendChild(type);
    li.appendChild(document.createTextNode(" ")); li.appendChild(text); li.appendChild(time);
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
    if (planVersion && f.planVersion) { planVersion.textContent = f.planVersion; }
    showUpdated(f.timestamp);
    var p = f.payload || {};
    if (f.type === "node_start") { colourNode(p.nodeId, "running"); setStatus("running"); }
    else if (f.type === "node_dispatched") { colourNode(p.nodeId, "dispatched"); }
    else if (f.type === "node_complete") { colourNode(p.nodeId, "completed"); }
    else if (f.type === "node_error" && !p.willRetry) { colourNode(p.nodeId, "failed"); }
    else if (f.type === "hitl_request") {
      colourNode(f.nodeId || p.pendingNodeId, "awaiting_hitl"); setStatus("awaiting_hitl"); addRequest(p);
    }
    else if (f.type === "hitl_update") { addResponse(p.requestId, p.response); }
    else if (f.type === "hitl_resolved") { resolveRequest(p); }
    else if (f.type === "plan_updated") { (p.nodes || []).forEach(function (n) { colourNode(n.id, n.status); }); }
    else if (f.type === "complete") {
      setStatus(p.status);
      showOutput(p);
      state.textContent = "finished";
      source.close();
    }
  }

  function connect() {
    var url = list.dataset.streamUrl + (lastId ? "?lastEventId=" + encodeURIComponent(lastId) : "");
    source = new EventSource(url, { withCredentials: true });
    source.onopen = function () { state.textContent = "live"; };
    TYPES.forEach(function (t) { source.addEventListener(t, onFrame); });
    source.onmessage = onFrame;
    source.onerror = function () {
      if (state.textContent === "finished") { return; }
      // The browser reconnects by itself with Last-Event-ID; if it gave up
      // (an HTTP error), reconnect from the last id we showed.
      state.textContent = "reconnecting…";
      if (source.readyState === EventSource.CLOSED) { setTimeout(connect, 2000); }
    };
  }
  connect();
})();
