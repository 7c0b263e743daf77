//! The layering of `src/` (ARCHITECTURE.md): each top-level module may import only modules on
//! a lower layer, never one beside or above it; `config` imports no service module; no
//! production file grows past 600 lines unless its opening comment says why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A module may use modules of later layers only.
const LAYERS: &[&[&str]] = &[
    &["catalog_tools"],
    &["server"],
    &["http"],
    &["resolver"],
    &["jobs", "azure"],
    &["source", "recognise", "telemetry"],
    &["config"],
    &[
        "asset_id",
        "model",
        "secret",
        "url_path",
        "metrics",
        "propagation",
    ],
];

const MAX_LINES: usize = 600;

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The production part of a file (before its first `#[cfg(test)]`), without comments.
fn production_code(text: &str) -> String {
    let production = text.split("#[cfg(test)]").next().unwrap_or_default();
    production
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules named by `crate::x` paths, `use crate::{x, y::z}` groups included.
fn crate_uses(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = item.trim().split("::").next().unwrap_or_default();
                if !name.is_empty() {
                    used.insert(name.to_owned());
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
        rest = after;
    }
    used
}

/// Module -> the modules it uses -> the files that use them.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Every module's uses of other top-level modules, and the oversize files.
fn module_graph() -> (Graph, Vec<String>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    let mut oversize = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "main.rs" || rel == "lib.rs" {
            continue;
        }
        let module = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let production = text.split("#[cfg(test)]").next().unwrap_or_default();
        let lines = production.lines().count();
        let opening: String = text.chars().take(600).collect();
        if lines > MAX_LINES && !opening.to_lowercase().contains("longer than") {
            oversize.push(format!("{rel}: {lines} lines"));
        }
        for used in crate_uses(&production_code(&text)) {
            if used != module {
                graph
                    .entry(module.clone())
                    .or_default()
                    .entry(used)
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    (graph, oversize)
}

/// The imports that break the layering, one line each.
fn violations(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for (module, uses) in graph {
        let Some(from) = layer_of(module) else {
            out.push(format!("src/{module} is on no layer: add it to LAYERS"));
            continue;
        };
        for (used, files) in uses {
            let Some(to) = layer_of(used) else {
                out.push(format!("{module} uses {used}, which is on no layer"));
                continue;
            };
            if to <= from {
                let files: Vec<_> = files.iter().map(String::as_str).collect();
                out.push(format!(
                    "{module} (layer {from}) uses {used} (layer {to}) in {}",
                    files.join(", ")
                ));
            }
        }
    }
    out
}

#[test]
fn dependencies_point_down() {
    let (graph, _) = module_graph();
    assert!(graph.contains_key("http") && graph.contains_key("resolver"));
    let broken = violations(&graph);
    assert!(
        broken.is_empty(),
        "imports against ARCHITECTURE.md:\n{}",
        broken.join("\n")
    );
}

#[test]
fn config_imports_no_service_module() {
    let (graph, _) = module_graph();
    let services: BTreeSet<&str> = LAYERS[..layer_of("config").unwrap()]
        .iter()
        .flat_map(|layer| layer.iter().copied())
        .collect();
    let up: Vec<_> = graph
        .get("config")
        .map(|uses| {
            uses.keys()
                .filter(|u| services.contains(u.as_str()))
                .collect()
        })
        .unwrap_or_default();
    assert!(up.is_empty(), "config imports {up:?}");
}

#[test]
fn no_production_file_is_oversize() {
    let (_, oversize) = module_graph();
    assert!(oversize.is_empty(), "over {MAX_LINES} lines: {oversize:?}");
}

#[test]
fn the_check_sees_an_upward_import() {
    // The check itself: an upward and a sideways import are reported, a downward one is not.
    let mut graph = BTreeMap::new();
    let uses = |pairs: &[(&str, &str)]| -> BTreeMap<String, BTreeSet<String>> {
        pairs
            .iter()
            .map(|(m, f)| (m.to_string(), BTreeSet::from([f.to_string()])))
            .collect()
    };
    graph.insert(
        "config".to_owned(),
        uses(&[("http", "config/auth.rs"), ("secret", "config/mod.rs")]),
    );
    graph.insert("jobs".to_owned(), uses(&[("azure", "jobs/mod.rs")]));
    graph.insert(
        "resolver".to_owned(),
        uses(&[("source", "resolver/load.rs")]),
    );
    let broken = violations(&graph);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(
        broken[0].starts_with("config (layer 6) uses http"),
        "{broken:?}"
    );
    assert!(
        broken[1].starts_with("jobs (layer 4) uses azure"),
        "{broken:?}"
    );
    assert_eq!(
        crate_uses(
            "use crate::{config::Invalid, model};\nlet x = crate::asset_id::AssetId::parse(y);"
        ),
        BTreeSet::from(["asset_id".into(), "config".into(), "model".into()])
    );
}
