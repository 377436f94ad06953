//! Issue 16: imports point down the layers, never up, and no source file grows past 1,500 lines
//! of non-test code. Reads src/ as text (comments, strings and test code left out); runs
//! without root. `python3 tools/layers.py src`-style output on failure: file:line and the path.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may name modules of its own layer or of lower ones only
/// (docs/design.md, "Layers"). A new top-level module must be given a place here.
const LAYERS: &[&[&str]] = &[
    &[
        "config", "addr", "alloc", "notify", "terminal", "time", "sys", "proto", "event",
    ],
    &["ruleset"],
    &["netlink"],
    &["sense"],
    &["detect"],
    &["mitigate", "escalate"],
    &["report", "bgp", "metrics", "status", "control"],
    &["daemon"],
    &["setup", "cli", "manual", "main", "lib"],
];

/// Lines of non-test code a source file may have.
const MAX_LINES: usize = 1500;

/// Files (relative to src/) allowed over `MAX_LINES` for now. An entry that is no longer over
/// fails the test too, so the list only shrinks.
const OVER_LENGTH_FOR_NOW: &[&str] = &[];

#[test]
fn issue16_no_module_imports_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = source_files(&src);
    let modules: BTreeSet<String> = files.iter().map(|f| f.top.clone()).collect();
    let mut problems = Vec::new();
    for m in &modules {
        if layer(m).is_none() {
            problems.push(format!(
                "src/{m}: module `{m}` is in no layer (add it to LAYERS)"
            ));
        }
    }
    for file in &files {
        let Some(own) = layer(&file.top) else {
            continue;
        };
        for (line, path, target) in references(file) {
            if !modules.contains(&target) {
                continue;
            }
            match layer(&target) {
                Some(theirs) if theirs > own => problems.push(format!(
                    "src/{}:{line}: {} (layer {own}) names {target} (layer {theirs}): {path}",
                    file.rel, file.top
                )),
                Some(_) => {}
                None => problems.push(format!(
                    "src/{}:{line}: names `{target}`, a module in no layer",
                    file.rel
                )),
            }
        }
    }
    let mut over = BTreeSet::new();
    for file in &files {
        let lines = file.code_lines();
        if lines > MAX_LINES {
            over.insert(file.rel.clone());
            if !OVER_LENGTH_FOR_NOW.contains(&file.rel.as_str()) {
                problems.push(format!(
                    "src/{}: {lines} lines of non-test code, over {MAX_LINES}",
                    file.rel
                ));
            }
        }
    }
    for rel in OVER_LENGTH_FOR_NOW {
        if !over.contains(*rel) {
            problems.push(format!(
                "src/{rel} is no longer over {MAX_LINES} lines: remove it from OVER_LENGTH_FOR_NOW"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The checker itself: it sees through `use crate::{…}` groups, `super::super::` and test
/// code, and is not fooled by comments or strings.
#[test]
fn issue16_the_layer_check_reads_paths_as_the_compiler_does() {
    let text = r##"
//! crate::daemon in a doc comment
use crate::addr::Cidr;
use crate::{detect::Event, mitigate::{Item, Change}, self};
use super::super::report::X;
pub(crate) fn f() { let s = "crate::cli"; let c = '{'; let r = r#"crate::bgp"#; }
/* crate::status { */
#[cfg(test)]
mod tests {
    use crate::daemon::Daemon;
}
#[cfg(test)]
use crate::setup::Y;
mod inner {
    use super::super::super::metrics::Z;
}
fn g<'a>(x: &'a str) -> &'a str { crate::sense::f(x) }
"##;
    let file = SourceFile::new("sense/trace.rs".into(), text.to_string());
    let found: Vec<(usize, String)> = references(&file)
        .into_iter()
        .map(|(line, _, target)| (line, target))
        .collect();
    let want: Vec<(usize, String)> = [
        (3, "addr"),
        (4, "detect"),
        (4, "mitigate"),
        (5, "report"),
        (15, "metrics"),
        (17, "sense"),
    ]
    .iter()
    .map(|&(l, t)| (l, t.to_string()))
    .collect();
    assert_eq!(found, want);
    assert_eq!(file.code_lines(), 17 - 6);
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// One non-test source file: its path under src/, its top-level module, its module path, and
/// its text with comments, literals and test code blanked (newlines kept, so lines still count).
struct SourceFile {
    rel: String,
    top: String,
    module: Vec<String>,
    lines: usize,
    code: Vec<u8>,
    test_lines: usize,
    test_modules: Vec<String>,
}

impl SourceFile {
    fn new(rel: String, text: String) -> SourceFile {
        let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
        let top = parts[0].to_string();
        let mut module: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
        if module.last().is_some_and(|m| m == "mod") || module == ["lib"] || module == ["main"] {
            module.pop();
        }
        let mut code = blank_comments_and_literals(&text);
        let (test_lines, test_modules) = blank_test_items(&mut code);
        SourceFile {
            rel,
            top,
            module,
            lines: text.lines().count(),
            code,
            test_lines,
            test_modules,
        }
    }

    fn code_lines(&self) -> usize {
        self.lines.saturating_sub(self.test_lines)
    }

    /// The folder a `mod name;` of this file resolves in.
    fn child_dir(&self) -> String {
        let rel = &self.rel;
        if rel.ends_with("mod.rs") || rel == "lib.rs" || rel == "main.rs" {
            rel.rsplit_once('/')
                .map_or(String::new(), |(d, _)| format!("{d}/"))
        } else {
            format!("{}/", rel.trim_end_matches(".rs"))
        }
    }
}

/// Every .rs file under src/ but test files: tests.rs, *_tests.rs and files of modules
/// declared `#[cfg(test)] mod name;`.
fn source_files(src: &Path) -> Vec<SourceFile> {
    let mut paths = Vec::new();
    walk(src, &mut paths);
    paths.sort();
    let mut files: Vec<SourceFile> = paths
        .iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(src).ok()?.to_str()?.to_string();
            let name = rel.rsplit('/').next()?;
            if !rel.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                return None;
            }
            let text = fs::read_to_string(p).ok()?;
            Some(SourceFile::new(rel, text))
        })
        .collect();
    let test_only: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let dir = f.child_dir();
            f.test_modules.iter().map(move |m| format!("{dir}{m}"))
        })
        .collect();
    files.retain(|f| {
        !test_only
            .iter()
            .any(|m| f.rel == format!("{m}.rs") || f.rel.starts_with(&format!("{m}/")))
    });
    files
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// The text with comments, string and character literals replaced by spaces (newlines kept).
fn blank_comments_and_literals(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut blank = |from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut i = 0;
    while i < b.len() {
        let prev = if i > 0 { b[i - 1] } else { b' ' };
        match b[i] {
            b'/' if at(i + 1) == b'/' => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                blank(i, end);
                i = end;
            }
            b'/' if at(i + 1) == b'*' => {
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if at(j) == b'/' && at(j + 1) == b'*' {
                        depth += 1;
                        j += 2;
                    } else if at(j) == b'*' && at(j + 1) == b'/' {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(i, j);
                i = j;
            }
            b'r' if (!is_ident(prev) || (prev == b'b' && (i < 2 || !is_ident(b[i - 2])))) && {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                at(i + 1 + hashes) == b'"'
            } =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                let close = format!("\"{}", "#".repeat(hashes)).into_bytes();
                let body = i + 2 + hashes;
                let end = b[body..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| body + p + close.len());
                blank(i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(i, j + 1);
                i = j + 1;
            }
            b'\'' => {
                if at(i + 1) == b'\\' {
                    let end = b[i + 3..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map_or(b.len(), |p| i + 4 + p);
                    blank(i, end);
                    i = end;
                } else {
                    let len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    if at(i + 1 + len) == b'\'' {
                        blank(i, i + 2 + len);
                        i += 2 + len;
                    } else {
                        i += 1; // a lifetime
                    }
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Where the item that starts at `from` ends: after its `;`, or after the `}` that closes its
/// first `{` (brackets and parentheses skipped).
fn item_end(code: &[u8], from: usize) -> usize {
    let mut nest = 0i32;
    let mut i = from;
    while i < code.len() {
        match code[i] {
            b'(' | b'[' => nest += 1,
            b')' | b']' => nest -= 1,
            b';' if nest == 0 => return i + 1,
            b'{' if nest == 0 => return block_end(code, i),
            _ => {}
        }
        i += 1;
    }
    code.len()
}

/// The index after the `}` matching the `{` at `open`.
fn block_end(code: &[u8], open: usize) -> usize {
    let mut depth = 0;
    for (i, &c) in code.iter().enumerate().skip(open) {
        if c == b'{' {
            depth += 1;
        } else if c == b'}' {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
    }
    code.len()
}

/// Blanks every item under `#[cfg(test)]`; returns the lines they took and the names of
/// modules declared test-only in another file (`#[cfg(test)] mod name;`).
fn blank_test_items(code: &mut [u8]) -> (usize, Vec<String>) {
    const ATTR: &[u8] = b"#[cfg(test)]";
    let mut lines = 0;
    let mut modules = Vec::new();
    let mut i = 0;
    while let Some(p) = code[i..].windows(ATTR.len()).position(|w| w == ATTR) {
        let start = i + p;
        let end = item_end(code, start + ATTR.len());
        let item = String::from_utf8_lossy(&code[start + ATTR.len()..end]).to_string();
        let words: Vec<&str> = item
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ';'))
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(k) = words.iter().position(|w| *w == "mod") {
            if let Some(name) = words.get(k + 1).and_then(|n| n.strip_suffix(';')) {
                modules.push(name.to_string());
            }
        }
        let line_start = code[..start]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |q| q + 1);
        let only_space_before = code[line_start..start].iter().all(u8::is_ascii_whitespace);
        let newlines = code[start..end].iter().filter(|&&c| c == b'\n').count();
        lines += newlines + usize::from(only_space_before);
        for c in &mut code[start..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        i = end;
    }
    (lines, modules)
}

/// The inline `mod name { … }` blocks of non-test code: (name, start, end).
fn inline_modules(code: &[u8]) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    for (start, _) in words(code).filter(|&(_, w)| w == "mod") {
        let rest = &code[start + 3..];
        let skip = rest.iter().take_while(|c| c.is_ascii_whitespace()).count();
        let name_len = rest[skip..].iter().take_while(|&&c| is_ident(c)).count();
        let after = start + 3 + skip + name_len;
        let brace = after
            + code[after..]
                .iter()
                .take_while(|c| c.is_ascii_whitespace())
                .count();
        if name_len > 0 && code.get(brace) == Some(&b'{') {
            let name = String::from_utf8_lossy(&rest[skip..skip + name_len]).to_string();
            found.push((name, start, block_end(code, brace)));
        }
    }
    found
}

/// Each identifier of the code with where it starts.
fn words(code: &[u8]) -> impl Iterator<Item = (usize, &str)> {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < code.len() {
            if is_ident(code[i]) && (i == 0 || !is_ident(code[i - 1])) {
                let start = i;
                while i < code.len() && is_ident(code[i]) {
                    i += 1;
                }
                let word = std::str::from_utf8(&code[start..i]).unwrap_or("");
                return Some((start, word));
            }
            i += 1;
        }
        None
    })
}

/// After `code[i..]`: optional whitespace, `::`, optional whitespace; the index after them.
fn after_colons(code: &[u8], i: usize) -> Option<usize> {
    let ws = |j: usize| {
        j + code[j..]
            .iter()
            .take_while(|c| c.is_ascii_whitespace())
            .count()
    };
    let j = ws(i);
    (code.get(j..j + 2) == Some(b"::")).then(|| ws(j + 2))
}

/// The first identifier of each element of the `{…}` group at `open` (`self` left out).
fn group_heads(code: &[u8], open: usize) -> Vec<String> {
    let end = block_end(code, open);
    let inner = &code[open + 1..end.saturating_sub(1)];
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut element_start = 0;
    for (k, &c) in inner.iter().chain(std::iter::once(&b',')).enumerate() {
        match c {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b',' if depth == 0 => {
                let element = String::from_utf8_lossy(&inner[element_start..k.min(inner.len())]);
                let head: String = element
                    .trim_start()
                    .chars()
                    .take_while(|&c| c.is_alphanumeric() || c == '_')
                    .collect();
                if !head.is_empty() && head != "self" {
                    heads.push(head);
                }
                element_start = k + 1;
            }
            _ => {}
        }
    }
    heads
}

/// Every path of non-test code that reaches a top-level module: `crate::x`, the heads of a
/// `crate::{…}` group, and `super::…` chains that climb to the crate root. Each as (line, the
/// path's text, the top-level module it names).
fn references(file: &SourceFile) -> Vec<(usize, String, String)> {
    let code = &file.code;
    let inline = inline_modules(code);
    let mut found = Vec::new();
    let all: Vec<(usize, &str)> = words(code).collect();
    let mut k = 0;
    while k < all.len() {
        let (start, word) = all[k];
        k += 1;
        let mut at = match word {
            "crate" => match after_colons(code, start + 5) {
                Some(j) => j,
                None => continue,
            },
            "super" if start < 2 || &code[start - 2..start] != b"::" => {
                // Climb: the file's module path, plus the inline modules around this point.
                let depth = file.module.len()
                    + inline
                        .iter()
                        .filter(|&&(_, s, e)| s < start && start < e)
                        .count();
                let mut j = start;
                let mut supers = 0;
                while let Some(next) = after_colons(code, j + 5) {
                    supers += 1;
                    if code.get(next..next + 5) == Some(b"super") {
                        j = next;
                    } else {
                        j = next;
                        break;
                    }
                }
                if supers == 0 || supers != depth {
                    continue;
                }
                j
            }
            _ => continue,
        };
        let line = code[..start].iter().filter(|&&c| c == b'\n').count() + 1;
        let heads = if code.get(at) == Some(&b'{') {
            let heads = group_heads(code, at);
            at = block_end(code, at);
            heads
        } else {
            let len = code[at..].iter().take_while(|&&c| is_ident(c)).count();
            let head = String::from_utf8_lossy(&code[at..at + len]).to_string();
            at += len;
            vec![head]
        };
        let text = String::from_utf8_lossy(&code[start..at]);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for head in heads {
            found.push((line, text.clone(), head));
        }
        while k < all.len() && all[k].0 < at {
            k += 1;
        }
    }
    found
}
