//! Names the code that decides what a cached body's bytes are, for catalog snapshots
//! (`src/cache/snapshot.rs`): a digest of every source file under `src/` but those that only
//! serve, log, configure or load (listed below), and of `Cargo.lock` (libdeflate's and zstd's
//! versions decide the packed bytes). A snapshot written by a build with another digest is not loaded,
//! so a deploy that changes none of these restarts warm, and one that does warms from scratch.

use std::path::{Path, PathBuf};

/// Paths under `src/` whose code cannot change a cached body: the HTTP edge (it sends bodies,
/// and frames list pages with `render`'s code), the command line and its allocation census,
/// logging, systemd notifications, configuration, the supervisor, progress lines, and the data
/// set and loader.
const NOT_RENDERING: &[&str] = &[
    "src/http",
    "src/main.rs",
    "src/alloc_census.rs",
    "src/logging.rs",
    "src/notify.rs",
    "src/config.rs",
    "src/task.rs",
    "src/progress.rs",
    "src/dataset",
    "src/pg/load",
    "src/pg/cluster.rs",
];

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let mut files = Vec::new();
    collect(Path::new("src"), &mut files);
    files.retain(|f| !NOT_RENDERING.iter().any(|n| f.starts_with(n)));
    files.push(PathBuf::from("Cargo.lock"));
    files.sort();
    // Four FNV-1a lanes with different starting points: 32 bytes, so that an accidental match
    // is out of the question (this guards against mistakes, not attacks).
    let mut lanes = [
        0xcbf2_9ce4_8422_2325u64,
        0x8422_2325_cbf2_9ce4,
        0x9e37_79b9_7f4a_7c15,
        0xc4ce_b9fe_1a85_ec53,
    ];
    for file in &files {
        let name = file.to_string_lossy().replace('\\', "/");
        let contents = std::fs::read(file).unwrap_or_default();
        for (i, lane) in lanes.iter_mut().enumerate() {
            for &b in name.as_bytes().iter().chain([0u8].iter()).chain(&contents) {
                *lane ^= u64::from(b);
                *lane = lane.wrapping_mul(0x0100_0000_01b3 + 2 * i as u64);
            }
        }
    }
    let digest: String = lanes.iter().map(|l| format!("{l:016x}")).collect();
    println!("cargo:rustc-env=ATELIER_RENDER_DIGEST={digest}");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
