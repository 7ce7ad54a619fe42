//! JSON: written atomically to files, printed to stdout, and compared leaf by leaf.

use crate::error::{Error, Result};
use std::path::Path;

/// Pretty JSON, written through a temporary file and a rename.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Invalid(format!("cannot serialise {}: {e}", path.display())))?;
    crate::fsio::write_atomic(path, text.as_bytes())
}

/// The leaves where two JSON values differ, as `path: old → new` (settings a run or a checkpoint
/// was made with against the ones asked for now).
pub fn json_differences(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value::Object;
        match (a, b) {
            (Object(x), Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                let null = serde_json::Value::Null;
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &p,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{path}: {a} → {b}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

/// JSON for stdout: indented on a terminal, one line otherwise (notebook cells and `jq` read
/// it line by line).
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    use std::io::IsTerminal;
    let text = if std::io::stdout().is_terminal() {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| Error::Invalid(format!("cannot serialise the output: {e}")))?;
    println!("{text}");
    Ok(())
}
