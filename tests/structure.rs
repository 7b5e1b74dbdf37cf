//! The source tree's shape, checked on every `cargo test`:
//! - no import cycle between source files: `use crate::…`, `crate::…`, `super::…`, `self::…`
//!   and child-module paths are resolved to the file that holds them (`mod` lines do not
//!   count), and the graph of files must have no strongly connected component;
//! - the pure layers (`core`, `log`, `store`, `wire`) import neither `actors`, `http` nor `cli`;
//! - no function outside tests is longer than `MAX_FN_LINES`;
//! - no string-keyed lookup (`doc["field"]`) outside tests: documents are typed structs.
//!
//! Test code (`#[cfg(test)]` modules and files, `#[test]` functions) is left out: it is not
//! part of the architecture. Paths and lookups written inside macros (`json!`, `format!`,
//! `println!`) are not seen, nor `.get("key")` calls: the lookup counts are a floor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

/// Longest function allowed, counted from `fn` to the closing brace.
const MAX_FN_LINES: usize = 80;
/// Layers that must stay pure (no actors, no HTTP, no command line).
const PURE_LAYERS: [&str; 4] = ["core", "log", "store", "wire"];
/// Layers the pure ones must not import.
const UPPER_LAYERS: [&str; 3] = ["actors", "http", "cli"];
/// Re-exports of re-exports followed at most this deep (a loop would otherwise never end).
const MAX_REEXPORT_DEPTH: usize = 8;

/// A module: the crate it belongs to (the library or the binary) and its path in that crate.
type ModPath = (Crate, Vec<String>);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum Crate {
    Lib,
    Bin,
}

struct Tree {
    /// Every module that has a file of its own, to that file (relative to the repository).
    files: HashMap<ModPath, PathBuf>,
    /// Files declared under `#[cfg(test)] mod x;`, or below such a file.
    test_files: BTreeSet<PathBuf>,
    /// `pub use` re-exports: (crate, module, name) to the absolute path it stands for.
    reexports: HashMap<(Crate, Vec<String>, String), ModPath>,
}

/// An import of one file by another, with the line that makes it.
#[derive(Debug)]
struct Edge {
    to: PathBuf,
    line: usize,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("read a directory entry").path())
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

/// The module a file holds: `src/a/mod.rs` and `src/a.rs` are `a`; `src/cli/*` is the binary's.
fn module_of(rel: &Path) -> ModPath {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    let last = parts.pop().expect("a file name");
    if last != "mod" && last != "lib" && last != "main" {
        parts.push(last.clone());
    }
    let krate = if last == "main" || parts.first().is_some_and(|p| p == "cli") {
        Crate::Bin
    } else {
        Crate::Lib
    };
    (krate, parts)
}

fn parse(path: &Path) -> syn::File {
    let text = std::fs::read_to_string(path).expect("read a source file");
    syn::parse_file(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// `#[test]`, or `#[cfg(...)]` naming `test` (`cfg(test)`, `cfg(all(test, unix))`) and not
/// negating anything (`cfg(not(test))` is the code outside tests).
fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| match &a.meta {
        syn::Meta::Path(p) => p.is_ident("test"),
        syn::Meta::List(l) if l.path.is_ident("cfg") => {
            let words: Vec<String> = l
                .tokens
                .to_string()
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .map(String::from)
                .collect();
            words.iter().any(|w| w == "test") && !words.iter().any(|w| w == "not")
        }
        _ => false,
    })
}

fn load_tree() -> (Tree, Vec<(PathBuf, syn::File)>) {
    let src = src_dir();
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let mut files = HashMap::new();
    let mut parsed = Vec::new();
    for path in paths {
        let rel = path.strip_prefix(&src).expect("under src/").to_path_buf();
        files.insert(module_of(&rel), rel.clone());
        parsed.push((rel, parse(&path)));
    }
    let mut test_files = BTreeSet::new();
    for (rel, file) in &parsed {
        let (krate, module) = module_of(rel);
        for item in &file.items {
            if let syn::Item::Mod(m) = item {
                if m.content.is_none() && is_cfg_test(&m.attrs) {
                    let mut child = module.clone();
                    child.push(m.ident.to_string());
                    if let Some(f) = files.get(&(krate, child)) {
                        test_files.insert(f.clone());
                    }
                }
            }
        }
    }
    // A module below a test module is test code too.
    let below: Vec<PathBuf> = files
        .values()
        .filter(|f| {
            test_files.iter().any(|t| {
                let dir = t.with_extension("");
                f.starts_with(&dir) && *f != t
            })
        })
        .cloned()
        .collect();
    test_files.extend(below);
    let mut tree = Tree {
        files,
        test_files,
        reexports: HashMap::new(),
    };
    for (rel, file) in &parsed {
        let (krate, module) = module_of(rel);
        for item in &file.items {
            if let syn::Item::Use(u) = item {
                if !matches!(u.vis, syn::Visibility::Inherited) && !is_cfg_test(&u.attrs) {
                    let mut found = Vec::new();
                    reexported(&mut Vec::new(), &u.tree, &mut found);
                    for (name, path) in found {
                        if let Some(target) = absolute(&tree, krate, &module, path) {
                            tree.reexports.insert((krate, module.clone(), name), target);
                        }
                    }
                }
            }
        }
    }
    (tree, parsed)
}

/// The names a `pub use` tree makes visible, each with the path it stands for (globs skipped).
fn reexported(prefix: &mut Vec<String>, tree: &syn::UseTree, out: &mut Vec<(String, Vec<String>)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            reexported(prefix, &p.tree, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => out.push((
            n.ident.to_string(),
            [prefix.clone(), vec![n.ident.to_string()]].concat(),
        )),
        syn::UseTree::Rename(r) => out.push((
            r.rename.to_string(),
            [prefix.clone(), vec![r.ident.to_string()]].concat(),
        )),
        syn::UseTree::Glob(_) => {}
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| reexported(prefix, t, out)),
    }
}

/// A path as written in `module` made absolute: `crate::`, `spare::` (from the binary),
/// `self::`, `super::`, or a child module's name. `None` for anything else (std, other crates,
/// local names).
fn absolute(
    tree: &Tree,
    krate: Crate,
    module: &[String],
    segments: Vec<String>,
) -> Option<(Crate, Vec<String>)> {
    let first = segments.first()?;
    match first.as_str() {
        "crate" => Some((krate, segments[1..].to_vec())),
        "spare" if krate == Crate::Bin => Some((Crate::Lib, segments[1..].to_vec())),
        "self" => Some((krate, [module.to_vec(), segments[1..].to_vec()].concat())),
        "super" => {
            let mut base = module.to_vec();
            let mut rest = &segments[..];
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            Some((krate, [base, rest.to_vec()].concat()))
        }
        _ if segments.len() > 1 => {
            let mut child = module.to_vec();
            child.push(first.clone());
            tree.files
                .contains_key(&(krate, child))
                .then(|| (krate, [module.to_vec(), segments].concat()))
        }
        _ => None,
    }
}

impl Tree {
    /// The file that defines what an absolute path names: the longest module prefix that has a
    /// file, followed through that module's re-exports (`pub use x::Name`).
    fn file_of(&self, krate: Crate, segments: &[String], depth: usize) -> Option<PathBuf> {
        let n = (0..=segments.len())
            .rev()
            .find(|&n| self.files.contains_key(&(krate, segments[..n].to_vec())))?;
        if n < segments.len() && depth < MAX_REEXPORT_DEPTH {
            let key = (krate, segments[..n].to_vec(), segments[n].clone());
            if let Some((k, target)) = self.reexports.get(&key) {
                let through = [target.clone(), segments[n + 1..].to_vec()].concat();
                return self.file_of(*k, &through, depth + 1);
            }
        }
        self.files.get(&(krate, segments[..n].to_vec())).cloned()
    }
}

/// Walks one file, resolving every path that names a module of the crate.
struct Imports<'a> {
    tree: &'a Tree,
    krate: Crate,
    /// The module the visitor stands in (the file's, plus inline `mod x { }` blocks).
    module: Vec<String>,
    edges: Vec<Edge>,
    long_fns: Vec<(String, usize, usize)>,
    string_lookups: Vec<usize>,
}

impl Imports<'_> {
    fn resolve(&mut self, segments: Vec<String>, line: usize) {
        let Some((krate, absolute)) = absolute(self.tree, self.krate, &self.module, segments)
        else {
            return;
        };
        if let Some(to) = self.tree.file_of(krate, &absolute, 0) {
            self.edges.push(Edge { to, line });
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.use_leaf(prefix, &n.ident),
            syn::UseTree::Rename(r) => self.use_leaf(prefix, &r.ident),
            syn::UseTree::Glob(g) => {
                let line = g.star_token.span.start().line;
                self.resolve(prefix.clone(), line);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn use_leaf(&mut self, prefix: &[String], ident: &syn::Ident) {
        let mut segments = prefix.to_vec();
        if ident != "self" {
            segments.push(ident.to_string());
        }
        self.resolve(segments, ident.span().start().line);
    }

    /// Records a function longer than the limit, counted from `fn` to its closing brace.
    fn check_fn(&mut self, sig: &syn::Signature, block: &syn::Block) {
        let first = sig.fn_token.span.start().line;
        let lines = block.brace_token.span.close().end().line - first + 1;
        if lines > MAX_FN_LINES {
            self.long_fns.push((sig.ident.to_string(), first, lines));
        }
    }
}

impl<'ast> Visit<'ast> for Imports<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_cfg_test(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.module.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.module.pop();
        }
    }

    /// `pub(crate)` and `pub(super)` name modules, but import nothing.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.resolve(segments, path.span().start().line);
        syn::visit::visit_path(self, path);
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.check_fn(&f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_cfg_test(&f.attrs) {
            return;
        }
        self.check_fn(&f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.check_fn(&f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }

    fn visit_expr_index(&mut self, e: &'ast syn::ExprIndex) {
        if let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) = &*e.index
        {
            self.string_lookups.push(s.span().start().line);
        }
        syn::visit::visit_expr_index(self, e);
    }
}

/// A function over the limit: `key` is "src/file.rs fn name".
struct LongFn {
    key: String,
    line: usize,
    lines: usize,
}

struct Report {
    edges: BTreeMap<PathBuf, Vec<Edge>>,
    long_fns: Vec<LongFn>,
    string_lookups: Vec<String>,
}

fn survey() -> Report {
    let (tree, parsed) = load_tree();
    let mut report = Report {
        edges: BTreeMap::new(),
        long_fns: Vec::new(),
        string_lookups: Vec::new(),
    };
    for (rel, file) in &parsed {
        if tree.test_files.contains(rel) {
            continue;
        }
        let (krate, module) = module_of(rel);
        let mut v = Imports {
            tree: &tree,
            krate,
            module,
            edges: Vec::new(),
            long_fns: Vec::new(),
            string_lookups: Vec::new(),
        };
        v.visit_file(file);
        let here = rel.display();
        report
            .long_fns
            .extend(v.long_fns.iter().map(|(n, l, len)| LongFn {
                key: format!("src/{here} fn {n}"),
                line: *l,
                lines: *len,
            }));
        report
            .string_lookups
            .extend(v.string_lookups.iter().map(|l| format!("src/{here}:{l}")));
        v.edges.retain(|e| e.to != *rel);
        report.edges.insert(rel.clone(), v.edges);
    }
    report
}

/// Tarjan's strongly connected components; returns those with more than one file.
fn cycles(edges: &BTreeMap<PathBuf, Vec<Edge>>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        edges: &'a BTreeMap<PathBuf, Vec<Edge>>,
        index: HashMap<&'a PathBuf, usize>,
        low: HashMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn connect<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for e in s.edges.get(v).into_iter().flatten() {
            let Some((w, _)) = s.edges.get_key_value(&e.to) else {
                continue;
            };
            if !s.index.contains_key(w) {
                connect(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().expect("v is on the stack");
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            connect(&mut s, v);
        }
    }
    s.out
}

fn describe_cycle(edges: &BTreeMap<PathBuf, Vec<Edge>>, component: &[PathBuf]) -> String {
    let mut lines = vec![format!("{} files:", component.len())];
    for from in component {
        for e in edges[from].iter().filter(|e| component.contains(&e.to)) {
            lines.push(format!(
                "  src/{}:{} -> src/{}",
                from.display(),
                e.line,
                e.to.display()
            ));
        }
    }
    lines.join("\n")
}

fn layer(file: &Path) -> String {
    file.iter()
        .next()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .unwrap_or_default()
}

#[test]
fn no_import_cycle_between_source_files() {
    let report = survey();
    let found = cycles(&report.edges);
    let text: Vec<String> = found
        .iter()
        .map(|c| describe_cycle(&report.edges, c))
        .collect();
    assert!(
        found.is_empty(),
        "{} import cycle(s) between source files; break each one:\n{}",
        found.len(),
        text.join("\n")
    );
}

#[test]
fn pure_layers_do_not_import_actors_http_or_cli() {
    let report = survey();
    let mut wrong = Vec::new();
    for (from, edges) in &report.edges {
        if !PURE_LAYERS.contains(&layer(from).as_str()) {
            continue;
        }
        for e in edges
            .iter()
            .filter(|e| UPPER_LAYERS.contains(&layer(&e.to).as_str()))
        {
            wrong.push(format!(
                "src/{}:{} -> src/{}",
                from.display(),
                e.line,
                e.to.display()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "a pure layer imports an upper one:\n{}",
        wrong.join("\n")
    );
}

/// Files that still read documents by string keys (issue 16: typed `NodeStatus` and
/// `ClusterView`), with how many lookups each holds: counts may only go down.
const STRING_LOOKUPS_LEFT: &[(&str, usize)] = &[
    ("src/actors/node/coordinator.rs", 17),
    ("src/actors/monitor.rs", 2),
    ("src/actors/node/survey.rs", 5),
    ("src/cli/bench_failover.rs", 2),
    ("src/cli/bench_suite.rs", 3),
    ("src/cli/inspect.rs", 12),
    ("src/cli/promote.rs", 16),
    ("src/cli/reload.rs", 1),
    ("src/cli/sql.rs", 4),
    ("src/client.rs", 5),
    ("src/events.rs", 5),
    ("src/http/admin.rs", 3),
    ("src/http/api.rs", 1),
    ("src/http/state.rs", 2),
    ("src/log/inspect.rs", 5),
    ("src/store/quarantine.rs", 4),
    ("src/store/value.rs", 1),
    ("src/verify.rs", 6),
];

#[test]
fn no_function_is_longer_than_the_limit() {
    let report = survey();
    let long: Vec<String> = report
        .long_fns
        .iter()
        .map(|f| format!("{}:{} ({} lines)", f.key, f.line, f.lines))
        .collect();
    assert!(
        long.is_empty(),
        "function(s) over {MAX_FN_LINES} lines; split them:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_string_keyed_lookup_of_a_document() {
    let report = survey();
    let mut per_file: BTreeMap<String, usize> = BTreeMap::new();
    for l in &report.string_lookups {
        *per_file
            .entry(l.split(':').next().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let allowed: BTreeMap<String, usize> = STRING_LOOKUPS_LEFT
        .iter()
        .map(|(f, n)| (f.to_string(), *n))
        .collect();
    let over: Vec<String> = per_file
        .iter()
        .filter(|(f, n)| allowed.get(*f).is_none_or(|a| *n > a))
        .map(|(f, n)| {
            format!(
                "{f}: {n} (allowed {})",
                allowed.get(f).copied().unwrap_or(0)
            )
        })
        .collect();
    assert!(
        over.is_empty(),
        "string-keyed lookups; read a typed struct instead:\n{}\nat:\n{}",
        over.join("\n"),
        report.string_lookups.join("\n")
    );
    let fewer: Vec<String> = allowed
        .iter()
        .filter(|(f, a)| per_file.get(*f).copied().unwrap_or(0) < **a)
        .map(|(f, a)| {
            format!(
                "{f}: {} (listed {a})",
                per_file.get(f).copied().unwrap_or(0)
            )
        })
        .collect();
    assert!(
        fewer.is_empty(),
        "fewer lookups than listed: lower STRING_LOOKUPS_LEFT to match:\n{}",
        fewer.join("\n")
    );
}

/// The checker itself: a cycle planted in a made-up graph is found, a chain is not.
#[test]
fn the_cycle_finder_finds_a_planted_cycle_and_nothing_else() {
    let edge = |to: &str| Edge {
        to: PathBuf::from(to),
        line: 1,
    };
    let mut edges = BTreeMap::new();
    edges.insert(PathBuf::from("a.rs"), vec![edge("b.rs")]);
    edges.insert(PathBuf::from("b.rs"), vec![edge("c.rs")]);
    edges.insert(PathBuf::from("c.rs"), vec![]);
    assert!(cycles(&edges).is_empty());
    edges.insert(PathBuf::from("c.rs"), vec![edge("a.rs")]);
    assert_eq!(
        cycles(&edges),
        vec![vec![
            PathBuf::from("a.rs"),
            PathBuf::from("b.rs"),
            PathBuf::from("c.rs")
        ]]
    );
}
