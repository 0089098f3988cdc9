"""The default planner: deterministic facet reachability, no ORM, no I/O.

`build_plan` turns a (validated) envelope into a `PlanGraph` whose nodes
derive every facet the output contract needs from the facets the envelope
provides, or into diagnostics that say why it cannot.

1. Decide the facets the output needs (the contract) and those the inputs give.
2. Work backwards: pick a producer for each missing facet (ranked by the
   selection policy), then for that producer's inputs, backtracking on cycles
   and dead ends.
3. Add capabilities the policy requires (`selection.require`,
   `topology.requiredKinds`) when their inputs can be met.
4. Wire optional inputs, order the nodes topologically, append the output
   mapper, check the limits (`maxDepth`, `constraints.maxNodes`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from planner.capabilities.output import OUTPUT_FACET, OUTPUT_MAPPER_ID, output_node_contract
from planner.contracts import canonical_json, compile_facets, schema_hash
from planner.types import DEFAULT_OBJECTIVE, Capability, Facet

OUTPUT_NODE_ID = "output"


# --- the graph ---------------------------------------------------------------------

@dataclass(frozen=True)
class PlanNode:
    id: str
    capability_id: str
    kind: str
    label: str
    input_facets: tuple[str, ...]
    optional_input_facets: tuple[str, ...]
    output_facets: tuple[str, ...]
    contract: dict[str, Any]
    contract_hash: str
    rationale: str
    depends_on: tuple[str, ...]  # node ids

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "capabilityId": self.capability_id,
            "kind": self.kind,
            "label": self.label,
            "inputFacets": list(self.input_facets),
            "optionalInputFacets": list(self.optional_input_facets),
            "outputFacets": list(self.output_facets),
            "contract": self.contract,
            "contractHash": self.contract_hash,
            "rationale": self.rationale,
            "dependsOn": list(self.depends_on),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanNode:
        return cls(
            id=data["id"],
            capability_id=data["capabilityId"],
            kind=data["kind"],
            label=data["label"],
            input_facets=tuple(data["inputFacets"]),
            optional_input_facets=tuple(data["optionalInputFacets"]),
            output_facets=tuple(data["outputFacets"]),
            contract=data["contract"],
            contract_hash=data["contractHash"],
            rationale=data["rationale"],
            depends_on=tuple(data["dependsOn"]),
        )


@dataclass(frozen=True)
class PlanGraph:
    nodes: tuple[PlanNode, ...]  # topological order; the output mapper is last
    edges: tuple[dict[str, Any], ...]  # {"from": node_id, "to": node_id, "facets": [...]}
    output_mode: str
    output_node_id: str
    metadata: dict[str, Any]
    schema_hash: str  # hash over all node contract hashes

    def node(self, node_id: str) -> PlanNode:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [node.to_dict() for node in self.nodes],
            "edges": [dict(edge, facets=list(edge["facets"])) for edge in self.edges],
            "outputMode": self.output_mode,
            "outputNodeId": self.output_node_id,
            "metadata": self.metadata,
            "schemaHash": self.schema_hash,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanGraph:
        return cls(
            nodes=tuple(PlanNode.from_dict(node) for node in data["nodes"]),
            edges=tuple(dict(edge, facets=list(edge["facets"])) for edge in data["edges"]),
            output_mode=data["outputMode"],
            output_node_id=data["outputNodeId"],
            metadata=data["metadata"],
            schema_hash=data["schemaHash"],
        )


@dataclass(frozen=True)
class Replan:
    """What a replan keeps and leaves out (docs/planning.md).

    - `keep`: graph node dicts (`PlanNode.to_dict()`) of completed nodes: they
      stay in the new plan as they are, their facets count as produced, and
      they never run again;
    - `exclude`: capability ids the planner must not choose (failed, inactive);
    - `node_ids`: capability id -> node id of an existing node row the new
      plan reuses for that capability (a node that runs again keeps its id);
    - `taken_ids`: every node id the run has used, so a new node never takes
      the id of an old one (e.g. the failed node of an excluded capability).
    """

    keep: tuple[dict[str, Any], ...] = ()
    exclude: frozenset[str] = frozenset()
    node_ids: dict[str, str] = field(default_factory=dict)
    taken_ids: frozenset[str] = frozenset()


@dataclass
class PlanResult:
    graph: PlanGraph | None
    diagnostics: list[dict[str, Any]] = field(default_factory=list)  # [{"code", "message", "facet"?, "capabilityId"?}]
    considered: list[str] = field(default_factory=list)  # capability ids considered


def graph_schema_hash(nodes: tuple[PlanNode, ...]) -> str:
    """One hash for a plan's contracts: it changes when any node's contract does."""
    return hashlib.sha256(canonical_json([[node.id, node.contract_hash] for node in nodes]).encode()).hexdigest()


# --- planning ------------------------------------------------------------------------

class _Selection:
    """The selection policy and topology filters, applied to the registered capabilities."""

    def __init__(self, envelope: dict[str, Any], classes: list[type[Capability]],
                 exclude: frozenset[str] = frozenset()) -> None:
        planner_policy = (envelope.get("policies") or {}).get("planner") or {}
        self.objective: str = (planner_policy.get("optimisation") or {}).get("objective") or DEFAULT_OBJECTIVE
        self.objective_given = bool((planner_policy.get("optimisation") or {}).get("objective"))
        self.replan_excluded = set(exclude)
        self.traits = {cls.capability_id: cls.trait(self.objective) for cls in classes}
        selection = planner_policy.get("selection") or {}
        topology = planner_policy.get("topology") or {}
        self.require = list(selection.get("require") or [])
        self.forbid = set(selection.get("forbid") or [])
        self.prefer = set(selection.get("prefer") or [])
        self.avoid = set(selection.get("avoid") or [])
        self.forbidden_kinds = set(topology.get("forbiddenKinds") or [])
        self.required_kinds = list(topology.get("requiredKinds") or [])
        self.max_depth: int | None = topology.get("maxDepth")
        # The output mapper is structural: never a producer, never filtered.
        # Only active capabilities are planned (an agent that stopped
        # heartbeating serves nothing): `capability_inactive` diagnostics.
        self.inactive = {cls.capability_id for cls in classes if getattr(cls, "status", "active") != "active"}
        self.usable = {
            cls.capability_id: cls for cls in classes
            if cls.capability_id != OUTPUT_MAPPER_ID and cls.capability_id not in self.inactive
            and cls.capability_id not in self.forbid and cls.kind not in self.forbidden_kinds
            and cls.capability_id not in self.replan_excluded
        }
        self.excluded = sorted(cls.capability_id for cls in classes
                               if cls.capability_id != OUTPUT_MAPPER_ID and cls.capability_id not in self.usable
                               and cls.capability_id not in self.replan_excluded
                               and cls.capability_id not in self.inactive)

    def rank(self, capability_id: str) -> tuple[int, float, str]:
        # required > preferred > neither > selected only on request
        # (`selected_by_default` False: the language-model twins) > avoided;
        # then the objective's trait, highest first; then stable by id.
        if capability_id in self.require:
            order = 0
        elif capability_id in self.prefer:
            order = 1
        elif capability_id in self.avoid:
            order = 4
        elif capability_id in self.usable and not self.usable[capability_id].selected_by_default:
            order = 3
        else:
            order = 2
        return order, -self.traits.get(capability_id, 0.0), capability_id

    def why(self, capability_id: str, producers: list[type[Capability]]) -> str:
        """Why this producer rather than the others (the plan's rationale)."""
        others = [cls.capability_id for cls in producers if cls.capability_id != capability_id]
        if capability_id in self.require:
            return "required by selection.require"
        if not others:
            return "the only usable capability that produces it"
        if capability_id in self.prefer:
            return f"preferred by selection.prefer over {', '.join(others)}"
        avoided = [o for o in others if o in self.avoid]
        if avoided and len(avoided) == len(others):
            return f"chosen over {', '.join(avoided)}, avoided by selection.avoid"
        on_request = [o for o in others if o in self.usable and not self.usable[o].selected_by_default]
        if on_request and len(on_request) == len(others) and self.rank(capability_id)[0] == 2:
            return (f"chosen over {', '.join(on_request)}, planned only when the envelope requires "
                    "or prefers it")
        ids = [cls.capability_id for cls in producers]
        ahead = ids[:ids.index(capability_id)]
        behind = [o for o in ids[ids.index(capability_id) + 1:]
                  if self.rank(o)[0] == self.rank(capability_id)[0]
                  and self.traits.get(o, 0.0) < self.traits.get(capability_id, 0.0)]
        if not ahead and behind:
            source = "optimisation.objective" if self.objective_given else "the default objective"
            return (f"{self.objective} {self.traits.get(capability_id, 0.0):g} beats "
                    f"{', '.join(f'{o} {self.traits.get(o, 0.0):g}' for o in behind)} by {source}")
        if ahead:
            # An earlier-ranked producer could not be planned (its own inputs).
            return f"{', '.join(ahead)} could not be planned"
        return f"first by id of {len(producers)} that produce it"

    def producers(self, facet: str) -> list[type[Capability]]:
        found = [cls for cls in self.usable.values() if facet in cls.output_facets]
        return sorted(found, key=lambda cls: self.rank(cls.capability_id))


@dataclass
class _State:
    """Capabilities chosen so far (in dependency order) and which one produces each facet."""

    chosen: list[str] = field(default_factory=list)
    producer_of: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def copy(self) -> _State:
        return _State(list(self.chosen), dict(self.producer_of), dict(self.reasons))

    def adopt(self, other: _State) -> None:
        self.chosen, self.producer_of, self.reasons = other.chosen, other.producer_of, other.reasons


class _Planner:
    def __init__(self, envelope: dict[str, Any], catalog: dict[str, Facet], classes: list[type[Capability]],
                 replan: Replan | None = None) -> None:
        self.envelope = envelope
        self.catalog = catalog
        self.replan = replan or Replan()
        self.selection = _Selection(envelope, classes, self.replan.exclude)
        self.available = set((envelope.get("inputs") or {}).keys())
        self.all_classes = {cls.capability_id: cls for cls in classes}
        self.state = _State()
        self.diagnostics: list[dict[str, Any]] = []
        self.cycle_seen = False
        # Kept nodes come first: their facets are produced, they are never re-planned.
        self.kept: dict[str, PlanNode] = {}
        for data in self.replan.keep:
            node = PlanNode.from_dict(data)
            self.kept[node.capability_id] = node
            self.state.chosen.append(node.capability_id)
            self.state.reasons[node.capability_id] = node.rationale
            for facet in node.output_facets:
                if facet not in self.available:
                    self.state.producer_of.setdefault(facet, node.capability_id)

    def kind_of(self, capability_id: str) -> str:
        kept = self.kept.get(capability_id)
        return kept.kind if kept is not None else self.all_classes[capability_id].kind

    def inputs_of(self, capability_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(required, optional) input facets: a kept node's as planned, else its class's."""
        kept = self.kept.get(capability_id)
        if kept is not None:
            return kept.input_facets, kept.optional_input_facets
        cls = self.all_classes[capability_id]
        return cls.input_facets, cls.optional_input_facets

    # Backward search. Both functions work on a trial state and report success;
    # the caller adopts the trial only on success, which is the backtracking.
    def resolve(self, facet: str, state: _State, visiting: frozenset[str]) -> bool:
        if facet in self.available or facet in state.producer_of:
            return True
        if facet in visiting:
            self.cycle_seen = True
            return False
        producers = self.selection.producers(facet)
        for cls in producers:
            if cls.capability_id in state.chosen:
                continue  # chosen already, yet this facet is not marked: it is mid-resolution
            trial = state.copy()
            reason = f"produces {facet} ({self.selection.why(cls.capability_id, producers)})"
            if self.add(cls, trial, visiting | {facet}, reason=reason):
                state.adopt(trial)
                return True
        return False

    def add(self, cls: type[Capability], state: _State, visiting: frozenset[str], *, reason: str) -> bool:
        for facet in cls.input_facets:
            if not self.resolve(facet, state, visiting):
                return False
        state.chosen.append(cls.capability_id)
        state.reasons[cls.capability_id] = reason
        for facet in cls.output_facets:
            if facet not in self.available:
                state.producer_of.setdefault(facet, cls.capability_id)
        return True

    def need(self, facet: str) -> bool:
        self.cycle_seen = False
        trial = self.state.copy()
        if self.resolve(facet, trial, frozenset()):
            self.state.adopt(trial)
            return True
        return False

    def unsatisfiable(self, facet: str) -> dict[str, Any]:
        if self.cycle_seen:
            return {"code": "cycle", "facet": facet,
                    "message": f"Every way to produce facet '{facet}' needs '{facet}' itself (a cycle)"}
        inactive = sorted(capability_id for capability_id in self.selection.inactive
                          if facet in self.all_classes[capability_id].output_facets
                          and capability_id not in self.selection.forbid)
        if inactive:
            return {"code": "capability_inactive", "facet": facet, "capabilityId": inactive[0],
                    "capabilityIds": inactive,
                    "message": f"Facet '{facet}' can only be produced by inactive capabilities "
                               f"({', '.join(inactive)}): their agents stopped sending heartbeats"}
        message = f"No capability can produce facet '{facet}' from the inputs"
        excluded = [capability_id for capability_id in self.selection.excluded
                    if facet in self.all_classes[capability_id].output_facets]
        if excluded:
            message += f" (excluded by policy: {', '.join(excluded)})"
        replaced = sorted(self.replan.exclude)
        if replaced:
            # Directly (a producer of this facet) or not (a producer of its inputs).
            message += f" (excluded by the replan: {', '.join(replaced)})"
        diagnostic: dict[str, Any] = {"code": "unsatisfiable_facet", "message": message, "facet": facet}
        if replaced:
            diagnostic["excludedCapabilities"] = replaced
        return diagnostic


def output_facets_needed(envelope: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(required facets, optional facets) of the output contract."""
    contract = envelope.get("outputContract") or {}
    if contract.get("mode") == "facets":
        return list(dict.fromkeys(contract.get("facets") or [])), []
    schema = contract.get("schema") or {}
    properties = list((schema.get("properties") or {}).keys()) if isinstance(schema, dict) else []
    required = list(dict.fromkeys(schema.get("required") or [])) if isinstance(schema, dict) else []
    optional = [name for name in properties if name not in required]
    return required, optional


def build_plan(envelope: dict[str, Any], *, catalog: dict[str, Facet] | None = None,
               registry: Any = None, replan: Replan | None = None) -> PlanResult:
    """Plan the envelope; with any diagnostic the graph is None (see the module docstring).

    With `replan`, plan again around the kept nodes and without the excluded
    capabilities (docs/planning.md)."""
    if catalog is None:
        from planner.facets import get_catalog

        catalog = get_catalog()
    if registry is None:
        from planner.registry import get_registry

        registry = get_registry()
    classes = registry.classes()
    planner = _Planner(envelope, catalog, classes, replan)
    considered = sorted([*planner.selection.usable, OUTPUT_MAPPER_ID])

    required, optional = output_facets_needed(envelope)
    contract_facets = [facet for facet in required if planner.need(facet)]
    missing = [facet for facet in required if facet not in contract_facets]
    planner.diagnostics += [planner.unsatisfiable(facet) for facet in missing]
    # Non-required properties join the output only if something can make them.
    contract_facets += [facet for facet in optional if facet in catalog and planner.need(facet)]

    _add_required_capabilities(planner)
    _add_required_kinds(planner)
    if planner.diagnostics:
        return PlanResult(graph=None, diagnostics=planner.diagnostics, considered=considered)

    graph, limit_diagnostics = _assemble(planner, envelope, contract_facets)
    if limit_diagnostics or graph is None:
        return PlanResult(graph=None, diagnostics=limit_diagnostics, considered=considered)
    warnings = plan_warnings(envelope, graph=graph, capability_ids=list(planner.all_classes))
    graph = replace(graph, metadata={**graph.metadata, "warnings": warnings})
    return PlanResult(graph=graph, diagnostics=[], considered=considered)


def plan_warnings(envelope: dict[str, Any], *, graph: PlanGraph | None,
                  capability_ids: list[str]) -> list[dict[str, Any]]:
    """Runtime-policy selectors that cannot fire on `graph` (or on any plan, when it is None)."""
    from planner.envelope import selector_warnings

    if not (envelope.get("policies") or {}).get("runtime"):
        return []  # no selectors to check (and no node ids of the whole catalog to compute)
    possible = {*_node_ids(sorted(c for c in capability_ids if c != OUTPUT_MAPPER_ID)).values(), OUTPUT_NODE_ID}
    if graph is None:
        return selector_warnings(envelope, possible_node_ids=possible)
    return selector_warnings(envelope, possible_node_ids=possible, plan_node_ids={n.id for n in graph.nodes},
                             plan_capability_ids={n.capability_id for n in graph.nodes})


def _add_required_capabilities(planner: _Planner) -> None:
    selection = planner.selection
    for capability_id in selection.require:
        if capability_id == OUTPUT_MAPPER_ID or capability_id in planner.state.chosen:
            continue
        cls = selection.usable.get(capability_id)
        if cls is None and capability_id in selection.inactive:
            planner.diagnostics.append({"code": "capability_inactive", "capabilityId": capability_id,
                                        "message": f"Capability '{capability_id}' is required but inactive "
                                                   "(its agent stopped sending heartbeats)"})
            continue
        if cls is None:
            why = "it is also forbidden" if capability_id in selection.forbid else (
                "the replan excludes it" if capability_id in selection.replan_excluded else
                "its kind is forbidden" if capability_id in planner.all_classes else "it is not registered")
            planner.diagnostics.append({"code": "required_capability_unavailable", "capabilityId": capability_id,
                                        "message": f"Capability '{capability_id}' is required but {why}"})
            continue
        trial = planner.state.copy()
        if planner.add(cls, trial, frozenset(), reason="required by selection.require"):
            planner.state.adopt(trial)
        else:
            planner.diagnostics.append({
                "code": "required_capability_unsatisfiable", "capabilityId": capability_id,
                "message": f"Capability '{capability_id}' is required but its inputs "
                           f"({', '.join(cls.input_facets)}) cannot be produced from the inputs"})


def _add_required_kinds(planner: _Planner) -> None:
    for kind in planner.selection.required_kinds:
        if kind == "transformation" or any(planner.kind_of(c) == kind for c in planner.state.chosen):
            continue  # the output mapper is a transformation node in every plan
        candidates = sorted((cls for cls in planner.selection.usable.values() if cls.kind == kind),
                            key=lambda cls: planner.selection.rank(cls.capability_id))
        for cls in candidates:
            trial = planner.state.copy()
            if planner.add(cls, trial, frozenset(), reason=f"the topology requires a '{kind}' node"):
                planner.state.adopt(trial)
                break
        else:
            planner.diagnostics.append({"code": "required_kind_missing",
                                        "message": f"The topology requires a '{kind}' node, and no usable "
                                                   f"capability of that kind can run on these inputs"})


# --- assembling the graph ----------------------------------------------------------

def _assemble(planner: _Planner, envelope: dict[str, Any],
              contract_facets: list[str]) -> tuple[PlanGraph | None, list[dict[str, Any]]]:
    state = planner.state
    consumes = _consumption(planner)
    order = _topological(state.chosen, consumes, state.producer_of)
    ids = _node_ids(order, kept={cid: node.id for cid, node in planner.kept.items()},
                    reuse=planner.replan.node_ids, taken=set(planner.replan.taken_ids),
                    names={cid: cls.node_name for cid, cls in planner.all_classes.items() if cls.node_name})

    # Wire first, so that each node's rationale can name what it feeds.
    wiring = {cid: _wire(ids[cid], [*consumes[cid][0], *consumes[cid][1]], state.producer_of, ids)
              for cid in order}
    consumed_by = {cid: [p for p in order if cid in wiring[p][0]] for cid in order}
    output_depends, output_edges = _wire(OUTPUT_NODE_ID, contract_facets, state.producer_of, ids)
    # Nodes nobody consumes (added by policy, say) still finish before the output.
    for cid in order:
        if not consumed_by[cid] and cid not in output_depends:
            output_depends.append(cid)
            output_edges.append({"from": ids[cid], "to": OUTPUT_NODE_ID, "facets": []})

    nodes = [_work_node(cid, ids, consumes[cid], wiring[cid][0], planner,
                        fed=[ids[c] for c in consumed_by[cid]] + ([OUTPUT_NODE_ID] if cid in output_depends else []))
             for cid in order]
    nodes.append(_output_node(planner, envelope, contract_facets,
                              depends_on=tuple(ids[cid] for cid in order if cid in output_depends)))
    frozen_nodes = tuple(nodes)
    diagnostics = _limits(planner, envelope, frozen_nodes)
    if diagnostics:
        return None, diagnostics
    edges = [edge for cid in order for edge in wiring[cid][1]] + output_edges
    metadata = {
        "planner": "facet-reachability",
        "inputFacets": sorted(planner.available),
        "outputFacets": list(contract_facets),
        "variantCount": (((envelope.get("policies") or {}).get("planner") or {}).get("topology") or {}).get(
            "variantCount", 1),
        "facetProducers": {facet: ids[cid] for facet, cid in sorted(state.producer_of.items())},
        "objective": planner.selection.objective,
    }
    if planner.replan.keep or planner.replan.exclude:
        metadata["replan"] = {"keptNodes": [node.id for node in planner.kept.values()],
                              "excludedCapabilities": sorted(planner.replan.exclude)}
    mode = (envelope.get("outputContract") or {}).get("mode", "json_schema")
    graph = PlanGraph(nodes=frozen_nodes, edges=tuple(edges), output_mode=mode, output_node_id=OUTPUT_NODE_ID,
                      metadata=metadata, schema_hash=graph_schema_hash(frozen_nodes))
    return graph, []


def _work_node(cid: str, ids: dict[str, str], consumes: tuple[list[str], list[str]], depends: list[str],
               planner: _Planner, *, fed: list[str]) -> PlanNode:
    kept = planner.kept.get(cid)
    if kept is not None:
        return kept  # as it ran: same id, contract and wiring
    cls = planner.all_classes[cid]
    contract = compile_facets(cls.output_facets, catalog=planner.catalog).schema
    reason = planner.state.reasons[cid]
    rationale = f"{reason[0].upper()}{reason[1:]}; feeds {', '.join(fed)}"
    return PlanNode(
        id=ids[cid], capability_id=cid, kind=cls.kind, label=cls.display_name,
        input_facets=tuple(consumes[0]), optional_input_facets=tuple(consumes[1]),
        output_facets=tuple(cls.output_facets), contract=contract, contract_hash=schema_hash(contract),
        rationale=rationale, depends_on=tuple(ids[p] for p in depends),
    )


def _consumption(planner: _Planner) -> dict[str, tuple[list[str], list[str]]]:
    """`{capability id: (required inputs, optional inputs it will get)}` for the chosen capabilities.

    An optional input is consumed if the envelope gives it or a node of the
    plan produces it — unless that node already depends on this one, which
    would close a cycle. Decisions are made in choice order, each seeing the
    dependencies accepted before it, so two optional inputs cannot form a loop.
    """
    state = planner.state
    deps = {cid: {state.producer_of[f] for f in planner.inputs_of(cid)[0]
                  if f in state.producer_of and state.producer_of[f] != cid} for cid in state.chosen}
    result: dict[str, tuple[list[str], list[str]]] = {}
    for cid in state.chosen:
        required_inputs, optional_inputs = planner.inputs_of(cid)
        if cid in planner.kept:
            # A kept node consumed what it consumed; its producers are kept too.
            for facet in optional_inputs:
                if state.producer_of.get(facet) not in (None, cid):
                    deps[cid].add(state.producer_of[facet])
            result[cid] = (list(required_inputs), list(optional_inputs))
            continue
        optional = []
        for facet in optional_inputs:
            producer = state.producer_of.get(facet)
            if facet in planner.available:
                optional.append(facet)
            elif producer and producer != cid and cid not in _upstream(producer, deps):
                optional.append(facet)
                deps[cid].add(producer)
        result[cid] = (list(required_inputs), optional)
    return result


def _upstream(capability_id: str, deps: dict[str, set[str]]) -> set[str]:
    """Every capability that `capability_id` depends on, directly or not."""
    seen: set[str] = set()
    stack = [capability_id]
    while stack:
        for producer in deps.get(stack.pop(), ()):
            if producer not in seen:
                seen.add(producer)
                stack.append(producer)
    return seen


def _topological(chosen: list[str], consumes: dict[str, tuple[list[str], list[str]]],
                 producer_of: dict[str, str]) -> list[str]:
    """Kahn's algorithm; ties keep the order in which capabilities were chosen (determinism)."""
    position = {cid: index for index, cid in enumerate(chosen)}
    deps = {cid: {producer_of[f] for f in [*req, *opt] if f in producer_of and producer_of[f] != cid}
            for cid, (req, opt) in consumes.items()}
    order: list[str] = []
    remaining = dict(deps)
    while remaining:
        ready = sorted((cid for cid, d in remaining.items() if not d - set(order)), key=position.__getitem__)
        if not ready:  # cannot happen: the search never closes a cycle; fail loudly if it does
            raise RuntimeError(f"plan has a cycle among {sorted(remaining)}")
        order.append(ready[0])
        del remaining[ready[0]]
    return order


def _node_ids(order: list[str], *, kept: dict[str, str] | None = None, reuse: dict[str, str] | None = None,
              taken: set[str] | None = None, names: dict[str, str] | None = None) -> dict[str, str]:
    """Short, stable ids: the capability's `node_name` when it declares one
    (the language-model twins take their namesakes' node ids, so runtime
    policies that select a node by id apply to either), else its id up to the
    first dot; de-duplicated with -2, -3…

    On a replan, kept nodes keep their ids, a capability that runs again
    reuses its node's id (`reuse`), and new nodes avoid every id the run has
    used (`taken`)."""
    kept, reuse = kept or {}, reuse or {}
    ids: dict[str, str] = {cid: kept[cid] for cid in order if cid in kept}
    ids.update({cid: reuse[cid] for cid in order if cid in reuse and cid not in ids})
    taken = {OUTPUT_NODE_ID, *(taken or set()), *ids.values()}
    next_suffix: dict[str, int] = {}  # per base: where the search for a free suffix resumes
    for cid in order:
        if cid in ids:
            continue
        base = (names or {}).get(cid) or cid.split(".", 1)[0] or "node"
        suffix = next_suffix.get(base, 2)
        candidate = base if base not in next_suffix else f"{base}-{suffix}"
        while candidate in taken:
            candidate, suffix = f"{base}-{suffix}", suffix + 1
        next_suffix[base] = suffix
        taken.add(candidate)
        ids[cid] = candidate
    return ids


def _wire(node_id: str, facets: list[str], producer_of: dict[str, str],
          ids: dict[str, str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Producers this node depends on (capability ids, first-use order) and its incoming edges."""
    by_producer: dict[str, list[str]] = {}
    for facet in facets:
        producer = producer_of.get(facet)
        if producer and ids.get(producer) != node_id:
            by_producer.setdefault(producer, []).append(facet)
    edges = [{"from": ids[producer], "to": node_id, "facets": passed} for producer, passed in by_producer.items()]
    return list(by_producer), edges


def _output_node(planner: _Planner, envelope: dict[str, Any], contract_facets: list[str], *,
                 depends_on: tuple[str, ...]) -> PlanNode:
    contract_spec = envelope.get("outputContract") or {}
    if contract_spec.get("mode") == "facets":
        inner = compile_facets(contract_facets, catalog=planner.catalog).schema
    else:
        inner = contract_spec.get("schema") or {"type": "object"}
    contract = output_node_contract(inner)
    mapper = planner.all_classes.get(OUTPUT_MAPPER_ID)
    return PlanNode(
        id=OUTPUT_NODE_ID, capability_id=OUTPUT_MAPPER_ID, kind="transformation",
        label=mapper.display_name if mapper else "Output mapper",
        input_facets=tuple(contract_facets), optional_input_facets=(), output_facets=(OUTPUT_FACET,),
        contract=contract, contract_hash=schema_hash(contract),
        rationale="Maps the facets onto the caller's output contract", depends_on=depends_on,
    )


def _limits(planner: _Planner, envelope: dict[str, Any], nodes: tuple[PlanNode, ...]) -> list[dict[str, Any]]:
    """`constraints.maxNodes` counts every node, the output mapper included;
    `topology.maxDepth` counts the work nodes on the longest chain (the mapper is not work)."""
    diagnostics = []
    max_nodes = (envelope.get("constraints") or {}).get("maxNodes", 20)
    if len(nodes) > max_nodes:
        diagnostics.append({"code": "max_nodes_exceeded",
                            "message": f"The plan needs {len(nodes)} nodes; constraints.maxNodes is {max_nodes}"})
    max_depth = planner.selection.max_depth
    if max_depth is not None:
        depth: dict[str, int] = {}
        for node in nodes:
            if node.id == OUTPUT_NODE_ID:
                continue
            depth[node.id] = 1 + max((depth[d] for d in node.depends_on if d in depth), default=0)
        longest = max(depth.values(), default=0)
        if longest > max_depth:
            diagnostics.append({"code": "max_depth_exceeded",
                                "message": f"The plan is {longest} nodes deep; topology.maxDepth is {max_depth}"})
    return diagnostics


def preview_plan(envelope: dict[str, Any], *, catalog: dict[str, Facet] | None = None,
                 registry: Any = None) -> dict[str, Any]:
    """What `POST plan.preview` returns: the plan the planner would run, or why not."""
    result = build_plan(envelope, catalog=catalog, registry=registry)
    if result.graph is not None:
        return {"plan": result.graph.to_dict(), "diagnostics": list(result.graph.metadata["warnings"])}
    if registry is None:
        from planner.registry import get_registry

        registry = get_registry()
    warnings = plan_warnings(envelope, graph=None, capability_ids=registry.ids())
    return {"plan": None, "diagnostics": [*result.diagnostics, *warnings]}
