//! The API against an independent model of its contract. `tests/model/contract_model.py` was
//! written from the contract and the data format alone, not from this code: it reads a data
//! set's CSV files with its own parser, computes what every GET must answer (bodies, key order,
//! JSON types, statuses) and compares. Here it runs over real HTTP against a server loaded from
//! the same files: a generated set, and the hand-made sample (every quirk at least once).

mod common;

use std::path::Path;

/// Runs the model over the data set in `dir` against a server loaded from it.
async fn model_agrees_on(dir: &Path) {
    let (_db, server) = common::server_with_data(dir).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/model/contract_model.py");
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .arg(dir)
        .args(["--base", &format!("http://{}", server.addr)])
        .args(["--sample", "400", "--threads", "4"]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the model's thread")
        .expect("python3 runs (it is on the build machine; .ci/run installs it otherwise)");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the model disagrees on {}:\n{printed}",
        dir.display()
    );
    assert!(
        printed.contains("=== per-endpoint: fully matching / compared ==="),
        "the model did not get to compare:\n{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_get_on_a_generated_set_matches_an_independent_model_of_the_contract() {
    let data = common::generated("contract-model", 0.002, 11);
    model_agrees_on(data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_get_on_the_hand_made_sample_matches_an_independent_model_of_the_contract() {
    model_agrees_on(&common::sample_dir()).await;
}
