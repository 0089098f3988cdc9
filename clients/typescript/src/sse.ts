/**
 * Server-sent event streams of the Flex Agents API (docs/events.md).
 *
 * - `streamRun` submits an envelope to `POST /api/v1/flex/run.stream` with
 *   `fetch` (an `EventSource` cannot POST) and yields the run's events until
 *   the stream ends (the run is terminal or waits for a person).
 * - `followRun` follows `GET /api/v1/flex/runs/{runId}/stream` with the
 *   browser's `EventSource`, which cannot send `Authorization`: it asks for a
 *   single-use stream ticket first and, whenever the connection drops, asks
 *   for a new one and reconnects from the last event it saw (`lastEventId`),
 *   so nothing is missed and nothing is delivered twice.
 */

/** One frame of a run's stream (API.md, "Events"). */
export interface FlexEvent<P = Record<string, unknown>> {
  type: string;
  id: string;
  seq: number;
  timestamp: string;
  runId: string;
  planVersion: number;
  nodeId?: string | null;
  payload: P;
}

/** The event types of API.md; `EventSource` only reports named events it listens to. */
export const EVENT_TYPES = [
  "start", "plan_requested", "plan_rejected", "plan_generated", "plan_updated",
  "node_start", "node_complete", "node_error", "node_dispatched", "validation_error",
  "policy_triggered", "hitl_request", "hitl_update", "hitl_resolved", "hitl_escalated",
  "goal_evaluated", "complete", "log",
] as const;

/** The error body of every non-2xx answer: `{code, message, details}`. */
export class FlexApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: Record<string, unknown>;

  constructor(status: number, body: { code?: string; message?: string; details?: Record<string, unknown> } | null) {
    super(body?.message ?? `HTTP ${status}`);
    this.name = "FlexApiError";
    this.status = status;
    this.code = body?.code ?? "error";
    this.details = body?.details ?? {};
  }

  static async from(response: Response): Promise<FlexApiError> {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON (a proxy's page): the status says enough
    }
    return new FlexApiError(response.status, body);
  }
}

/** A parsed SSE frame (comments and keep-alives are skipped). */
export interface SseFrame {
  id?: string;
  event: string;
  data: string;
}

/**
 * Parse a `text/event-stream` body as the HTML standard says: lines end in
 * CRLF, LF or CR; `data` lines join with "\n"; a blank line dispatches.
 */
export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseFrame> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffer = "";
  let data: string[] = [];
  let event = "";
  let id: string | undefined;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      // A CR at the very end may be the first half of a CRLF: keep it.
      const lines = buffer.split(/\r\n|\n|\r(?!$)/);
      buffer = done ? "" : lines.pop() ?? "";
      // At the end of the body an event without its closing blank line is
      // dropped, as the standard says.
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield { id, event: event || "message", data: data.join("\n") };
          data = [];
          event = "";
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") event = value;
        else if (field === "id" && !value.includes("\0")) id = value;
      }
      if (done) return;
    }
  } finally {
    reader.releaseLock();
  }
}

export interface StreamRunOptions {
  baseUrl: string;
  token?: string;
  envelope: unknown;
  signal?: AbortSignal;
  headers?: Record<string, string>;
  fetch?: typeof fetch;
}

/**
 * `POST /api/v1/flex/run.stream`: the run's events as they happen. An
 * invalid envelope is refused before any stream starts: a `FlexApiError`.
 */
export async function* streamRun(options: StreamRunOptions): AsyncGenerator<FlexEvent> {
  const doFetch = options.fetch ?? globalThis.fetch;
  const response = await doFetch(`${trim(options.baseUrl)}/api/v1/flex/run.stream`, {
    method: "POST",
    headers: { ...authHeaders(options.token), "Content-Type": "application/json", Accept: "text/event-stream",
      ...options.headers },
    body: JSON.stringify(options.envelope),
    signal: options.signal,
  });
  if (!response.ok || !response.body) throw await FlexApiError.from(response);
  for await (const frame of parseSse(response.body)) {
    if (frame.event === "stream-error") throw new FlexApiError(403, { code: "stream_error", message: frame.data });
    if (frame.id) yield JSON.parse(frame.data) as FlexEvent;
  }
}

/** The minimal part of the standard `EventSource` that `followRun` uses. */
export interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: MessageEvent) => void): void;
  close(): void;
}
export type EventSourceFactory = new (url: string) => EventSourceLike;

export interface FollowRunOptions {
  baseUrl: string;
  token?: string;
  runId: string;
  /** Start after this event (a frame's `id`); from the first event when absent. */
  lastEventId?: string | null;
  onEvent: (event: FlexEvent) => void;
  /** Called before each reconnection, with the id it resumes from. */
  onReconnect?: (lastEventId: string | null, attempt: number) => void;
  /** Reconnections in a row without a new event before giving up (default 5). */
  maxReconnects?: number;
  /** Delay before reconnecting, doubled each failed attempt (default 500 ms), each
   *  delay drawn between half and one and a half times that: clients that lost
   *  their streams together (a proxy restarted) do not all come back at once. */
  retryDelayMs?: number;
  EventSource?: EventSourceFactory;
  fetch?: typeof fetch;
  /** Event types to listen for (default EVENT_TYPES). */
  eventTypes?: readonly string[];
}

export interface RunFollower {
  /** Resolves with the `complete` event; rejects when following is impossible. */
  readonly done: Promise<FlexEvent>;
  /** The id of the last event delivered (what a reconnection resumes from). */
  readonly lastEventId: string | null;
  close(): void;
}

/** Ask for a stream ticket: `POST /api/v1/flex/runs/{runId}/stream-ticket`. */
export async function streamTicket(options: { baseUrl: string; token?: string; runId: string; fetch?: typeof fetch })
  : Promise<{ ticket: string; expiresAt: string; streamUrl: string }> {
  const doFetch = options.fetch ?? globalThis.fetch;
  const response = await doFetch(
    `${trim(options.baseUrl)}/api/v1/flex/runs/${encodeURIComponent(options.runId)}/stream-ticket`,
    { method: "POST", headers: authHeaders(options.token) });
  if (response.status !== 201) throw await FlexApiError.from(response);
  return response.json();
}

/**
 * Follow a run with `EventSource` and a stream ticket until `complete`.
 *
 * 1. get a ticket; open `streamUrl` (+ `lastEventId` after a drop);
 * 2. deliver each event once, in order, remembering its id;
 * 3. on any error close the source (its own retry would reuse the spent
 *    ticket) and go to 1 after a back-off; a refused ticket request (the
 *    run is gone, the token is bad) ends following with that error.
 */
export function followRun(options: FollowRunOptions): RunFollower {
  const Source = options.EventSource ?? (globalThis as { EventSource?: EventSourceFactory }).EventSource;
  if (!Source) throw new Error("followRun needs an EventSource (pass options.EventSource outside browsers)");
  const maxReconnects = options.maxReconnects ?? 5;
  const baseDelay = options.retryDelayMs ?? 500;
  const types = options.eventTypes ?? EVENT_TYPES;
  let lastEventId = options.lastEventId ?? null;
  let lastSeq = lastEventId ? Number(lastEventId.split(":").pop()) : 0;
  let source: EventSourceLike | null = null;
  let closed = false;
  let failures = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let resolve!: (event: FlexEvent) => void;
  let reject!: (error: unknown) => void;
  const done = new Promise<FlexEvent>((res, rej) => { resolve = res; reject = rej; });

  const stop = () => {
    closed = true;
    if (timer !== undefined) clearTimeout(timer);
    source?.close();
    source = null;
  };

  const connect = async (): Promise<void> => {
    if (closed) return;
    let ticket;
    try {
      ticket = await streamTicket({ baseUrl: options.baseUrl, token: options.token, runId: options.runId,
        fetch: options.fetch });
    } catch (error) {
      if (error instanceof FlexApiError && error.status < 500 && error.status !== 429) {
        stop();
        reject(error);
        return;
      }
      return retry();
    }
    if (closed) return;
    const url = lastEventId ? `${ticket.streamUrl}&lastEventId=${encodeURIComponent(lastEventId)}` : ticket.streamUrl;
    const current = new Source(url);
    source = current;
    const onFrame = (message: MessageEvent) => {
      if (closed || source !== current) return;
      const event = JSON.parse(message.data) as FlexEvent;
      if (event.seq <= lastSeq) return; // already delivered before a reconnection
      lastSeq = event.seq;
      lastEventId = event.id;
      failures = 0;
      options.onEvent(event);
      if (event.type === "complete") {
        stop();
        resolve(event);
      }
    };
    for (const type of types) current.addEventListener(type, onFrame);
    current.addEventListener("stream-error", (message: MessageEvent) => {
      if (source !== current) return;
      stop();
      reject(new FlexApiError(403, { code: "stream_error", message: String(message.data) }));
    });
    current.addEventListener("error", () => {
      if (closed || source !== current) return;
      current.close();
      source = null;
      retry();
    });
  };

  const retry = (): void => {
    if (closed) return;
    failures += 1;
    if (failures > maxReconnects) {
      stop();
      reject(new Error(`gave up following ${options.runId} after ${maxReconnects} reconnections`));
      return;
    }
    options.onReconnect?.(lastEventId, failures);
    timer = setTimeout(() => void connect(), baseDelay * 2 ** (failures - 1) * (0.5 + Math.random()));
  };

  void connect();
  return {
    done,
    get lastEventId() { return lastEventId; },
    close: stop,
  };
}

function trim(baseUrl: string): string {
  return baseUrl.replace(/\/+$/, "");
}

function authHeaders(token?: string): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}
