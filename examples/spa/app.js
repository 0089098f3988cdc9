// The reference SPA: plain JavaScript on top of the typed client.
//
// 1. submit the envelope with `streamRun` (POST run.stream, read with fetch);
// 2. draw the plan and the timeline as events arrive;
// 3. when the stream stops because a person is needed, keep following the
//    run with `followRun` (EventSource + a single-use stream ticket,
//    reconnecting from the last event id);
// 4. show the pending approval (with its `review`) or clarification question,
//    answer it with POST /api/hitl/resume, and watch the run to `complete`.
//
// Everything shown comes from the server: text goes in with textContent,
// never as HTML.
import { createFlexClient, FlexApiError, followRun, streamRun } from "./lib/flex/index.js";

const $ = (selector) => document.querySelector(selector);
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const SVG = "http://www.w3.org/2000/svg";

const state = { runId: null, status: null, pending: null, latestResponseId: null, follower: null, nodes: new Map() };

function connection() {
  return { baseUrl: $("#api-base").value.trim().replace(/\/+$/, ""), token: $("#token").value.trim() };
}

function showError(error) {
  const box = $("#error");
  if (error instanceof FlexApiError) {
    box.textContent = `${error.status} ${error.code}: ${error.message}`;
  } else if (error instanceof TypeError) {
    // What fetch reports for a network failure — and for a response the
    // browser withheld because the API did not allow this origin (CORS).
    box.textContent = `Could not reach the API (network error or CORS refusal — is this page's origin in `
      + `FLEX_CORS_ALLOWED_ORIGINS?): ${error.message}`;
  } else {
    box.textContent = String(error?.message ?? error);
  }
  box.hidden = false;
}

function setStatus(status) {
  state.status = status;
  $("#run-status").textContent = status;
}

function setLive(text) {
  $("#live-state").textContent = text;
}

// --- Plan graph -------------------------------------------------------------

function drawPlan(nodes, edges) {
  const svg = $("#plan");
  svg.replaceChildren();
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let i = 0; i < nodes.length; i++) {  // longest path from a root (the graph is acyclic)
    for (const edge of edges) depth.set(edge.to, Math.max(depth.get(edge.to) ?? 0, (depth.get(edge.from) ?? 0) + 1));
  }
  const rows = new Map();
  const position = new Map();
  for (const node of nodes) {
    const column = depth.get(node.id);
    const row = rows.get(column) ?? 0;
    rows.set(column, row + 1);
    position.set(node.id, { x: 10 + column * 270, y: 10 + row * 60 });
  }
  svg.setAttribute("width", String(20 + (Math.max(...depth.values()) + 1) * 270));
  svg.setAttribute("height", String(20 + Math.max(...rows.values()) * 60));
  const defs = document.createElementNS(SVG, "defs");
  defs.innerHTML = '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
    + 'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#8a93a6"/></marker>';
  svg.append(defs);
  for (const edge of edges) {
    const from = position.get(edge.from);
    const to = position.get(edge.to);
    if (!from || !to) continue;
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("x1", String(from.x + 230));
    line.setAttribute("y1", String(from.y + 20));
    line.setAttribute("x2", String(to.x));
    line.setAttribute("y2", String(to.y + 20));
    svg.append(line);
  }
  state.nodes = new Map();
  for (const node of nodes) {
    const { x, y } = position.get(node.id);
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "plan-node");
    g.dataset.nodeId = node.id;
    g.dataset.status = "pending";
    const rect = document.createElementNS(SVG, "rect");
    for (const [k, v] of Object.entries({ x, y, width: 230, height: 40 })) rect.setAttribute(k, String(v));
    const title = document.createElementNS(SVG, "text");
    title.setAttribute("x", String(x + 8));
    title.setAttribute("y", String(y + 17));
    title.textContent = node.label || node.id;
    const status = document.createElementNS(SVG, "text");
    status.setAttribute("x", String(x + 8));
    status.setAttribute("y", String(y + 33));
    status.setAttribute("class", "plan-node-status");
    status.textContent = `${node.capabilityId ?? ""} · pending`;
    g.append(rect, title, status);
    svg.append(g);
    state.nodes.set(node.id, { g, status, capabilityId: node.capabilityId ?? "" });
  }
}

function setNodeStatus(nodeId, status) {
  const node = state.nodes.get(nodeId);
  if (!node) return;
  node.g.dataset.status = status;
  node.status.textContent = `${node.capabilityId} · ${status}`;
}

// --- Timeline and events ------------------------------------------------------

function summary(event) {
  const p = event.payload ?? {};
  switch (event.type) {
    case "start": return `run ${p.runId} ${p.status ?? ""}`;
    case "plan_generated": return `plan v${p.version}: ${(p.nodes ?? []).map((n) => n.id).join(" → ")}`;
    case "plan_updated": return `plan v${p.previousVersion} → v${p.version} (${p.reason})`;
    case "node_start": case "node_complete": return `${p.nodeId} (${p.capabilityId}) attempt ${p.attempt}`;
    case "node_error": return `${p.nodeId}: ${p.error?.message ?? ""}${p.willRetry ? " — retrying" : ""}`;
    case "hitl_request": return `${p.kind}: ${p.question ?? ""}`;
    case "hitl_resolved": return `resolved: ${p.resolution}`;
    case "complete": return `status ${p.status}`;
    default: return "";
  }
}

function handle(event) {
  state.runId = event.runId;
  const item = document.createElement("li");
  item.className = `ev-${event.type}`;
  item.value = event.seq;
  item.textContent = `${event.type} ${summary(event)}`.trim();
  $("#timeline").append(item);
  const p = event.payload ?? {};
  switch (event.type) {
    case "start":
      $("#run-id").textContent = event.runId;
      setStatus(p.status ?? "queued");
      break;
    case "plan_generated":
      drawPlan(p.nodes ?? [], p.edges ?? []);
      if (!TERMINAL.has(state.status)) setStatus("running");
      break;
    case "plan_updated":
      for (const node of p.nodes ?? []) setNodeStatus(node.id, node.status);
      setStatus("running");
      break;
    case "node_start": setNodeStatus(p.nodeId, "running"); break;
    case "node_complete": setNodeStatus(p.nodeId, "completed"); break;
    case "node_error": setNodeStatus(p.nodeId, p.willRetry ? "running" : "failed"); break;
    case "hitl_request":
      setStatus("awaiting_hitl");
      if (p.pendingNodeId) setNodeStatus(p.pendingNodeId, "awaiting_hitl");
      showPending(p);
      break;
    case "hitl_update":
      if (p.response?.responseId) state.latestResponseId = p.response.responseId;
      break;
    case "hitl_resolved":
      hidePending();
      break;
    case "policy_triggered":
      if (p.action?.type === "pause") setStatus("paused");
      break;
    case "complete":
      setStatus(p.status);
      $("#output").textContent = p.output ? JSON.stringify(p.output, null, 2) : JSON.stringify(p.error ?? null, null, 2);
      setLive("finished");
      break;
  }
}

// --- A person's turn ----------------------------------------------------------

function showPending(request) {
  state.pending = request;
  const responses = request.responses ?? [];
  state.latestResponseId = responses.length ? responses[responses.length - 1].responseId : null;
  const approval = request.kind === "approval";
  $("#hitl-title").textContent = approval ? "Approval needed" : "A question for you";
  $("#hitl-question").textContent = request.question ?? request.operatorPrompt ?? "";
  const review = request.review;
  const hasReview = review && typeof review === "object" && Object.keys(review).length > 0;
  $("#hitl-review-box").hidden = !hasReview;
  $("#hitl-review").textContent = hasReview ? JSON.stringify(review, null, 2) : "";
  const options = $("#hitl-options");
  options.replaceChildren(Object.assign(document.createElement("legend"), { textContent: "Options" }));
  const choices = approval ? [] : request.options ?? [];
  for (const option of choices) {
    const label = document.createElement("label");
    const radio = Object.assign(document.createElement("input"), { type: "radio", name: "option", value: option.id });
    label.append(radio, ` ${option.label}`);  // nothing pre-selected
    options.append(label);
  }
  options.hidden = choices.length === 0;
  const freeForm = !approval && (request.allowFreeForm !== false || choices.length === 0);
  $("#hitl-answer").value = "";
  $("#hitl-answer-label").hidden = approval ? false : !freeForm;
  $("#hitl-answer-label").firstChild.textContent = approval ? "Note (optional) " : "Answer ";
  $("#approve").hidden = !approval;
  $("#reject").hidden = !approval;
  $("#send-answer").hidden = approval;
  $("#hitl").hidden = false;
}

function hidePending() {
  state.pending = null;
  $("#hitl").hidden = true;
}

async function answer(response) {
  const request = state.pending;
  if (!request) return;
  const client = createFlexClient(connection());
  const body = { runId: state.runId, requestId: request.requestId, responses: [{ requestId: request.requestId, ...response }],
    note: request.kind === "approval" ? $("#hitl-answer").value : "" };
  if (state.latestResponseId) body.latestResponseId = state.latestResponseId;
  for (const button of ["#approve", "#reject", "#send-answer"]) $(button).disabled = true;
  try {
    const { error, response: http } = await client.POST("/api/hitl/resume", { body });
    if (error) throw new FlexApiError(http.status, error);
    $("#error").hidden = true;
    // The follower (already open) shows hitl_resolved … complete as they happen.
  } catch (failure) {
    showError(failure);
  } finally {
    for (const button of ["#approve", "#reject", "#send-answer"]) $(button).disabled = false;
  }
}

$("#approve").addEventListener("click", () => answer({ responseType: "approval", approved: true }));
$("#reject").addEventListener("click", () => answer({ responseType: "rejection", approved: false }));
$("#hitl-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const picked = document.querySelector("#hitl-options input[name=option]:checked");
  const text = $("#hitl-answer").value.trim();
  if (text) answer({ responseType: "freeform", freeformText: text });
  else if (picked) answer({ responseType: "option", selectedOptionId: picked.value });
  else showError(new Error("Write an answer or pick an option."));
});

// --- Submitting and following --------------------------------------------------

function follow(lastEventId) {
  state.follower?.close();
  setLive("live");
  state.follower = followRun({
    ...connection(), runId: state.runId, lastEventId, onEvent: handle,
    onReconnect: () => setLive("reconnecting…"),
  });
  state.follower.done.catch((error) => { setLive("stopped"); showError(error); });
}

async function submit(event) {
  event.preventDefault();
  $("#error").hidden = true;
  let envelope;
  try {
    envelope = JSON.parse($("#envelope").value);
  } catch (error) {
    showError(new Error(`The envelope is not JSON: ${error.message}`));
    return;
  }
  state.follower?.close();
  Object.assign(state, { runId: null, status: null, pending: null, latestResponseId: null, follower: null });
  hidePending();
  $("#timeline").replaceChildren();
  $("#plan").replaceChildren();
  $("#output").textContent = "(not yet)";
  $("#run-id").textContent = "";
  setStatus("submitting");
  setLive("streaming");
  $("#run").hidden = false;
  let lastEventId = null;
  try {
    for await (const frame of streamRun({ ...connection(), envelope })) {
      lastEventId = frame.id;
      handle(frame);
    }
  } catch (error) {
    setLive("");
    setStatus(state.runId ? state.status : "not submitted");
    showError(error);
    if (!state.runId) return;
  }
  // run.stream ends when the run is terminal or waits for a person; follow
  // the rest of it (the answer, the resumed nodes, `complete`).
  if (state.runId && !TERMINAL.has(state.status)) follow(lastEventId);
}

$("#submit-form").addEventListener("submit", submit);
$("#load-example").addEventListener("click", async () => {
  // The examples of the repository, served beside this page (docs/spa.md).
  const name = $("#example").value;
  try {
    const response = await fetch(new URL(`../envelopes/${name}.json`, import.meta.url));
    if (!response.ok) throw new Error(`examples/envelopes/${name}.json: HTTP ${response.status}`);
    $("#envelope").value = JSON.stringify(await response.json(), null, 2);
  } catch (error) {
    showError(error);
  }
});
