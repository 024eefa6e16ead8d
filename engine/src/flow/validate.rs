//! Validation of a flow into its compiled form: node ids, each node's configuration (see
//! [`super::config`]) and the graph, which must be acyclic (participants must not loop
//! forever) with every node reachable from a trigger.

use std::collections::{HashMap, HashSet, VecDeque};

use super::compiled::{CompiledFlow, Node, NodeId, NodeKind, ValueKind};
use super::config::Checker;
use super::definition::{parse_definition, FlowDefinition, NodeDef, NodeType, TriggerType};
use crate::agent::{Format, ValidationErrors};

/// Parses and validates in one go.
pub fn parse_and_validate(
    text: &str,
    format: Format,
    schema: &dyn Fn(&str) -> Option<ValueKind>,
) -> Result<CompiledFlow, ValidationErrors> {
    validate(parse_definition(text, format)?, schema)
}

/// Validates a flow against the campaign's fields and builds its compiled form; reports
/// every problem found. `schema` gives the kind of a customer or participant property by
/// its full path (`participant.is_paid`); `result.` properties are free-form and never
/// looked up.
pub fn validate(
    def: FlowDefinition,
    schema: &dyn Fn(&str) -> Option<ValueKind>,
) -> Result<CompiledFlow, ValidationErrors> {
    let mut c = Checker::new(schema);

    let mut by_id: HashMap<String, NodeId> = HashMap::new();
    for (i, node) in def.nodes.iter().enumerate() {
        let path = format!("nodes[{i}].id");
        if node.id.trim().is_empty() {
            c.err(path, "must not be empty");
        } else if node.id.chars().any(char::is_whitespace) {
            c.err(path, format!("{:?} must not contain whitespace", node.id));
        } else if let Some(first) = by_id.get(&node.id) {
            c.err(
                path,
                format!(
                    "duplicate node id {:?} (first at nodes[{}])",
                    node.id, first.0
                ),
            );
        } else {
            by_id.insert(node.id.clone(), NodeId(i));
        }
    }

    let mut kinds = Vec::with_capacity(def.nodes.len());
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, node) in def.nodes.iter().enumerate() {
        let path = format!("nodes[{i}]");
        let allowed = node.node_type.fields();
        for field in node.present_fields() {
            if !allowed.contains(&field) {
                c.err(
                    format!("{path}.{field}"),
                    format!("not used by {} nodes", node.node_type.as_str()),
                );
            }
        }
        if let (NodeType::StartCommunication, Some(name)) = (node.node_type, &node.name) {
            if let Some(first) = names.insert(name, i) {
                c.err(
                    format!("{path}.name"),
                    format!("duplicate communication name {name:?} (first at nodes[{first}])"),
                );
            }
        }
        kinds.push(c.node_kind(&path, node));
    }

    let edges = check_edges(&mut c, &def.nodes, &by_id);
    check_graph(&mut c, &def.nodes, &edges);

    if !c.errors.is_empty() {
        return Err(ValidationErrors(c.errors));
    }
    let Some(kinds) = kinds.into_iter().collect::<Option<Vec<_>>>() else {
        return Err(ValidationErrors(c.errors));
    };
    let mut triggers: HashMap<TriggerType, Vec<NodeId>> = HashMap::new();
    let nodes: Vec<Node> = def
        .nodes
        .iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, (node, kind))| {
            if let NodeKind::Trigger(t) = kind {
                triggers.entry(t).or_default().push(NodeId(i));
            }
            let port =
                |target: &Option<String>| target.as_ref().and_then(|t| by_id.get(t)).copied();
            Node {
                id: node.id.clone(),
                index: NodeId(i),
                kind,
                next: port(&node.next),
                on_match: port(&node.on_match),
                on_else: port(&node.on_else),
            }
        })
        .collect();
    Ok(CompiledFlow {
        definition: def,
        nodes,
        by_id,
        triggers,
    })
}

/// One edge of the graph: the port's name and the target's index.
type Edge = (&'static str, usize);

/// Checks every edge (unknown targets, edges into triggers, triggers leading nowhere) and
/// returns the sound ones per node, for the graph checks.
fn check_edges(
    c: &mut Checker<'_>,
    nodes: &[NodeDef],
    by_id: &HashMap<String, NodeId>,
) -> Vec<Vec<Edge>> {
    let mut out = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let allowed = node.node_type.fields();
        let mut edges = Vec::new();
        for (port, target) in node.edges().filter(|(p, _)| allowed.contains(p)) {
            let path = format!("nodes[{i}].{port}");
            match by_id.get(target) {
                None => c.err(path, format!("unknown node {target:?}")),
                Some(t) if nodes[t.0].node_type.trigger().is_some() => c.err(
                    path,
                    format!("leads into trigger {target:?}; triggers only start a flow"),
                ),
                Some(t) => edges.push((port, t.0)),
            }
        }
        if node.node_type.trigger().is_some() && node.next.is_none() {
            c.err(format!("nodes[{i}].next"), "a trigger must lead to a node");
        }
        out.push(edges);
    }
    out
}

/// At least one trigger, no cycles, every node reachable from a trigger.
fn check_graph(c: &mut Checker<'_>, nodes: &[NodeDef], edges: &[Vec<Edge>]) {
    let triggers: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].node_type.trigger().is_some())
        .collect();
    if triggers.is_empty() {
        let names: Vec<&str> = TriggerType::ALL.iter().map(|t| t.as_str()).collect();
        c.err(
            "nodes",
            format!("a flow needs at least one trigger ({})", names.join(", ")),
        );
    }

    for (from, port, cycle) in cycles(edges) {
        let ids: Vec<&str> = cycle.iter().map(|&n| nodes[n].id.as_str()).collect();
        c.err(
            format!("nodes[{from}].{port}"),
            format!(
                "closes the cycle {}; a flow must not loop",
                ids.join(" -> ")
            ),
        );
    }

    let mut reached: HashSet<usize> = triggers.iter().copied().collect();
    let mut queue: VecDeque<usize> = triggers.into_iter().collect();
    while let Some(n) = queue.pop_front() {
        for &(_, t) in &edges[n] {
            if reached.insert(t) {
                queue.push_back(t);
            }
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        if !reached.contains(&i) {
            c.err(
                format!("nodes[{i}]"),
                format!("node {:?} is not reachable from any trigger", node.id),
            );
        }
    }
}

/// Every back edge found by a depth-first search, as (node, port, the cycle it closes
/// from its first node back to it). Iterative, so that long flows cannot overflow the
/// stack.
fn cycles(edges: &[Vec<Edge>]) -> Vec<(usize, &'static str, Vec<usize>)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; edges.len()];
    let mut found = Vec::new();
    for root in 0..edges.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // The current path: (node, index of its next edge to explore).
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnPath;
        while let Some(&mut (n, ref mut next)) = path.last_mut() {
            let Some(&(port, t)) = edges[n].get(*next) else {
                mark[n] = Mark::Done;
                path.pop();
                continue;
            };
            *next += 1;
            match mark[t] {
                Mark::New => {
                    mark[t] = Mark::OnPath;
                    path.push((t, 0));
                }
                Mark::OnPath => {
                    let start = path.iter().position(|&(p, _)| p == t).unwrap_or(0);
                    let mut cycle: Vec<usize> = path[start..].iter().map(|&(p, _)| p).collect();
                    cycle.push(t);
                    found.push((n, port, cycle));
                }
                Mark::Done => {}
            }
        }
    }
    // By node, as the other errors are.
    found.sort_by_key(|&(n, _, _)| n);
    found
}

#[cfg(test)]
mod tests;
