"""Flex Agents agent SDK: serve capabilities to a Flex Agents server from
any Python program.

    from flexagents_sdk import Agent, Bundle, Clarify, TaskFailed

See the package README (clients/python/README.md) and docs/agents.md.
"""
from flexagents_sdk.agent import Agent, CapabilityFunction, CapabilitySpec
from flexagents_sdk.backoff import Backoff
from flexagents_sdk.bundle import Bundle, Clarification, ProtocolError, Task, parse_task
from flexagents_sdk.client import AgentClient, AgentHeartbeatClient
from flexagents_sdk.errors import AgentError, ApiError, Clarify, TaskFailed

__all__ = [
    "Agent", "AgentClient", "AgentError", "AgentHeartbeatClient", "ApiError", "Backoff", "Bundle", "CapabilityFunction",
    "CapabilitySpec", "Clarification", "Clarify", "ProtocolError", "Task", "TaskFailed", "parse_task",
]
__version__ = "0.1.0"
