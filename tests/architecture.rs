//! The shape of `src/`, checked: no import cycle between files, feature gates only where the
//! design allows them, and every public item reachable by one path.
//!
//! Edges are the `crate::…` paths in each file's code (comments and string literals left
//! out), resolved to the file that defines the module they name. `lib.rs` is the crate root:
//! it declares the modules and re-exports the public surface, so its own paths are not
//! dependencies; a path *into* it names one of the few items it defines (the feature seams).
//!
//! `cargo test --test architecture -- --nocapture` prints every edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file as `src/`-relative module name: `tls/acceptor.rs` → `tls::acceptor`,
/// `tls/mod.rs` → `tls`, `lib.rs` → `` (the root).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src_dir()).expect("under src/");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// Source code with comments and string/char literals blanked out, so that neither doc
/// examples nor messages count as imports.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            i += end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            let end = rest[body..]
                .find(&close)
                .map_or(rest.len(), |e| body + e + close.len());
            out.push_str("\"\"");
            i += end;
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() {
                match rest.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            out.push_str("\"\"");
            i += (j + 1).min(rest.len());
        } else {
            let c = rest.chars().next().expect("non-empty");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `code` without its `#[cfg(test)]` items: test code may import what it likes.
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        // The item ends at its `;` or at the brace that closes its first `{`.
        let end = match (item.find(';'), item.find('{')) {
            (Some(semi), Some(open)) if semi < open => semi + 1,
            (_, Some(open)) => {
                let mut depth = 0usize;
                let mut end = item.len();
                for (i, c) in item[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(semi), None) => semi + 1,
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Every `crate::a::b::…` path in `code`, as its segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut search = 0;
    while let Some(at) = code[search..].find("crate::") {
        let start = search + at;
        search = start + "crate::".len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '$') {
            continue; // `$crate::`, `foo_crate::`, `::crate`
        }
        let segments: Vec<String> = code[search..]
            .split("::")
            .map_while(|seg| {
                let ident: String = seg
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                (!ident.is_empty() && ident.len() == seg.len()).then_some(ident)
            })
            .collect();
        // The last segment may be followed by `;`, `(`, `{`, `,`...: take it as well.
        let tail: String = code[search..]
            .split("::")
            .nth(segments.len())
            .map(|seg| {
                seg.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect()
            })
            .unwrap_or_default();
        let mut segments = segments;
        if !tail.is_empty() {
            segments.push(tail);
        }
        paths.push(segments);
    }
    paths
}

struct Tree {
    /// module name → file
    files: BTreeMap<String, PathBuf>,
    /// module name → source
    sources: BTreeMap<String, String>,
}

impl Tree {
    fn load() -> Self {
        let mut files = Vec::new();
        rust_files(&src_dir(), &mut files);
        let mut tree = Tree {
            files: BTreeMap::new(),
            sources: BTreeMap::new(),
        };
        for file in files {
            let module = module_of(&file);
            let text = std::fs::read_to_string(&file).expect("read source");
            tree.sources.insert(module.clone(), text);
            tree.files.insert(module, file);
        }
        tree
    }

    /// The module (file) a `crate::` path lands in: the longest prefix that is a file.
    fn target(&self, segments: &[String]) -> String {
        (0..=segments.len())
            .rev()
            .map(|n| segments[..n].join("::"))
            .find(|m| self.files.contains_key(m))
            .unwrap_or_default()
    }

    fn edges(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, text) in &self.sources {
            if module.is_empty() {
                continue; // lib.rs: declarations and re-exports
            }
            let targets = edges.entry(module.clone()).or_default();
            if module == "testing" {
                continue; // the unit tests' fixtures
            }
            for path in crate_paths(&without_tests(&code_only(text))) {
                let target = self.target(&path);
                if target != *module {
                    targets.insert(target);
                }
            }
        }
        edges
    }
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, edges, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

fn display(module: &str) -> &str {
    if module.is_empty() { "lib" } else { module }
}

#[test]
fn no_import_cycle_between_files() {
    let tree = Tree::load();
    let edges = tree.edges();
    let count: usize = edges.values().map(BTreeSet::len).sum();
    for (from, tos) in &edges {
        for to in tos {
            println!("{} -> {}", display(from), display(to));
        }
    }
    println!("{count} edges between {} files", tree.files.len());
    assert!(
        count > 50,
        "the edge finder found almost nothing: {count} edges"
    );
    if let Some(cycle) = find_cycle(&edges) {
        let cycle: Vec<&str> = cycle.iter().map(|m| display(m)).collect();
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    fn add(edges: &mut BTreeMap<String, BTreeSet<String>>, a: &str, b: &str) {
        edges.entry(a.into()).or_default().insert(b.into());
    }
    let mut edges = BTreeMap::new();
    add(&mut edges, "a", "b");
    add(&mut edges, "b", "c");
    assert_eq!(find_cycle(&edges), None);
    add(&mut edges, "c", "a");
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn test_items_are_left_out() {
    let code = "use crate::a::b;\n#[cfg(test)]\nmod tests {\n    use crate::c::d;\n    fn f() { if x { crate::e::f(); } }\n}\nuse crate::g::h;\n#[cfg(test)]\nmod testing;\n";
    let paths: Vec<String> = crate_paths(&without_tests(code))
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(paths, ["a::b", "g::h"]);
}

#[test]
fn the_path_finder_skips_comments_and_strings() {
    let code = code_only(
        "use crate::tls::trust::TrustState; // crate::a::b\n/// crate::doc::link\nlet s = \"crate::in_a_string\";\nlet r = r#\"crate::raw\"#; $crate::macro_path; f(crate::identity::lookup::authenticate(x));",
    );
    let paths: Vec<String> = crate_paths(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        ["tls::trust::TrustState", "identity::lookup::authenticate"]
    );
}

/// Feature gates live in `lib.rs` and in the files whose whole job is one optional
/// dependency: the stack integrations, the Workload API client (its test kit is gated too)
/// and the crypto provider.
#[test]
fn feature_gates_only_in_lib_and_integration_files() {
    const ALLOWED: &[&str] = &[
        "",
        "hyper",
        "axum",
        "metrics",
        "tonic",
        "workload_api",
        "tls::provider",
    ];
    let tree = Tree::load();
    let offenders: Vec<&str> = tree
        .sources
        .iter()
        .filter(|(module, text)| {
            !ALLOWED.contains(&module.as_str()) && code_only(text).contains("cfg(feature")
        })
        .map(|(module, _)| display(module))
        .collect();
    assert!(offenders.is_empty(), "cfg(feature = ...) in {offenders:?}");
}

/// No `get_` getters (Rust API guidelines, C-GETTER).
#[test]
fn no_get_prefixed_public_functions() {
    let tree = Tree::load();
    let offenders: Vec<String> = tree
        .sources
        .iter()
        .flat_map(|(module, text)| {
            code_only(text)
                .lines()
                // `get_ref` / `get_mut` on wrappers are the guideline's own exceptions.
                .filter(|l| {
                    let l = l.trim_start();
                    l.starts_with("pub fn get_")
                        && !l.starts_with("pub fn get_ref(")
                        && !l.starts_with("pub fn get_mut(")
                })
                .map(|l| format!("{}: {}", display(module), l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(offenders.is_empty(), "{offenders:#?}");
}
