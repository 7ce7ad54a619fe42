//! The README's "Using it" section cannot drift from the binary: its first shell block (a tour
//! on the toy models) is run as it is, in a fresh folder, with no source tree (only the models
//! embedded in the binary); every `rvpt` command of its other blocks (full-length runs, your own
//! data) is parsed by the binary (`--help` appended: clap refuses an unknown flag or a bad value
//! before it gets there). The same parse covers every
//! `rvpt` command in the shell blocks of the documents the README links to for the details
//! (`docs/results.md`, `docs/benchmarks.md`).

use std::path::Path;
use std::process::Command;

/// The documents besides the README whose shell blocks' `rvpt` commands must parse.
const DOCS: [&str; 2] = ["docs/results.md", "docs/benchmarks.md"];

/// A file of the crate, by its path from the crate root.
fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The shell blocks of a Markdown text, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    markdown
        .split("```sh\n")
        .skip(1)
        .map(|b| b[..b.find("```").unwrap()].to_string())
        .collect()
}

/// The shell blocks of the README's "## Using it" section, in order.
fn using_it_blocks() -> Vec<String> {
    let readme = read("README.md");
    let start = readme
        .find("\n## Using it")
        .expect("a `## Using it` section");
    let rest = &readme[start + 1..];
    let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3)];
    sh_blocks(section)
}

/// `line` without a trailing shell comment (a `#` after whitespace, outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut quote, mut prev_space) = (None, true);
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return line[..i].trim_end(),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Logical lines (backslash continuations joined), comments and blanks dropped.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        let line = strip_comment(line.trim_end());
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(line);
        let cmd = cur.trim().to_string();
        cur.clear();
        if !cmd.is_empty() && !cmd.starts_with('#') {
            out.push(cmd);
        }
    }
    out
}

fn bin_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rvpt"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn path_with_rvpt() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn the_readme_tour_runs_as_written() {
    let blocks = using_it_blocks();
    let tour = blocks.first().expect("a shell block in `Using it`");
    let dir = tempfile::tempdir().unwrap();
    let script = format!("set -euo pipefail\n{tour}");
    let o = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path_with_rvpt())
        .env("HF_HUB_OFFLINE", "1")
        // As an installed binary: its models are the embedded ones, the source tree is not there.
        .env(rvpt::weights::SOURCE_TREE_VAR, "none")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the README tour failed:\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Parses every `rvpt` command of `blocks` (from `source`) with `--help` appended, failing on the
/// first the binary refuses; returns how many were checked.
fn assert_rvpt_commands_parse(blocks: &[String], source: &str) -> usize {
    // In an empty folder: should a command run instead of parsing, it finds nothing to use.
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for block in blocks {
        for cmd in commands(block) {
            let Some(args) = cmd.strip_prefix("rvpt ") else {
                continue;
            };
            // The shell does the word splitting (quotes, globs stay as written).
            let o = Command::new("bash")
                .arg("-c")
                .arg(format!("rvpt {args} --help"))
                .current_dir(dir.path())
                .env("PATH", path_with_rvpt())
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{source} command does not parse: {cmd}\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_other_readme_command_parses() {
    let blocks = using_it_blocks();
    assert!(
        blocks.len() >= 2,
        "expected the tour and the full-run blocks"
    );
    let checked = assert_rvpt_commands_parse(&blocks[1..], "README");
    assert!(checked >= 5, "only {checked} commands found");
}

#[test]
fn every_docs_command_parses() {
    let checked: usize = DOCS
        .iter()
        .map(|doc| assert_rvpt_commands_parse(&sh_blocks(&read(doc)), doc))
        .sum();
    // docs/results.md's recipe for the paper's comparison alone has four.
    assert!(checked >= 4, "only {checked} commands found in {DOCS:?}");
}
