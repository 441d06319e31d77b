//! The API against an independent model of its contract. `tests/model/contract_model.py` was
//! written from the contract and the data format alone, not from this code: it reads a data
//! set's CSV files with its own parser, computes what every GET must answer (bodies, key order,
//! JSON types, statuses) and compares. Here it runs over real HTTP against a server loaded from
//! the same files: a generated set, and the hand-made sample (every quirk at least once).
//! `tests/model/contract_writes.py`, written the same way, sends writes of every kind (and
//! writes the contract refuses), applies them to the model, and compares every GET they touch.

mod common;

use std::path::Path;

/// Runs the model's `script` with `args` over the data set in `dir` against a server loaded
/// from it.
async fn model_agrees_on(dir: &Path, script: &str, args: &[&str]) {
    let (_db, server) = common::server_with_data(dir).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/model")
        .join(script);
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .arg(dir)
        .args(["--base", &format!("http://{}", server.addr)])
        .args(["--threads", "4"])
        .args(args);
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
        printed.contains("=== mismatch classes (0) ==="),
        "the model did not get to compare:\n{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_get_on_a_generated_set_matches_an_independent_model_of_the_contract() {
    let data = common::generated("contract-model", 0.002, 11);
    model_agrees_on(data.path(), "contract_model.py", &["--sample", "400"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_get_on_the_hand_made_sample_matches_an_independent_model_of_the_contract() {
    let sample = common::sample_dir();
    model_agrees_on(&sample, "contract_model.py", &["--sample", "400"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_every_kind_show_as_an_independent_model_of_the_contract_says() {
    let data = common::generated("contract-writes", 0.002, 12);
    let journal = common::TempDir::new("contract-writes-journal");
    let journal = journal.path().join("journal.json");
    let journal = journal.to_str().expect("a UTF-8 temp path");
    // A write shows at once on the instance that took it; the wait is for a loaded machine,
    // and each GET that never matches waits it out (a broken vote took ten minutes at 15 s).
    let args = ["--journal", journal, "--poll", "5"];
    model_agrees_on(data.path(), "contract_writes.py", &args).await;
}
