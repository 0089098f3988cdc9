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
from planner.types import Capability, Facet

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

    def __init__(self, envelope: dict[str, Any], classes: list[type[Capability]]) -> None:
        planner_policy = (envelope.get("policies") or {}).get("planner") or {}
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
        self.usable = {
            cls.capability_id: cls for cls in classes
            if cls.capability_id != OUTPUT_MAPPER_ID
            and cls.capability_id not in self.forbid and cls.kind not in self.forbidden_kinds
        }
        self.excluded = sorted(cls.capability_id for cls in classes
                               if cls.capability_id != OUTPUT_MAPPER_ID and cls.capability_id not in self.usable)

    def rank(self, capability_id: str) -> tuple[int, str]:
        # required > preferred > neither > selected only on request
        # (`selected_by_default` False: the language-model twins) > avoided;
        # then stable by id.
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
        return order, capability_id

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
    def __init__(self, envelope: dict[str, Any], catalog: dict[str, Facet], classes: list[type[Capability]]) -> None:
        self.envelope = envelope
        self.catalog = catalog
        self.selection = _Selection(envelope, classes)
        self.available = set((envelope.get("inputs") or {}).keys())
        self.all_classes = {cls.capability_id: cls for cls in classes}
        self.state = _State()
        self.diagnostics: list[dict[str, Any]] = []
        self.cycle_seen = False

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
        message = f"No capability can produce facet '{facet}' from the inputs"
        excluded = [capability_id for capability_id in self.selection.excluded
                    if facet in self.all_classes[capability_id].output_facets]
        if excluded:
            message += f" (excluded by policy: {', '.join(excluded)})"
        return {"code": "unsatisfiable_facet", "message": message, "facet": facet}


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
               registry: Any = None) -> PlanResult:
    """Plan the envelope; with any diagnostic the graph is None (see the module docstring)."""
    if catalog is None:
        from planner.facets import get_catalog

        catalog = get_catalog()
    if registry is None:
        from planner.registry import get_registry

        registry = get_registry()
    classes = registry.classes()
    planner = _Planner(envelope, catalog, classes)
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
        if cls is None:
            why = "it is also forbidden" if capability_id in selection.forbid else (
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
        if kind == "transformation" or any(planner.all_classes[c].kind == kind for c in planner.state.chosen):
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
    ids = _node_ids(order, {cid: cls.node_name for cid, cls in planner.all_classes.items() if cls.node_name})

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
    }
    mode = (envelope.get("outputContract") or {}).get("mode", "json_schema")
    graph = PlanGraph(nodes=frozen_nodes, edges=tuple(edges), output_mode=mode, output_node_id=OUTPUT_NODE_ID,
                      metadata=metadata, schema_hash=graph_schema_hash(frozen_nodes))
    return graph, []


def _work_node(cid: str, ids: dict[str, str], consumes: tuple[list[str], list[str]], depends: list[str],
               planner: _Planner, *, fed: list[str]) -> PlanNode:
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
    deps = {cid: {state.producer_of[f] for f in planner.all_classes[cid].input_facets
                  if f in state.producer_of and state.producer_of[f] != cid} for cid in state.chosen}
    result: dict[str, tuple[list[str], list[str]]] = {}
    for cid in state.chosen:
        cls = planner.all_classes[cid]
        optional = []
        for facet in cls.optional_input_facets:
            producer = state.producer_of.get(facet)
            if facet in planner.available:
                optional.append(facet)
            elif producer and producer != cid and cid not in _upstream(producer, deps):
                optional.append(facet)
                deps[cid].add(producer)
        result[cid] = (list(cls.input_facets), optional)
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


def _node_ids(order: list[str], names: dict[str, str] | None = None) -> dict[str, str]:
    """Short, stable ids: the capability's `node_name` when it declares one
    (the language-model twins take their namesakes' node ids, so runtime
    policies that select a node by id apply to either), else its id up to the
    first dot; de-duplicated with -2, -3…"""
    taken = {OUTPUT_NODE_ID}
    ids: dict[str, str] = {}
    for cid in order:
        base = (names or {}).get(cid) or cid.split(".", 1)[0] or "node"
        candidate, suffix = base, 2
        while candidate in taken:
            candidate, suffix = f"{base}-{suffix}", suffix + 1
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
