//! Records the git commit the binary is built from (`RVPT_COMMIT`), for the provenance of every
//! report: `<hash>`, `<hash>-dirty` with uncommitted changes, `unknown` outside a checkout.

fn main() {
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RVPT_COMMIT={commit}");
    // Restamp when HEAD moves, the index changes or a source changes (for `-dirty`).
    for path in [".git/HEAD", ".git/index", "src"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
