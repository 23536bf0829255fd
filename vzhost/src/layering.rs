//! The crate's rooms stay layered: read every source file, collect which
//! top-level modules each one names through `crate::`, and check that the
//! ground level (`model`, `sys`) names no room, that no room reaches up to
//! the top (`vps`, `daemon`, `cli`), and that there is no import circle.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

const GROUND: &[&str] = &["model", "sys"];
const TOP: &[&str] = &["vps", "daemon", "cli"];

/// The top-level module a source path belongs to (`ksal/btf.rs` -> ksal).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "layering")).then(|| name.to_owned())
}

/// Top-level modules named by `crate::` paths in `text`, including the
/// members of `use crate::{a::x, b}` groups.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 1 => {
                        start = false;
                        let name = ident(&group[j..]);
                        if !name.is_empty() {
                            out.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Module -> the other top-level modules it names.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the source tree") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let Some(module) = module_of(rel) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).expect("read a source file");
            let named = named_modules(&text);
            let deps = graph.entry(module.clone()).or_default();
            deps.extend(named.into_iter().filter(|m| *m != module));
        }
    }
    graph
}

/// A cycle through `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

fn crate_graph() -> BTreeMap<String, BTreeSet<String>> {
    graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn there_is_no_import_circle_between_rooms() {
    let g = crate_graph();
    assert!(g.len() > 10, "the source tree was read: {g:?}");
    assert_eq!(find_cycle(&g), None, "an import circle: {g:#?}");
}

#[test]
fn the_ground_level_names_no_room() {
    let g = crate_graph();
    for ground in GROUND {
        let deps: Vec<_> = g[*ground]
            .iter()
            .filter(|d| !GROUND.contains(&d.as_str()))
            .collect();
        assert!(deps.is_empty(), "{ground} reaches up into {deps:?}");
    }
}

#[test]
fn no_room_reaches_up_to_the_top() {
    let g = crate_graph();
    for (module, deps) in &g {
        if TOP.contains(&module.as_str()) {
            continue;
        }
        let up: Vec<_> = deps.iter().filter(|d| TOP.contains(&d.as_str())).collect();
        assert!(up.is_empty(), "{module} reaches up into {up:?}");
    }
}

#[test]
fn groups_and_paths_are_both_read() {
    let named = named_modules(
        "use crate::{\n    model::{Name, Spec},\n    sys::{self},\n};\nlet x = crate::net::f();",
    );
    assert_eq!(
        named.into_iter().collect::<Vec<_>>(),
        ["model", "net", "sys"]
    );
    let g = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
