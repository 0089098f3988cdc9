"""Pure scheduling: which nodes are ready. No database."""
from runs.engine.scheduling import NodeState, is_finished, node_states, pending_node_ids, ready_nodes


def chain(*statuses: str) -> list[NodeState]:
    ids = ["a", "b", "c"]
    return [NodeState(ids[i], s, (ids[i - 1],) if i else ()) for i, s in enumerate(statuses)]


def test_it_makes_only_the_first_node_of_a_chain_ready():
    assert ready_nodes(chain("pending", "pending", "pending")) == ["a"]


def test_it_makes_a_node_ready_once_its_dependency_completed():
    assert ready_nodes(chain("completed", "pending", "pending")) == ["b"]


def test_it_makes_nothing_ready_while_a_dependency_runs_or_waits():
    assert ready_nodes(chain("running", "pending", "pending")) == []
    assert ready_nodes(chain("completed", "awaiting_hitl", "pending")) == []


def test_it_readies_independent_nodes_together_in_plan_order():
    nodes = [NodeState("a", "completed", ()), NodeState("b", "pending", ("a",)), NodeState("c", "pending", ("a",))]
    assert ready_nodes(nodes) == ["b", "c"]


def test_it_is_finished_only_when_every_node_completed_or_was_skipped():
    assert not is_finished(chain("completed", "completed", "pending"))
    assert is_finished(chain("completed", "skipped", "completed"))


def test_it_lists_pending_ids_of_unfinished_nodes():
    assert pending_node_ids(chain("completed", "running", "pending")) == ["b", "c"]


def test_it_builds_states_from_graph_nodes_and_a_status_map():
    graph = [{"id": "a"}, {"id": "b", "dependsOn": ["a"]}]
    assert node_states(graph, {"a": "completed"}) == [NodeState("a", "completed", ()),
                                                       NodeState("b", "pending", ("a",))]


def test_pending_ids_equal_the_pending_ids_of_the_built_states():
    from runs.engine.scheduling import pending_ids

    graph = [{"id": "a"}, {"id": "b", "dependsOn": ["a"]}, {"id": "c", "dependsOn": ["b"]}, {"id": "output"}]
    for statuses in ({}, {"a": "completed"}, {"a": "completed", "b": "skipped", "c": "running"},
                     {"a": "completed", "b": "completed", "c": "completed", "output": "completed"},
                     {"a": "failed", "b": "awaiting_hitl", "output": "pending"}):
        assert pending_ids(graph, statuses) == pending_node_ids(node_states(graph, statuses))


def test_ready_ids_and_finished_equal_what_the_built_states_say():
    import itertools
    import random

    from runs.engine.scheduling import finished, ready_ids

    rng = random.Random(14)
    names = ["a", "b", "c", "d", "output"]
    kinds = ["pending", "running", "completed", "skipped", "failed", "awaiting_hitl"]
    for _ in range(500):
        graph = []
        for i, name in enumerate(names[:rng.randint(1, len(names))]):
            # Dependencies on earlier nodes, sometimes on a node the plan lacks.
            deps = rng.sample(names[:i] + ["gone"], rng.randint(0, min(2, i + 1)))
            graph.append({"id": name, "dependsOn": deps} if deps or rng.random() < 0.5 else {"id": name})
        statuses = {n: rng.choice(kinds) for n in itertools.chain(names, ["gone"]) if rng.random() < 0.7}
        states = node_states(graph, statuses)
        assert ready_ids(graph, statuses) == ready_nodes(states)
        assert finished(graph, statuses) == is_finished(states)
