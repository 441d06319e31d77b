//! The `atelier` binary's error messages: one line that says what to do, never a panic.

use std::process::Command;

fn atelier(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run atelier");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn load_without_a_database_says_what_to_set() {
    let (ok, err) = atelier(&["load", "/tmp"]);
    assert!(!ok);
    assert!(err.contains("no database given: set DATABASE_URL"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn load_of_a_directory_without_the_files_names_the_first_missing_one() {
    let (ok, err) = atelier(&[
        "load",
        "/nonexistent",
        "--database-url",
        "host=/nonexistent user=x",
    ]);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent/product.csv does not exist"),
        "{err}"
    );
}

#[test]
fn help_lists_every_command_and_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["migrate", "generate", "load", "demo"] {
        assert!(help.contains(command), "{help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(["load", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--replace", "--jobs", "--database-url", "DATABASE_URL"] {
        assert!(help.contains(option), "{help}");
    }
}
