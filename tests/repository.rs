//! The repository stands on its own: no tracked file refers to a path outside it, and every
//! link in the README and `docs/` resolves to a file (and heading) inside it. Whoever clones,
//! packages or forks the project gets everything its build, tests and docs need.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files of the repository, relative to its root: what git tracks, or, outside a git
/// checkout (an unpacked archive), every file but the build output.
fn repository_files() -> Vec<PathBuf> {
    let listed = std::process::Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root())
        .output();
    match listed {
        Ok(out) if out.status.success() => out
            .stdout
            .split(|&b| b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
            .filter(|path| root().join(path).is_file())
            .collect(),
        _ => {
            let mut files = Vec::new();
            walk(root(), Path::new(""), &mut files);
            files
        }
    }
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let path = dir.join(&name);
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(root, &path, files),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
}

/// `relative` resolved lexically against `dir` (both relative to the root); `None` when it
/// climbs above the root.
fn resolve_inside(dir: &Path, relative: &str) -> Option<PathBuf> {
    let mut parts: Vec<Component> = dir.components().collect();
    for component in Path::new(relative).components() {
        match component {
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            Component::Normal(_) => parts.push(component),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-')
}

/// Every path-like run of `text` that climbs to a parent folder anywhere along it (also after
/// a folder, or after `CARGO_MANIFEST_DIR` and a slash), as written.
fn climbing_paths(text: &str) -> Vec<&str> {
    let up = concat!("..", "/");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(up) {
        let hit = from + at;
        let start = text[..hit]
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_path_char(*c))
            .last()
            .map_or(hit, |(i, _)| i);
        let end = text[hit..]
            .find(|c: char| !is_path_char(c))
            .map_or(text.len(), |n| hit + n);
        found.push(&text[start..end]);
        from = end.max(hit + up.len());
    }
    found
}

/// Whether `path`, found in `file`, leads outside the repository. Markdown links and
/// `include_str!` resolve from the file's folder; cargo, the tests and the scripts resolve
/// from the root. So a path must stay inside from the file's folder, and, unless it names an
/// existing file from there, from the root too.
fn leaves_the_repository(file: &Path, path: &str) -> bool {
    let dir = file.parent().unwrap_or(Path::new(""));
    let relative = path.trim_start_matches('/');
    match resolve_inside(dir, relative) {
        None => true,
        Some(inside) if root().join(&inside).exists() => false,
        Some(_) => resolve_inside(Path::new(""), relative).is_none(),
    }
}

#[test]
fn no_file_refers_to_a_path_outside_the_repository() {
    let files = repository_files();
    assert!(
        files.iter().any(|f| f == Path::new("Cargo.toml")),
        "the file list is the repository's: {files:?}"
    );
    let mut outside = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(root().join(file)) else {
            continue; // not text
        };
        for path in climbing_paths(&text) {
            if leaves_the_repository(file, path) {
                outside.push(format!("{}: {path}", file.display()));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "tracked files refer to paths outside the repository:\n{}",
        outside.join("\n")
    );
}

#[test]
fn the_climbing_path_finder_sees_what_it_must() {
    let up = concat!("..", "/");
    let text = format!("see {up}{up}elsewhere/file.md and `{up}x` and a/{up}{up}b");
    assert_eq!(
        climbing_paths(&text),
        [
            format!("{up}{up}elsewhere/file.md"),
            format!("{up}x"),
            format!("a/{up}{up}b")
        ]
    );
    let doc = Path::new("docs/api.md");
    assert!(!leaves_the_repository(doc, &format!("{up}openapi.yaml")));
    assert!(leaves_the_repository(doc, &format!("{up}{up}x")));
    // The bug this test exists for: a test helper reaching beside the crate.
    let helper = Path::new("tests/common/mod.rs");
    let sample = format!("{up}shared/data/sample");
    assert!(leaves_the_repository(helper, &sample), "from the root");
    assert!(
        leaves_the_repository(helper, &format!("/{sample}")),
        "after CARGO_MANIFEST_DIR"
    );
    let include = format!("{up}{up}sql/0001_schema.sql");
    assert!(
        !leaves_the_repository(Path::new("src/pg/migrate.rs"), &include),
        "an include_str! of a file in the repository"
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    markdown
        .lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                return false;
            }
            !in_code && line.starts_with('#')
        })
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect()
}

/// The targets of the inline links `[text](target)` and reference definitions `[x]: target`
/// of a Markdown text, outside code blocks and code spans.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Code spans hold examples, not links.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let trimmed = prose.trim_start();
        if trimmed.starts_with('[') {
            if let Some((_, target)) = trimmed.split_once("]: ") {
                targets.push(target.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            targets.push(target.trim_matches(|c| c == '<' || c == '>').to_owned());
            rest = &after[end..];
        }
    }
    targets
}

#[test]
fn every_link_in_the_readme_and_docs_resolves_inside_the_repository() {
    let docs: Vec<PathBuf> = repository_files()
        .into_iter()
        .filter(|f| {
            f == Path::new("README.md")
                || (f.starts_with("docs") && f.extension().is_some_and(|e| e == "md"))
        })
        .collect();
    assert!(
        docs.iter().any(|f| f.starts_with("docs")),
        "docs/ holds the API reference, the data format and the architecture"
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &docs {
        let text = std::fs::read_to_string(root().join(file)).expect("read a doc");
        let dir = file.parent().unwrap_or(Path::new(""));
        for target in link_targets(&text) {
            if target.is_empty()
                || target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                Some(file.clone())
            } else {
                resolve_inside(dir, path)
            };
            let Some(resolved) = resolved else {
                broken.push(format!(
                    "{}: {target} leaves the repository",
                    file.display()
                ));
                continue;
            };
            let full = root().join(&resolved);
            if !full.exists() {
                broken.push(format!("{}: {target} does not exist", file.display()));
                continue;
            }
            if let (Some(fragment), true) =
                (fragment, resolved.extension().is_some_and(|e| e == "md"))
            {
                let text = std::fs::read_to_string(&full).expect("read a linked doc");
                if !anchors(&text).contains(fragment) {
                    broken.push(format!("{}: {target} names no heading", file.display()));
                }
            }
        }
    }
    assert!(checked > 0, "the README links to the docs");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_finder_sees_inline_and_reference_links_but_not_code() {
    let text = "See [the API](docs/api.md#routes) and [spec][s].\n\n[s]: openapi.yaml\n\
                `[not](a-link.md)`\n```\n[nor](this.md)\n```\n";
    assert_eq!(link_targets(text), ["docs/api.md#routes", "openapi.yaml"]);
    assert_eq!(anchor("How a GET is served"), "how-a-get-is-served");
    assert_eq!(
        anchor("`GET /products/{product_id}`"),
        "get-productsproduct_id"
    );
}
