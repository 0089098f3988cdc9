"""An agent: capabilities as decorated functions, served over HTTP.

    agent = Agent("http://127.0.0.1:8000", token, agent_id="acme-hashtags")

    @agent.capability("acme.Hashtags", kind="transformation",
                      input_facets=["post_copy"], output_facets=["hashtags"])
    def hashtags(bundle: Bundle) -> dict[str, Any]:
        return {"hashtags": suggest(bundle.facets["post_copy"])}

    agent.run()

What :meth:`Agent.run` does, in order:

1. registers the agent and its capabilities (retrying with backoff while
   the server cannot be reached; a refusal — bad token, unknown facet, a
   capability id owned by someone else — raises :class:`AgentError`);
2. starts a thread that heartbeats the agent every ``heartbeat_seconds``
   (the server marks an agent silent for three intervals inactive), and
   registers again if the server forgot the agent;
3. long-polls ``claim`` whenever fewer than ``max_concurrency`` tasks are
   held; each claimed task's function runs on a thread of its own while
   an asyncio task renews the task's lease;
4. reports the outcome: ``complete`` with the returned facets, ``clarify``
   for :class:`Clarify`, ``fail`` for :class:`TaskFailed` or any other
   exception (retryable). ``409 lease_lost`` (the lease expired and the
   task went to someone else, or the run was cancelled) drops the result;
   ``422 validation_failed`` logs the errors (the server counts the attempt
   and offers the task again);
5. on SIGTERM or SIGINT (or :meth:`Agent.stop`): stops claiming, lets the
   running functions finish and report for ``stop_grace_seconds``, hands
   back what is still running (``fail`` with ``retryable: true``, code
   ``agent_stopping``), and returns. A second signal hands back at once.
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

import httpx

from flexagents_sdk.backoff import Backoff
from flexagents_sdk.bundle import Bundle, ProtocolError, Task, parse_timestamp
from flexagents_sdk.client import MAX_WAIT_SECONDS, AgentClient, AgentHeartbeatClient, api_base
from flexagents_sdk.errors import AgentError, ApiError, Clarify, TaskFailed

__all__ = ["Agent", "CapabilityFunction", "CapabilitySpec"]

logger = logging.getLogger("flexagents_sdk")

CapabilityFunction = Callable[[Bundle], Mapping[str, Any]]
F = TypeVar("F", bound=CapabilityFunction)
T = TypeVar("T")

AGENT_TYPES = ("ai", "human")
STOPPING_CODE = "agent_stopping"


@dataclass(frozen=True)
class CapabilitySpec:
    """One capability the agent serves, as it is registered."""

    capability_id: str
    kind: str
    input_facets: tuple[str, ...]
    output_facets: tuple[str, ...]
    function: CapabilityFunction = field(repr=False, compare=False)
    optional_input_facets: tuple[str, ...] = ()
    description: str = ""
    version: str = "1.0.0"
    agent_type: str = "ai"
    display_name: str = ""

    def to_json(self) -> dict[str, Any]:
        """The capability's entry in the ``register`` body."""
        return {
            "capabilityId": self.capability_id,
            "displayName": self.display_name or self.capability_id,
            "description": self.description,
            "kind": self.kind,
            "agentType": self.agent_type,
            "inputFacets": list(self.input_facets),
            "optionalInputFacets": list(self.optional_input_facets),
            "outputFacets": list(self.output_facets),
            "version": self.version,
        }


@dataclass
class _Outcome:
    kind: Literal["complete", "clarify", "fail"]
    output: Mapping[str, Any] | None = None
    clarify: Clarify | None = None
    failure: TaskFailed | None = None


@dataclass
class _Held:
    """A task this agent holds, from claim until its outcome is reported."""

    task: Task
    expires_at: float  # time.time() at which the lease ends, as far as we know
    state: Literal["running", "reporting"] = "running"
    lost: bool = False  # the server said lease_lost: whatever the function returns is dropped
    handler: asyncio.Task[None] | None = None


class _Stopped(Exception):
    """Internal: the agent was asked to stop while it waited."""


class Agent:
    """A program that serves capabilities to a Flex Agents server.

    ``url`` is the server (``http://127.0.0.1:8000``), ``token`` an API token
    of a user with the ``agent`` role (``manage.py flex_user NAME --role
    agent --token``). ``agent_id`` names the agent (stable across restarts:
    re-registering replaces its capability set). The server marks the agent
    inactive when it has not heard from it for 3 × ``heartbeat_seconds``.
    At most ``max_concurrency`` tasks run at once (the server enforces it
    too). ``claim_wait_seconds`` (0..30) is how long one long poll waits;
    ``stop_grace_seconds`` how long a stopping agent lets running functions
    finish. ``lease_renew_seconds`` fixes the interval of task-lease renewals
    (default: a third of the lease the server granted).
    """

    def __init__(self, url: str, token: str, *, agent_id: str, display_name: str | None = None,
                 heartbeat_seconds: int = 15, max_concurrency: int = 4,
                 claim_wait_seconds: float = MAX_WAIT_SECONDS, stop_grace_seconds: float = 20.0,
                 lease_renew_seconds: float | None = None, request_timeout: float = 15.0,
                 backoff: Callable[[], Backoff] = Backoff) -> None:
        if not agent_id or not agent_id.strip():
            raise ValueError("agent_id must not be empty")
        if isinstance(heartbeat_seconds, bool) or not isinstance(heartbeat_seconds, int) or heartbeat_seconds < 1:
            raise ValueError(f"heartbeat_seconds must be a whole number of seconds >= 1, got {heartbeat_seconds!r}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if not 0 <= claim_wait_seconds <= MAX_WAIT_SECONDS:
            raise ValueError(f"claim_wait_seconds must be within 0..{MAX_WAIT_SECONDS}")
        if stop_grace_seconds < 0:
            raise ValueError("stop_grace_seconds must not be negative")
        self.url = api_base(url).removesuffix("/api/v1/flex")
        self._token = token
        self.agent_id = agent_id
        self.display_name = display_name or agent_id
        self.heartbeat_seconds = heartbeat_seconds
        self.max_concurrency = max_concurrency
        self.claim_wait_seconds = claim_wait_seconds
        self.stop_grace_seconds = stop_grace_seconds
        self.lease_renew_seconds = lease_renew_seconds
        self.request_timeout = request_timeout
        self._new_backoff = backoff
        self.capabilities: dict[str, CapabilitySpec] = {}
        #: What happened so far: claimed, completed, clarified, failed,
        #: rejected (422), lease_lost, handed_back, errors (unexpected answers).
        self.stats: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_now: asyncio.Event | None = None
        self._stop_requested = threading.Event()  # stop() before the loop runs
        self._needs_register = threading.Event()
        self._held: dict[str, _Held] = {}
        self.registered = threading.Event()

    # -- declaring capabilities -------------------------------------------------------------

    def capability(self, capability_id: str, *, kind: str, input_facets: Sequence[str],
                   output_facets: Sequence[str], optional_input_facets: Sequence[str] = (),
                   description: str = "", version: str = "1.0.0", agent_type: str = "ai",
                   display_name: str | None = None) -> Callable[[F], F]:
        """Declare that the decorated function serves ``capability_id``.

        The function receives a :class:`Bundle` and returns ``{facet: value}``
        for the ``output_facets``; it may raise :class:`Clarify` or
        :class:`TaskFailed`. It runs on a thread of its own, so it may block
        (call a model, a database); it is returned unchanged, so it can be
        tested as a plain function.
        """
        if not capability_id or not capability_id.strip():
            raise ValueError("capability_id must not be empty")
        if capability_id in self.capabilities:
            raise ValueError(f"capability {capability_id!r} is declared twice")
        if not output_facets:
            raise ValueError(f"capability {capability_id!r} must produce at least one output facet")
        if agent_type not in AGENT_TYPES:
            raise ValueError(f"agent_type must be one of {AGENT_TYPES}, got {agent_type!r}")
        for name, facets in (("input_facets", input_facets), ("output_facets", output_facets),
                             ("optional_input_facets", optional_input_facets)):
            if isinstance(facets, str) or not all(isinstance(f, str) and f for f in facets):
                raise ValueError(f"{name} must be a list of facet names, got {facets!r}")

        def decorate(function: F) -> F:
            self.capabilities[capability_id] = CapabilitySpec(
                capability_id=capability_id, kind=kind, input_facets=tuple(input_facets),
                output_facets=tuple(output_facets), optional_input_facets=tuple(optional_input_facets),
                description=description or (function.__doc__ or "").strip().split("\n")[0], version=version,
                agent_type=agent_type, display_name=display_name or "", function=function)
            return function

        return decorate

    def registration(self) -> dict[str, Any]:
        """The body of ``POST /agents/register``."""
        return {
            "agentId": self.agent_id,
            "displayName": self.display_name,
            "heartbeatSeconds": self.heartbeat_seconds,
            "maxConcurrency": self.max_concurrency,
            "capabilities": [spec.to_json() for spec in self.capabilities.values()],
        }

    # -- running ----------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped (SIGTERM, SIGINT or :meth:`stop`); see the module docstring.

        Returns after a clean stop; raises :class:`AgentError` when the
        server refuses the agent. Signal handlers are installed only when
        called from the main thread.
        """
        if not self.capabilities:
            raise AgentError("the agent declares no capability: decorate a function with @agent.capability(...)")
        asyncio.run(self._main())

    def stop(self, *, now: bool = False) -> None:
        """Ask a running agent to stop (from any thread); ``now`` skips the grace period."""
        self._stop_requested.set()
        loop, stop, stop_now = self._loop, self._stop, self._stop_now
        if loop is None or stop is None or stop_now is None:
            return
        try:
            loop.call_soon_threadsafe(stop.set)
            if now:
                loop.call_soon_threadsafe(stop_now.set)
        except RuntimeError:
            pass  # the loop already closed: the agent has stopped

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop, self._stop_now = asyncio.Event(), asyncio.Event()
        if self._stop_requested.is_set():
            self._stop.set()
        signals = self._install_signal_handlers()
        client = AgentClient(self.url, self._token, timeout=self.request_timeout)
        beats_stop = threading.Event()
        beats: threading.Thread | None = None
        try:
            try:
                await self._register(client)
            except _Stopped:
                return
            beats = threading.Thread(target=self._heartbeat_thread, args=(beats_stop,), daemon=True,
                                     name=f"flex-heartbeat-{self.agent_id}")
            beats.start()
            await self._claim_loop(client)
            await self._drain(client)
        finally:
            beats_stop.set()
            if beats is not None:
                beats.join(timeout=self.request_timeout)
            await client.aclose()
            for sig in signals:
                self._loop.remove_signal_handler(sig)
            logger.info("agent %s stopped (%s)", self.agent_id,
                        ", ".join(f"{k} {v}" for k, v in sorted(self.stats.items())) or "no tasks")

    def _install_signal_handlers(self) -> list[int]:
        if threading.current_thread() is not threading.main_thread():
            return []
        assert self._loop is not None
        installed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._on_signal, sig)
            installed.append(sig)
        return installed

    def _on_signal(self, sig: int) -> None:
        assert self._stop is not None and self._stop_now is not None
        name = signal.Signals(sig).name
        if self._stop.is_set():
            logger.warning("%s again: handing back %d task(s) now", name, len(self._held))
            self._stop_now.set()
            return
        logger.info("%s: no new tasks; %d running task(s) get %.0f s to finish", name, len(self._held),
                    self.stop_grace_seconds)
        self._stop.set()

    # -- waiting that a stop interrupts ---------------------------------------------------

    async def _until_stopped(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``; cancel it and raise :class:`_Stopped` if the agent is stopped first."""
        assert self._stop is not None
        if self._stop.is_set():
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise _Stopped
        work: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        stopper: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        waiting: set[asyncio.Future[Any]] = {work, stopper}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if work.done():
            return work.result()
        # Cancelling a claim in flight: a task the server handed over at this
        # very instant is re-offered when its lease expires.
        work.cancel()
        try:
            await work
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 — we are leaving anyway
            pass
        raise _Stopped

    async def _sleep(self, seconds: float) -> None:
        """Sleep, or raise :class:`_Stopped` as soon as the agent is stopped."""
        await self._until_stopped(asyncio.sleep(seconds))

    # -- registration and heartbeats ----------------------------------------------------------

    async def _register(self, client: AgentClient) -> None:
        backoff = self._new_backoff()
        while True:
            try:
                body = await self._until_stopped(client.register(self.registration()))
            except httpx.TransportError as exc:
                delay = backoff.next_delay()
                logger.warning("cannot reach %s (%s); registering again in %.1f s", self.url, _describe(exc), delay)
            except ApiError as exc:
                if not exc.transient:
                    raise AgentError(f"the server refused agent {self.agent_id!r}: {exc.status} {exc.code}: "
                                     f"{exc.message} {exc.details or ''}".rstrip()) from exc
                delay = backoff.next_delay(retry_after=exc.retry_after)
                logger.warning("registering: %s; again in %.1f s", exc, delay)
            else:
                self._needs_register.clear()
                self.registered.set()
                granted = body.get("heartbeatSeconds")
                if isinstance(granted, int) and not isinstance(granted, bool) and granted > 0:
                    self.heartbeat_seconds = granted
                logger.info("agent %s registered at %s: %s", self.agent_id, self.url,
                            ", ".join(self.capabilities))
                return
            await self._sleep(delay)

    def _heartbeat_thread(self, stopped: threading.Event) -> None:
        """Heartbeat the agent every ``heartbeat_seconds`` until ``stopped`` (a thread of its own)."""
        client = AgentHeartbeatClient(self.url, self._token, timeout=min(self.request_timeout,
                                                                         max(1.0, self.heartbeat_seconds)))
        unreachable = False
        backoff = self._new_backoff()
        wait = float(self.heartbeat_seconds)
        try:
            while not stopped.wait(wait):
                # After a failure, try again sooner (backoff, at most one
                # interval): the server must hear from us before 3 intervals pass.
                wait = min(float(self.heartbeat_seconds), backoff.next_delay())
                try:
                    body = client.heartbeat(self.agent_id)
                except httpx.TransportError as exc:
                    if not unreachable:
                        logger.warning("heartbeat: cannot reach %s (%s); still trying", self.url, _describe(exc))
                    unreachable = True
                    continue
                except ApiError as exc:
                    if exc.status == 404:
                        logger.warning("heartbeat: the server does not know agent %s; registering again",
                                       self.agent_id)
                        self._needs_register.set()
                    else:
                        logger.warning("heartbeat: %s", exc)
                    continue
                backoff.reset()
                wait = float(self.heartbeat_seconds)
                if unreachable:
                    logger.info("heartbeat: %s reachable again", self.url)
                    unreachable = False
                if body.get("status") not in (None, "active"):
                    logger.warning("heartbeat: the server says agent %s is %s", self.agent_id, body.get("status"))
        finally:
            client.close()

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self, client: AgentClient) -> None:
        slots = asyncio.Semaphore(self.max_concurrency)
        backoff = self._new_backoff()
        while True:
            try:
                await self._until_stopped(slots.acquire())
            except _Stopped:
                return
            try:
                if self._needs_register.is_set():
                    await self._register(client)
                task = await self._until_stopped(client.claim(self.agent_id, wait_seconds=self.claim_wait_seconds))
            except _Stopped:
                slots.release()
                return
            except (httpx.TransportError, ApiError, ProtocolError) as exc:
                slots.release()
                if isinstance(exc, ApiError) and exc.status in (401, 403):
                    raise AgentError(f"the server refused to hand tasks to agent {self.agent_id!r}: {exc}") from exc
                retry_after = exc.retry_after if isinstance(exc, ApiError) else None
                delay = backoff.next_delay(retry_after=retry_after)
                if isinstance(exc, ApiError) and exc.status == 404:
                    logger.warning("claim: the server does not know agent %s; registering again in %.1f s",
                                   self.agent_id, delay)
                    self._needs_register.set()
                else:
                    logger.warning("claim: %s; trying again in %.1f s", _describe(exc), delay)
                try:
                    await self._sleep(delay)
                except _Stopped:
                    return
                continue
            backoff.reset()
            if task is None:
                slots.release()
                continue
            self.stats["claimed"] += 1
            held = _Held(task=task, expires_at=_epoch(task.lease_expires_at))
            self._held[task.task_id] = held
            handler = asyncio.ensure_future(self._handle(client, held))
            held.handler = handler
            handler.add_done_callback(lambda _done: slots.release())

    # -- one task ------------------------------------------------------------------------------

    async def _handle(self, client: AgentClient, held: _Held) -> None:
        task = held.task
        logger.info("task %s claimed: %s for run %s node %s (attempt %d)", task.task_id, task.capability_id,
                    task.run_id, task.node_id, task.attempt)
        renewer = asyncio.ensure_future(self._renew(client, held))
        try:
            spec = self.capabilities.get(task.capability_id)
            if spec is None:
                outcome = _Outcome("fail", failure=TaskFailed(
                    "capability_not_served", f"agent {self.agent_id} does not serve {task.capability_id}"))
            else:
                outcome = await self._call(spec, task.bundle)
            held.state = "reporting"
            await self._report(client, held, outcome)
        finally:
            renewer.cancel()
            self._held.pop(task.task_id, None)

    async def _call(self, spec: CapabilitySpec, bundle: Bundle) -> _Outcome:
        """Run the function on a thread of its own (daemon: a function still
        running when the agent stops does not keep the process alive)."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[_Outcome] = loop.create_future()

        def deliver(outcome: _Outcome) -> None:
            if not result.done():
                result.set_result(outcome)

        def target() -> None:
            outcome = _invoke(spec, bundle)
            try:
                loop.call_soon_threadsafe(deliver, outcome)
            except RuntimeError:
                pass  # the loop closed: the agent stopped and handed the task back

        threading.Thread(target=target, daemon=True, name=f"flex-task-{bundle.node_id}").start()
        return await result

    async def _renew(self, client: AgentClient, held: _Held) -> None:
        """Renew the task's lease while the function runs and its outcome is sent."""
        task = held.task
        failing = False
        while True:
            await asyncio.sleep(self._renew_interval(held))
            try:
                body = await client.renew(task.task_id, task.lease_token)
            except ApiError as exc:
                if exc.code == "lease_lost":
                    held.lost = True
                    self.stats["lease_lost"] += 1
                    logger.warning("task %s: lease lost (%s); its result will be dropped", task.task_id,
                                   exc.message)
                    return
                if not failing:
                    logger.warning("task %s: renewing the lease: %s; still trying", task.task_id, exc)
                failing = True
                continue
            except (httpx.TransportError, ProtocolError) as exc:
                if not failing:
                    logger.warning("task %s: renewing the lease: %s; still trying", task.task_id, _describe(exc))
                failing = True
                continue
            if failing:
                logger.info("task %s: lease renewed again", task.task_id)
                failing = False
            expires = body.get("leaseExpiresAt")
            if isinstance(expires, str):
                try:
                    held.expires_at = _epoch(parse_timestamp(expires))
                except ProtocolError:
                    pass

    def _renew_interval(self, held: _Held) -> float:
        if self.lease_renew_seconds is not None:
            return self.lease_renew_seconds
        remaining = held.expires_at - time.time()
        if remaining <= 0:
            # Expired by our clock (or the clocks disagree, or the server is
            # unreachable): keep trying at a steady pace; the server decides.
            return min(1.0, self.heartbeat_seconds)
        # A third of what is left: two more tries before the lease ends.
        return max(0.2, min(remaining / 3, self.heartbeat_seconds))

    async def _report(self, client: AgentClient, held: _Held, outcome: _Outcome) -> None:
        """Send the outcome; retry while the server cannot be reached (it
        answers ``lease_lost`` once the lease has gone)."""
        task = held.task
        backoff = self._new_backoff()
        while True:
            if held.lost:
                logger.warning("task %s: lease lost; %s dropped", task.task_id, outcome.kind)
                return
            try:
                if outcome.kind == "complete":
                    assert outcome.output is not None
                    await client.complete(task.task_id, task.lease_token, outcome.output)
                    self.stats["completed"] += 1
                    logger.info("task %s completed: %s", task.task_id, ", ".join(outcome.output))
                elif outcome.kind == "clarify":
                    assert outcome.clarify is not None
                    await client.clarify(task.task_id, task.lease_token, question=outcome.clarify.question,
                                         options=outcome.clarify.options,
                                         allow_free_form=outcome.clarify.allow_free_form)
                    self.stats["clarified"] += 1
                    logger.info("task %s: asked a person: %s", task.task_id, outcome.clarify.question)
                else:
                    assert outcome.failure is not None
                    failure = outcome.failure
                    await client.fail(task.task_id, task.lease_token, code=failure.code, message=failure.message,
                                      retryable=failure.retryable)
                    self.stats["failed"] += 1
                    logger.info("task %s failed (%s, %s): %s", task.task_id, failure.code,
                                "retryable" if failure.retryable else "permanent", failure.message)
                return
            except ApiError as exc:
                if exc.code == "lease_lost":
                    self.stats["lease_lost"] += 1
                    logger.warning("task %s: lease lost (%s); %s dropped", task.task_id, exc.message, outcome.kind)
                    return
                if exc.status == 422 and exc.code == "validation_failed":
                    self.stats["rejected"] += 1
                    logger.warning("task %s: the server rejected the output (the attempt counts; the server "
                                   "retries the node or asks a person): %s", task.task_id, _errors(exc.details))
                    return
                if not exc.transient:
                    self.stats["errors"] += 1
                    logger.error("task %s: %s refused: %s", task.task_id, outcome.kind, exc)
                    return
                delay = backoff.next_delay(retry_after=exc.retry_after)
                logger.warning("task %s: %s: %s; trying again in %.1f s", task.task_id, outcome.kind, exc, delay)
            except (httpx.TransportError, ProtocolError) as exc:
                delay = backoff.next_delay()
                logger.warning("task %s: %s: %s; trying again in %.1f s", task.task_id, outcome.kind,
                               _describe(exc), delay)
            await asyncio.sleep(delay)

    # -- stopping ----------------------------------------------------------------------------

    async def _drain(self, client: AgentClient) -> None:
        """Give running tasks ``stop_grace_seconds``; hand back the rest."""
        assert self._stop_now is not None
        handlers = {h.handler for h in self._held.values() if h.handler is not None}
        if handlers:
            logger.info("stopping: waiting up to %.0f s for %d task(s)", self.stop_grace_seconds, len(handlers))
            # Until every handler is done, a second signal, or the grace period is over.
            all_done: asyncio.Future[Any] = asyncio.ensure_future(asyncio.wait(handlers))
            now: asyncio.Future[Any] = asyncio.ensure_future(self._stop_now.wait())
            await asyncio.wait({all_done, now}, timeout=self.stop_grace_seconds, return_when=asyncio.FIRST_COMPLETED)
            all_done.cancel()
            now.cancel()
        for held in list(self._held.values()):
            if held.state == "running" and not held.lost:
                await self._hand_back(client, held)
            if held.handler is not None and held.state == "running":
                held.handler.cancel()
        # Outcomes being sent get a last short while, then are abandoned (the lease expires).
        reporting = [h.handler for h in self._held.values() if h.handler is not None and not h.handler.done()]
        if reporting:
            await asyncio.wait(reporting, timeout=min(5.0, self.request_timeout))
            for handler in reporting:
                handler.cancel()

    async def _hand_back(self, client: AgentClient, held: _Held) -> None:
        task = held.task
        try:
            await client.fail(task.task_id, task.lease_token, code=STOPPING_CODE,
                              message=f"agent {self.agent_id} stopped before finishing; handed back",
                              retryable=True)
        except (ApiError, httpx.TransportError) as exc:
            logger.warning("task %s: handing back: %s (its lease will expire instead)", task.task_id,
                           _describe(exc))
            return
        self.stats["handed_back"] += 1
        logger.info("task %s handed back", task.task_id)


def _invoke(spec: CapabilitySpec, bundle: Bundle) -> _Outcome:
    """Call the function; turn whatever it does into an outcome (never raises)."""
    try:
        output = spec.function(bundle)
    except Clarify as question:
        return _Outcome("clarify", clarify=question)
    except TaskFailed as failure:
        return _Outcome("fail", failure=failure)
    except Exception as exc:  # noqa: BLE001 — a bug in the function is a retryable failure, as in-process
        logger.exception("capability %s raised", spec.capability_id)
        return _Outcome("fail", failure=TaskFailed("capability_exception", f"{type(exc).__name__}: {exc}"))
    if not isinstance(output, Mapping) or not all(isinstance(key, str) for key in output):
        return _Outcome("fail", failure=TaskFailed(
            "invalid_output", f"{spec.capability_id} returned {type(output).__name__}, not a mapping of facet "
                              "names to values"))
    try:
        json.dumps(output)
    except (TypeError, ValueError) as exc:
        return _Outcome("fail", failure=TaskFailed("invalid_output", f"the output is not JSON: {exc}"))
    return _Outcome("complete", output=output)


def _epoch(moment: datetime) -> float:
    return moment.astimezone(timezone.utc).timestamp()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _errors(details: Mapping[str, Any]) -> str:
    errors = details.get("errors")
    if isinstance(errors, list):
        return "; ".join(f"{e.get('path', '')}: {e.get('message', '')}" if isinstance(e, dict) else str(e)
                         for e in errors)
    return json.dumps(dict(details))
