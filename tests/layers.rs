//! The layout's rules, checked on the source: `cargo test --test layers`.
//!
//! - Every module lives in one of the layer folders of [`LAYERS`], and imports only from its own layer
//!   or the layers below it (test code included: fixtures live low enough for every test to use them).
//! - No circles: no two modules import each other, directly or through others. A folder counts as one
//!   module seen from outside it, and inside it its files count one by one; a module's imports of its
//!   own parents or children do not count (they are one unit). Test code is left out here: a test may
//!   use a fixture of a module that itself uses the module under test.
//! - No source file over [`MAX_FILE_LINES`] lines; no function outside tests over [`MAX_FN_LINES`].
//!
//! Imports are every path that starts with `crate::`, `super::` or `self::`, in `use` items, in code
//! and in macro arguments (`tracing::info!(..., crate::x::y(...))`), read with `syn`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// The layers, lowest first: what each folder of `src/` holds.
const LAYERS: &[(&str, &str)] = &[
    ("domain", "pure: facts about requests and SQL, the config, rules, decisions, refusals"),
    ("state", "the live state: affinity, cluster state, the published snapshot, metrics"),
    ("coordinators", "talking to coordinators: HTTP clients, the poller, query lookups"),
    ("envoy", "talking to Envoy: ext_proc, route discovery, the bootstrap"),
    ("operate", "running it: server, admin, metrics endpoint, reload, explain, command line"),
];

const MAX_FILE_LINES: usize = 1000;
const MAX_FN_LINES: usize = 120;

/// A module path such as `domain::decision::new_statement` (the crate root is empty).
type ModPath = Vec<String>;

/// One import: from module, to module, whether it is test code, where.
#[derive(Debug, Clone)]
struct Import {
    from: ModPath,
    to: ModPath,
    test: bool,
    at: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The module a file under `src/` defines: `a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` is the root.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let relative = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> =
        relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Reads the imports of one file.
struct Reader<'a> {
    file: String,
    /// The module the code being read is in (the file's, plus inline `mod` blocks).
    module: ModPath,
    /// Depth of `#[cfg(test)]` / `#[test]` items around the code being read.
    in_test: usize,
    imports: &'a mut Vec<Import>,
}

fn is_test_attr(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("test")
            || (a.path().is_ident("cfg")
                && a.parse_args::<syn::Meta>().is_ok_and(|m| m.path().is_ident("test")))
    })
}

impl Reader<'_> {
    /// Records an import of `segments` (a path as written) when it is crate-relative.
    fn record(&mut self, segments: &[String], line: usize) {
        let Some(first) = segments.first() else { return };
        let mut target = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.module.clone(),
            "super" => {
                let mut m = self.module.clone();
                m.pop();
                m
            }
            _ => return,
        };
        let mut rest = segments[1..].iter().peekable();
        while rest.peek().is_some_and(|s| *s == "super") {
            target.pop();
            rest.next();
        }
        target.extend(rest.cloned());
        self.imports.push(Import {
            from: self.module.clone(),
            to: target,
            test: self.in_test > 0,
            at: format!("{}:{line}", self.file),
        });
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, line: usize) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, line);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.record(prefix, line);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.record(prefix, line);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.record(prefix, line),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t, line)),
        }
    }

    /// `crate :: a :: b` sequences in a macro's tokens.
    fn macro_tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            if let TokenTree::Group(g) = &trees[i] {
                self.macro_tokens(g.stream());
            }
            if let TokenTree::Ident(start) = &trees[i]
                && matches!(start.to_string().as_str(), "crate" | "super" | "self")
            {
                let line = start.span().start().line;
                let mut segments = vec![start.to_string()];
                let mut j = i + 1;
                while j + 2 < trees.len() + 1 {
                    match (&trees.get(j), &trees.get(j + 1), &trees.get(j + 2)) {
                        (
                            Some(TokenTree::Punct(a)),
                            Some(TokenTree::Punct(b)),
                            Some(TokenTree::Ident(id)),
                        ) if a.as_char() == ':' && b.as_char() == ':' => {
                            segments.push(id.to_string());
                            j += 3;
                        }
                        _ => break,
                    }
                }
                if segments.len() > 1 {
                    self.record(&segments, line);
                }
                i = j;
                continue;
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Reader<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            _ => &[],
        };
        let test = is_test_attr(attrs);
        self.in_test += usize::from(test);
        match item {
            syn::Item::Mod(m) if m.content.is_some() => {
                self.module.push(m.ident.to_string());
                syn::visit::visit_item(self, item);
                self.module.pop();
            }
            syn::Item::Use(u) => {
                let line = u.use_token.span.start().line;
                self.use_tree(&mut Vec::new(), &u.tree, line);
            }
            _ => syn::visit::visit_item(self, item),
        }
        self.in_test -= usize::from(test);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        let test = is_test_attr(&f.attrs);
        self.in_test += usize::from(test);
        syn::visit::visit_impl_item_fn(self, f);
        self.in_test -= usize::from(test);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(first) = path.segments.first() {
            self.record(&segments, first.ident.span().start().line);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.macro_tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

/// Function lengths outside tests: `(file:line name, lines)`.
struct FnSizes {
    file: String,
    in_test: usize,
    sizes: Vec<(String, usize)>,
}

impl FnSizes {
    fn record(&mut self, name: &syn::Ident, span: proc_macro2::Span) {
        if self.in_test == 0 {
            let (start, end) = (span.start().line, span.end().line);
            self.sizes.push((format!("{}:{start} {name}", self.file), end - start + 1));
        }
    }
}

impl<'ast> Visit<'ast> for FnSizes {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let test = is_test_attr(&m.attrs);
        self.in_test += usize::from(test);
        syn::visit::visit_item_mod(self, m);
        self.in_test -= usize::from(test);
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let test = is_test_attr(&f.attrs);
        self.in_test += usize::from(test);
        self.record(&f.sig.ident, syn::spanned::Spanned::span(f));
        syn::visit::visit_item_fn(self, f);
        self.in_test -= usize::from(test);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        let test = is_test_attr(&f.attrs);
        self.in_test += usize::from(test);
        self.record(&f.sig.ident, syn::spanned::Spanned::span(f));
        syn::visit::visit_impl_item_fn(self, f);
        self.in_test -= usize::from(test);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        self.record(&f.sig.ident, syn::spanned::Spanned::span(f));
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// The source: each module with its file, text and syntax tree.
struct Source {
    modules: BTreeMap<ModPath, (String, String, syn::File)>,
}

/// Modules in files of their own that their parent declares `#[cfg(test)] mod name;`.
fn test_modules(source: &Source) -> BTreeSet<ModPath> {
    let mut tests = BTreeSet::new();
    for (module, (_, _, tree)) in &source.modules {
        for item in &tree.items {
            if let syn::Item::Mod(m) = item
                && m.content.is_none()
                && is_test_attr(&m.attrs)
            {
                let mut child = module.clone();
                child.push(m.ident.to_string());
                tests.insert(child);
            }
        }
    }
    tests
}

impl Source {
    fn read(src: &Path) -> Source {
        let modules = rust_files(src)
            .into_iter()
            .filter(|f| f.file_name().is_some_and(|n| n != "main.rs"))
            .map(|file| {
                let text = std::fs::read_to_string(&file).expect("a readable source file");
                let tree = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                let shown = file.strip_prefix(src.parent().unwrap()).unwrap().display().to_string();
                (module_of(src, &file), (shown, text, tree))
            })
            .collect();
        Source { modules }
    }

    /// Every crate-relative import, each resolved to the longest module path it names.
    fn imports(&self) -> Vec<Import> {
        let mut imports = Vec::new();
        let tests = test_modules(self);
        for (module, (file, _, tree)) in &self.modules {
            let in_test = usize::from(tests.iter().any(|t| module.starts_with(t)));
            let mut reader =
                Reader { file: file.clone(), module: module.clone(), in_test, imports: &mut imports };
            reader.visit_file(tree);
        }
        for import in &mut imports {
            while !import.to.is_empty() && !self.modules.contains_key(&import.to) {
                import.to.pop();
            }
        }
        imports
    }
}

fn layer_of(module: &ModPath) -> Option<usize> {
    let first = module.first()?;
    LAYERS.iter().position(|(name, _)| name == first)
}

fn show(module: &ModPath) -> String {
    if module.is_empty() { "crate".to_owned() } else { module.join("::") }
}

/// Whether one module is the other or contains it.
fn related(a: &ModPath, b: &ModPath) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Layer violations: imports of a higher layer, and modules outside every layer.
fn layer_violations(source: &Source, imports: &[Import]) -> Vec<String> {
    let mut problems = Vec::new();
    for module in source.modules.keys().filter(|m| !m.is_empty()) {
        if layer_of(module).is_none() {
            problems.push(format!("{} is in no layer folder ({LAYERS:?})", show(module)));
        }
    }
    for import in imports {
        if import.from.is_empty() || import.to.is_empty() || related(&import.from, &import.to) {
            continue;
        }
        if let (Some(from), Some(to)) = (layer_of(&import.from), layer_of(&import.to))
            && to > from
        {
            problems.push(format!(
                "{}: {} ({}) imports {} ({}), a layer above it",
                import.at,
                show(&import.from),
                LAYERS[from].0,
                show(&import.to),
                LAYERS[to].0
            ));
        }
    }
    problems
}

/// Circles among modules, at every folder depth: the first few found.
fn circles(imports: &[Import]) -> Vec<String> {
    let max_depth = imports.iter().map(|i| i.from.len().max(i.to.len())).max().unwrap_or(0);
    let mut found = Vec::new();
    for depth in 1..=max_depth {
        let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, String>> = BTreeMap::new();
        for import in imports.iter().filter(|i| !i.test && !related(&i.from, &i.to)) {
            let cut = |m: &ModPath| m[..m.len().min(depth)].to_vec();
            let (from, to) = (cut(&import.from), cut(&import.to));
            if from != to && !related(&from, &to) {
                edges.entry(from).or_default().entry(to).or_insert_with(|| import.at.clone());
            }
        }
        if let Some(circle) = find_cycle(&edges) {
            let path: Vec<String> = circle.iter().map(show).collect();
            let first = &edges[&circle[0]][&circle[1]];
            found.push(format!("depth {depth}: {} (first import at {first})", path.join(" -> ")));
        }
    }
    found
}

/// A cycle in a directed graph, as its nodes with the first repeated at the end.
fn find_cycle(edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>) -> Option<Vec<ModPath>> {
    fn visit(
        node: &ModPath,
        edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>,
        done: &mut BTreeSet<ModPath>,
        stack: &mut Vec<ModPath>,
    ) -> Option<Vec<ModPath>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(next, edges, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|node| visit(node, edges, &mut done, &mut Vec::new()))
}

#[test]
fn imports_point_down_the_layers() {
    let source = Source::read(&src_dir());
    let imports = source.imports();
    assert!(imports.len() > 100, "only {} imports read: is the reader broken?", imports.len());
    let problems = layer_violations(&source, &imports);
    assert!(problems.is_empty(), "layer violations:\n{}", problems.join("\n"));
}

#[test]
fn no_import_circles() {
    let source = Source::read(&src_dir());
    let problems = circles(&source.imports());
    assert!(problems.is_empty(), "import circles:\n{}", problems.join("\n"));
}

#[test]
fn files_and_functions_stay_small() {
    let source = Source::read(&src_dir());
    let mut problems = Vec::new();
    let tests = test_modules(&source);
    for (module, (file, text, tree)) in &source.modules {
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            problems.push(format!("{file}: {lines} lines (at most {MAX_FILE_LINES})"));
        }
        let in_test = usize::from(tests.iter().any(|t| module.starts_with(t)));
        let mut sizes = FnSizes { file: file.clone(), in_test, sizes: Vec::new() };
        sizes.visit_file(tree);
        for (name, lines) in sizes.sizes.into_iter().filter(|(_, n)| *n > MAX_FN_LINES) {
            problems.push(format!("{name}: {lines} lines (at most {MAX_FN_LINES} outside tests)"));
        }
    }
    assert!(problems.is_empty(), "too large:\n{}", problems.join("\n"));
}

/// The checks themselves catch what they are for, on made-up modules.
#[test]
fn the_checks_catch_violations() {
    let parse = |text: &str| syn::parse_file(text).unwrap();
    let source = Source {
        modules: [
            (vec!["domain".to_owned()], ("d".to_owned(), String::new(), parse("pub mod a; pub mod b;"))),
            (
                vec!["domain".to_owned(), "a".to_owned()],
                ("a".to_owned(), String::new(), parse("use crate::domain::b::X; pub struct Y;")),
            ),
            (
                vec!["domain".to_owned(), "b".to_owned()],
                ("b".to_owned(), String::new(), parse("pub struct X; fn f() { crate::domain::a::Y; }")),
            ),
            (
                vec!["state".to_owned()],
                (
                    "s".to_owned(),
                    String::new(),
                    parse("pub fn g() { tracing::info!(\"{}\", crate::envoy::Z); }"),
                ),
            ),
            (vec!["envoy".to_owned()], ("e".to_owned(), String::new(), parse("pub struct Z;"))),
            (vec!["misc".to_owned()], ("m".to_owned(), String::new(), parse(""))),
        ]
        .into_iter()
        .collect(),
    };
    let imports = source.imports();
    let layers = layer_violations(&source, &imports);
    assert!(layers.iter().any(|p| p.contains("state (state) imports envoy (envoy)")), "{layers:?}");
    assert!(layers.iter().any(|p| p.contains("misc is in no layer")), "{layers:?}");
    let found = circles(&imports);
    assert!(found.iter().any(|c| c.contains("domain::a -> domain::b -> domain::a")), "{found:?}");
}
