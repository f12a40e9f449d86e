//! The module rule of ARCHITECTURE.md ("Modules"), checked against the imports: every
//! `crate::<module>` path and every `super::` path that climbs to the crate root in src/ names
//! a module the rule puts below the one it is written in.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use the modules of the lines above its own, never
/// its own line's neighbours nor anything below. ARCHITECTURE.md draws the same picture.
const LAYERS: &[&[&str]] = &[
    &["metrics"],
    &["db", "http", "sqld"],
    &["store"],
    &["catalog", "assets"],
    &["auth", "tenancy", "realtime", "data_dir"],
    &["workspace"],
    &["error"],
    &["api"],
    &["demo", "config"],
    &["serve"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|line| line.contains(&module))
}

#[test]
fn lower_modules_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = BTreeSet::new();
    let mut unplaced = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let Some(path) = module_path(relative) else {
            continue; // lib.rs and main.rs: the crate root and the binary sit above every module.
        };
        let from = path[0].clone();
        let Some(from_layer) = layer_of(&from) else {
            unplaced.insert(from);
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, to) in top_level_references(&code_only(&text), path.len()) {
            if to == from {
                continue;
            }
            match layer_of(&to) {
                Some(to_layer) if to_layer < from_layer => {}
                Some(_) => {
                    wrong.insert(format!("{}:{line}: {from} uses {to}", relative.display()));
                }
                // Not a module of ours (`crate::SomeReexport` or the like).
                None => {}
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS (place them, here and in ARCHITECTURE.md): {unplaced:?}"
    );
    assert!(
        wrong.is_empty(),
        "imports against the module rule (a module may use only lower layers):\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The checker itself: a rule it cannot see broken proves nothing.
#[test]
fn the_check_sees_every_spelling_of_an_upward_import() {
    let refs = |code: &str, depth: usize| -> Vec<String> {
        top_level_references(&code_only(code), depth)
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    };
    assert_eq!(refs("use crate::api::App;", 1), ["api"]);
    assert_eq!(refs("use crate::{cli, http::Request};", 1), ["cli", "http"]);
    assert_eq!(
        refs("let x = crate :: serve::run(crate::config::X);", 2),
        ["serve", "config"]
    );
    // In src/db.rs, `super` is the crate root; in src/db/pool.rs, `super::super` is.
    assert_eq!(refs("use super::api;", 1), ["api"]);
    assert_eq!(refs("use super::super::{api, cli};", 2), ["api", "cli"]);
    assert!(refs("use super::pool;", 2).is_empty());
    // An inline module is one level deeper.
    assert!(refs("mod tests { use super::api; }", 1).is_empty());
    assert_eq!(refs("mod tests { fn f() {} } use super::api;", 1), ["api"]);
    // Comments, strings and characters are not code.
    assert!(refs(
        "// crate::api\n/* crate::cli */ let s = \"crate::serve\"; let r = r#\"crate::x\"#; let c = '{';",
        1
    )
    .is_empty());
    assert_eq!(refs("fn f<'a>(x: &'a crate::api::App) {}", 1), ["api"]);
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

/// `cli/mod.rs` -> `[cli]`, `cli/tenants.rs` -> `[cli, tenants]`, `config.rs` -> `[config]`.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    // The test kit is compiled into test builds only, so no module can reach it in the
    // product; it serves the unit tests of every layer, like the crate root.
    if parts.is_empty() && (stem == "lib" || stem == "main" || stem == "test_kit") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts)
}

/// The text with comments, string literals and character literals blanked (newlines kept, so
/// line numbers stay true).
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && !b
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && raw_string_start(&b, i).is_some()
        {
            let (open_len, hashes) = raw_string_start(&b, i).unwrap();
            for _ in 0..open_len {
                out.push(' ');
            }
            i += open_len;
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while i < b.len() && !b[i..].starts_with(&close) {
                blank(&mut out, b[i]);
                i += 1;
            }
            for _ in 0..close.len().min(b.len() - i) {
                out.push(' ');
            }
            i += close.len();
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || b.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\u{1F600}'); a lifetime ('a) has no closing quote.
            out.push(' ');
            i += 1;
            if b.get(i) == Some(&'\\') {
                out.push(' ');
                i += 1;
            }
            while i < b.len() && b[i] != '\'' {
                blank(&mut out, b[i]);
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `r"`, `r#"`, `br##"`...: the length of the opening and the number of `#`.
fn raw_string_start(b: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i + if b[i] == 'b' { 2 } else { 1 };
    let mut hashes = 0;
    while b.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (b.get(j) == Some(&'"')).then_some((j + 1 - i, hashes))
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// Tokens with their line numbers.
fn tokens(code: &str) -> Vec<(usize, Token)> {
    let b: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push((line, Token::Ident(b[start..i].iter().collect())));
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push((line, Token::PathSep));
            i += 2;
        } else {
            out.push((line, Token::Punct(c)));
            i += 1;
        }
    }
    out
}

/// Every top-level module named by a `crate::` path (`crate::m`, `crate::{m, n::x}`) or by a
/// `super::` path that climbs to the crate root, with its line. `depth` is how deep the file's
/// own module is (1 for `src/config.rs` and `src/cli/mod.rs`); inline `mod x { }` blocks add one.
fn top_level_references(code: &str, depth: usize) -> Vec<(usize, String)> {
    let t = tokens(code);
    let mut found = Vec::new();
    // The brace depths at which inline modules opened.
    let mut braces = 0usize;
    let mut module_braces: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let ident = |k: usize| match t.get(k) {
            Some((_, Token::Ident(s))) => Some(s.as_str()),
            _ => None,
        };
        let sep = |k: usize| matches!(t.get(k), Some((_, Token::PathSep)));
        match &t[i].1 {
            Token::Punct('{') => {
                braces += 1;
                let opens_module = i >= 2 && ident(i - 2) == Some("mod") && ident(i - 1).is_some();
                if opens_module {
                    module_braces.push(braces);
                }
            }
            Token::Punct('}') => {
                if module_braces.last() == Some(&braces) {
                    module_braces.pop();
                }
                braces = braces.saturating_sub(1);
            }
            Token::Ident(word) if word == "crate" || word == "super" => {
                // Where the path lands: after `crate::`, or after as many `super::` as there
                // are levels between here and the root.
                let here = depth + module_braces.len();
                let mut k = i;
                let at_root = if word == "crate" {
                    k += 1;
                    sep(k)
                } else {
                    let mut climbed = 0;
                    while ident(k) == Some("super") && sep(k + 1) {
                        climbed += 1;
                        k += 2;
                    }
                    if climbed == 0 {
                        i += 1;
                        continue; // `pub(super)`
                    }
                    k -= 1;
                    climbed == here
                };
                if at_root && sep(k) {
                    let line = t[i].0;
                    match &t.get(k + 1).map(|t| &t.1) {
                        Some(Token::Ident(m)) => found.push((line, m.clone())),
                        Some(Token::Punct('{')) => {
                            // A group: the first name of each comma-separated part.
                            let mut level = 0;
                            let mut expect_name = true;
                            let mut j = k + 1;
                            while j < t.len() {
                                match &t[j].1 {
                                    Token::Punct('{') => {
                                        level += 1;
                                        if level == 1 {
                                            expect_name = true;
                                        }
                                    }
                                    Token::Punct('}') => {
                                        level -= 1;
                                        if level == 0 {
                                            break;
                                        }
                                    }
                                    Token::Punct(',') if level == 1 => expect_name = true,
                                    Token::Ident(m) if level == 1 && expect_name => {
                                        found.push((t[j].0, m.clone()));
                                        expect_name = false;
                                    }
                                    _ => {}
                                }
                                j += 1;
                            }
                        }
                        _ => {}
                    }
                }
                i = k.max(i) + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}
