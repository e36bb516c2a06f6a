//! The module graph has layers and no circles (README "Development"): shared wire
//! types at the bottom, the data path and TLS beside them, `auth` and `edge` above
//! those and never importing each other or the client, `client` above `auth`, the
//! commands on top. Read from the `crate::` paths in `src/` (test modules left out).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules it names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let deps = g.entry(module.clone()).or_default();
            for used in crate_paths(code) {
                if used != module {
                    deps.insert(used);
                }
            }
        }
    }
    g
}

/// The first segment of every `crate::x` and `crate::{x, y::z}` in `code`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(0)];
            let mut depth = 0;
            let mut start = true;
            for (j, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        let name = ident(&inner[j..]);
                        if !name.is_empty() && name != "self" {
                            out.push(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// A cycle in `g`, if there is one (depth-first search).
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    assert!(
        g.contains_key("edge") && g.contains_key("auth"),
        "graph read: {g:?}"
    );
    if let Some(c) = cycle(&g) {
        panic!("modules import each other in a circle: {}", c.join(" -> "));
    }
}

#[test]
fn lower_layers_never_import_upper_ones() {
    let g = graph();
    let commands = [
        "app", "access", "commands", "demo", "doctor", "up", "error", "cli",
    ];
    let rules: [(&str, &[&str]); 8] = [
        (
            "protocol",
            &["auth", "edge", "client", "bridge", "tls", "frame"],
        ),
        ("frame", &["auth", "edge", "client", "bridge"]),
        ("bridge", &["auth", "edge", "client"]),
        ("tls", &["auth", "edge", "client"]),
        ("proxy", &["auth", "edge", "client", "bridge"]),
        ("auth", &["edge", "client", "bridge"]),
        ("edge", &["auth", "client"]),
        ("client", &["edge"]),
    ];
    let mut wrong = Vec::new();
    for (module, forbidden) in rules {
        let deps = g.get(module).cloned().unwrap_or_default();
        for d in forbidden.iter().chain(commands.iter()) {
            if deps.contains(*d) {
                wrong.push(format!("{module} imports {d}"));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken: {}", wrong.join("; "));
}

#[test]
fn the_reader_sees_grouped_imports() {
    let names = crate_paths("use crate::{auth::x, edge, self};\nlet a = crate::client::y;");
    assert_eq!(names, ["auth", "edge", "client"]);
}

/// README "Development" names every source file in its module map: a module as
/// `` `name` ``, a file split off a module by its path (`` `pump/down.rs` ``).
#[test]
fn the_readme_module_map_names_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("### Module map")
        .expect("README has a module map");
    let map = &readme[start..];
    let map = &map[..map[1..].find("\n#").map_or(map.len(), |i| i + 1)];
    let src = root.join("src");
    let mut missing = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let Some(stem) = rel.strip_suffix(".rs") else {
                continue;
            };
            // `x/mod.rs` is the module `x`; `x.rs` is `x`; a file split off a module
            // is named by its path from any folder down (`pump/down.rs`).
            let name = stem.trim_end_matches("/mod");
            let last = name.rsplit('/').next().unwrap();
            let parts: Vec<&str> = rel.split('/').collect();
            let named = map.contains(&format!("`{last}`"))
                || (0..parts.len()).any(|i| map.contains(&format!("`{}`", parts[i..].join("/"))));
            if !named {
                missing.push(rel);
            }
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "README's module map lacks {missing:?}");
}
