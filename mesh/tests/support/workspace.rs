//! The workspace as the deployment checks read it: its root, and the text of every Rust source file, to check
//! that a setting a deployment file sets is one the code reads.

use std::path::{Path, PathBuf};

/// The workspace's root directory.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root")
}

/// Every Rust source file's text under each crate's `src/`.
pub fn sources() -> String {
    let mut text = String::new();
    let mut stack: Vec<PathBuf> =
        std::fs::read_dir(root()).unwrap().flatten().map(|e| e.path().join("src")).filter(|p| p.is_dir()).collect();
    while let Some(dir) = stack.pop() {
        for f in std::fs::read_dir(dir).unwrap().flatten() {
            let p = f.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
    }
    text
}
