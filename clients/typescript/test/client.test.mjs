// The client against a stand-in server process (test/stand-in-server.mjs):
// real HTTP and SSE. Run with `npm test` (builds first, then `node --test`).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { after, before, test } from "node:test";

import { EventSource } from "eventsource";

import { createFlexClient, FlexApiError, followRun, streamRun } from "../dist/index.js";

const TOKEN = "good-token";
let server;
let baseUrl;

before(async () => {
  server = spawn(process.execPath, [new URL("./stand-in-server.mjs", import.meta.url).pathname],
    { stdio: ["ignore", "pipe", "inherit"] });
  const [line] = await once(server.stdout, "data");
  baseUrl = `http://127.0.0.1:${String(line).trim()}`;
});

after(() => server.kill());

async function requestsSeen() {
  return (await fetch(`${baseUrl}/__requests`)).json();
}

test("the typed client sends the Bearer token and returns the parsed body", async () => {
  const client = createFlexClient({ baseUrl, token: TOKEN });

  const { data, error, response } = await client.GET("/api/v1/flex/runs");

  assert.equal(response.status, 200);
  assert.equal(error, undefined);
  assert.deepEqual(data.results.map((r) => r.runId), ["run_abc"]);
});

test("the typed client returns the API's error body on a refusal", async () => {
  const { data, error, response } = await createFlexClient({ baseUrl, token: "wrong" }).GET("/api/v1/flex/runs");

  assert.equal(response.status, 401);
  assert.equal(data, undefined);
  assert.equal(error.code, "not_authenticated");
});

test("streamRun yields each event once, whole, across chunk boundaries and CRLF line ends", async () => {
  const events = [];
  for await (const event of streamRun({ baseUrl, token: TOKEN, envelope: { objective: "Draft a post" } })) {
    events.push(event);
  }

  assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4]);
  assert.deepEqual(events.map((e) => e.type), ["start", "plan_generated", "node_start", "hitl_request"]);
  assert.equal(events[3].payload.question, "Who is the audience?");
});

test("streamRun raises the API error of an envelope refused before any stream", async () => {
  await assert.rejects(async () => {
    for await (const _ of streamRun({ baseUrl, token: TOKEN, envelope: {} })) { /* nothing */ }
  }, (error) => error instanceof FlexApiError && error.status === 422 && error.code === "validation_failed"
    && error.details.errors[0].path === "/objective");
});

test("followRun reconnects with a fresh ticket from the last event id and misses nothing", async () => {
  const events = [];
  const reconnects = [];

  const follower = followRun({ baseUrl, token: TOKEN, runId: "run_abc", EventSource, retryDelayMs: 10,
    onEvent: (e) => events.push(e), onReconnect: (id) => reconnects.push(id) });
  const complete = await follower.done;

  assert.equal(complete.type, "complete");
  assert.equal(complete.payload.output.copy, "For risk officers");
  assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(reconnects, ["run_abc:3"]);
  const streams = (await requestsSeen()).filter((r) => r.path === "/api/v1/flex/runs/run_abc/stream");
  assert.equal(streams.length, 2);
  assert.notEqual(streams[0].query.ticket, streams[1].query.ticket);
  assert.equal(streams[0].query.lastEventId, undefined);
  assert.equal(streams[1].query.lastEventId, "run_abc:3");
  assert.ok(streams.every((r) => r.authorization === null), "EventSource sends no Authorization");
});

test("followRun spreads its reconnection delays between half and one and a half times the back-off", async () => {
  const delays = [];
  const realSetTimeout = globalThis.setTimeout;
  const realRandom = Math.random;
  const draws = [0, 0.75];
  globalThis.setTimeout = (fn, ms, ...args) => {
    if (ms >= 4000) delays.push(ms); // ours; not EventSource's own 3 s reconnection timers
    return realSetTimeout(fn, 0, ...args);
  };
  Math.random = () => draws.shift() ?? 0.5;
  try {
    // Two refused ticket requests in a row (the stand-in answers 503 twice for run_flaky), then the run.
    const follower = followRun({ baseUrl, token: TOKEN, runId: "run_flaky", EventSource, retryDelayMs: 10000,
      onEvent: () => {} });
    await follower.done;
  } finally {
    globalThis.setTimeout = realSetTimeout;
    Math.random = realRandom;
  }
  assert.deepEqual(delays.map(Math.round), [5000, 25000]);
});

test("followRun gives up with the API error when no ticket can be had", async () => {
  const follower = followRun({ baseUrl, token: TOKEN, runId: "run_missing", EventSource, onEvent: () => {} });

  await assert.rejects(follower.done, (error) => error instanceof FlexApiError && error.code === "run_not_found");
});
