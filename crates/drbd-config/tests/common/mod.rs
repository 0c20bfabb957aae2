//! Helpers shared by the integration tests: corpus discovery, the
//! per-file header (`# host: NAME`, optional `# dump: RES`) and a
//! whitespace-insensitive tree view of dump output.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf" || e == "res"))
        .collect();
    v.sort();
    v
}

/// `# host: NAME` and `# dump: RES` lines at the top of a corpus file.
pub fn header(path: &Path) -> (String, Option<String>) {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    let mut host = None;
    let mut dump = None;
    for line in text.lines().take(3) {
        if let Some(h) = line.strip_prefix("# host: ") {
            host = Some(h.trim().to_string());
        }
        if let Some(r) = line.strip_prefix("# dump: ") {
            dump = Some(r.trim().to_string());
        }
    }
    (
        host.unwrap_or_else(|| panic!("{}: no '# host:' line", path.display())),
        dump,
    )
}

/// One line of a dump with the lines nested under it.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub text: String,
    pub children: Vec<Node>,
}

fn normalize(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses dump output into a tree: `X {` opens a section, `}` closes it,
/// other lines are leaves; whitespace runs are collapsed, blank lines dropped.
pub fn tree(text: &str) -> Vec<Node> {
    let mut stack: Vec<Node> = vec![Node {
        text: String::new(),
        children: Vec::new(),
    }];
    for raw in text.lines() {
        let line = normalize(raw);
        if line.is_empty() {
            continue;
        }
        if line == "}" {
            let done = stack.pop().expect("balanced");
            stack
                .last_mut()
                .expect("unbalanced '}'")
                .children
                .push(done);
        } else if line.ends_with('{') {
            stack.push(Node {
                text: line,
                children: Vec::new(),
            });
        } else {
            stack.last_mut().unwrap().children.push(Node {
                text: line,
                children: Vec::new(),
            });
        }
    }
    assert_eq!(stack.len(), 1, "unbalanced braces in:\n{text}");
    stack.pop().unwrap().children
}

/// `FILE:LINE:` at the start of the first stderr line that has one.
pub fn first_file_line(stderr: &str) -> Option<(String, u32)> {
    for line in stderr.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(f), Some(l), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if f.is_empty() || f.contains(' ') {
            continue;
        }
        if let Ok(n) = l.parse::<u32>() {
            return Some((f.to_string(), n));
        }
    }
    None
}

pub fn basename(p: &str) -> String {
    Path::new(p)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
