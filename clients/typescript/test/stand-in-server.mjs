// A stand-in for the Flex Agents API, run as its own process by the tests:
// real HTTP and SSE on a local port, with the paths, status codes and frame
// format of API.md, and scripted behaviour (a dropped stream, spent tickets).
// Prints its port on stdout. GET /__requests returns what it saw.
import http from "node:http";

const TOKEN = "good-token";
const RUN = "run_abc";
const requests = [];
const tickets = new Map(); // ticket -> used?
let flakyTickets = 0;
let streamConnections = 0;

function event(seq, type, payload = {}) {
  return { type, id: `${RUN}:${seq}`, seq, timestamp: "2026-11-29T10:00:00.000Z", runId: RUN, planVersion: 1, payload };
}

const EVENTS = [
  event(1, "start", { runId: RUN, status: "queued" }),
  event(2, "plan_generated", { version: 1, nodes: [{ id: "strategist" }], edges: [] }),
  event(3, "node_start", { nodeId: "strategist" }),
  event(4, "hitl_request", { requestId: "hitl_1", kind: "clarify", question: "Who is the audience?" }),
  event(5, "hitl_resolved", { requestId: "hitl_1", resolution: "answered" }),
  event(6, "complete", { status: "completed", output: { copy: "For risk officers" } }),
];

function frame(e) {
  return `id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`;
}

function json(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

function authorized(req) {
  return req.headers.authorization === `Bearer ${TOKEN}`;
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://localhost");
  let body = "";
  for await (const chunk of req) body += chunk;
  requests.push({ method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams),
    authorization: req.headers.authorization ?? null, lastEventIdHeader: req.headers["last-event-id"] ?? null });

  if (url.pathname === "/__requests") return json(res, 200, requests);
  if (url.pathname === "/api/v1/flex/runs" && req.method === "GET") {
    if (!authorized(req)) return json(res, 401, { code: "not_authenticated", message: "no", details: {} });
    return json(res, 200, { results: [{ runId: RUN, status: "completed" }], next: null });
  }
  if (url.pathname === "/api/v1/flex/run.stream" && req.method === "POST") {
    if (!authorized(req)) return json(res, 401, { code: "not_authenticated", message: "no", details: {} });
    const envelope = JSON.parse(body);
    if (!envelope.objective) {
      return json(res, 422, { code: "validation_failed", message: "The envelope is not valid.",
        details: { errors: [{ path: "/objective", message: "required" }] } });
    }
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    // Frames split at awkward places, CRLF line ends, a comment: a parser
    // that assumes one frame per chunk fails here.
    const text = ": stream open\n\n" + EVENTS.slice(0, 4).map(frame).join("").replaceAll("\n", "\r\n");
    for (let i = 0; i < text.length; i += 37) {
      res.write(text.slice(i, i + 37));
      await new Promise((r) => setTimeout(r, 2));
    }
    return res.end();
  }
  const ticketPath = url.pathname.match(/^\/api\/v1\/flex\/runs\/([^/]+)\/stream-ticket$/);
  if (ticketPath && req.method === "POST") {
    if (!authorized(req)) return json(res, 401, { code: "not_authenticated", message: "no", details: {} });
    if (ticketPath[1] === "run_flaky") {
      // Busy twice (a proxy's 5xx during a reconnect storm), then a ticket.
      flakyTickets += 1;
      if (flakyTickets <= 2) return json(res, 503, { code: "server_busy", message: "busy", details: {} });
      return json(res, 201, { ticket: "st_flaky", expiresAt: "2026-11-29T10:01:00.000Z",
        streamUrl: `http://127.0.0.1:${server.address().port}/api/v1/flex/runs/run_flaky/stream?ticket=st_flaky` });
    }
    if (ticketPath[1] !== RUN) return json(res, 404, { code: "run_not_found", message: "no such run", details: {} });
    const ticket = `st_${tickets.size + 1}`;
    tickets.set(ticket, false);
    const port = server.address().port;
    return json(res, 201, { ticket, expiresAt: "2026-11-29T10:01:00.000Z",
      streamUrl: `http://127.0.0.1:${port}/api/v1/flex/runs/${RUN}/stream?ticket=${ticket}` });
  }
  if (url.pathname === "/api/v1/flex/runs/run_flaky/stream" && req.method === "GET") {
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    for (const e of EVENTS) res.write(frame(e));
    return res.end();
  }
  if (url.pathname === `/api/v1/flex/runs/${RUN}/stream` && req.method === "GET") {
    const ticket = url.searchParams.get("ticket");
    if (!tickets.has(ticket) || tickets.get(ticket)) {
      return json(res, 401, { code: "not_authenticated", message: "bad ticket", details: {} });
    }
    tickets.set(ticket, true);
    const after = Number((url.searchParams.get("lastEventId") ?? req.headers["last-event-id"] ?? "0").split(":").pop());
    streamConnections += 1;
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    res.write(": stream open\n\n");
    const pending = EVENTS.filter((e) => e.seq > after);
    if (streamConnections === 1) {
      // The first connection drops after three events, as a proxy might.
      for (const e of pending.slice(0, 3)) res.write(frame(e));
      await new Promise((r) => setTimeout(r, 20));
      return res.destroy();
    }
    for (const e of pending) res.write(frame(e));
    return res.end();
  }
  json(res, 404, { code: "not_found", message: "Not found.", details: {} });
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${server.address().port}\n`);
});
