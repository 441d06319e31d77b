//! The `atelier` binary: its error messages (one line that says what to do, never a panic),
//! and what its flags do to the process.

mod common;

use std::process::Command;

/// Runs `atelier` with `args` and no `DATABASE_URL`: whether it succeeded, and its stderr.
fn atelier(args: &[&str]) -> (bool, String) {
    atelier_with_env(args, &[])
}

/// As [`atelier`], with `DATABASE_URL` and the other variables `env` sets.
fn atelier_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_atelier"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied());
    run(&mut command)
}

/// Whether `command` succeeded, and its stderr.
fn run(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("run atelier");
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

#[test]
fn shards_nginx_prints_the_shard_map_and_refuses_a_bad_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(["shards", "nginx", "--listen", "8080"])
        .args(["10.0.0.1:3001,10.0.0.2:3001", "10.0.0.3:3001,10.0.0.4:3001"])
        .output()
        .expect("run atelier");
    assert!(out.status.success());
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(
        config.contains("upstream atelier_shard_1 {\n    server 10.0.0.3:3001"),
        "{config}"
    );
    assert!(config.contains("50.00% atelier_shard_0;"), "{config}");
    assert!(config.contains("listen 8080;"), "{config}");
    let (ok, err) = atelier(&["shards", "nginx", "10.0.0.1:3001,"]);
    assert!(!ok);
    assert!(err.contains("comma-separated list of host:port"), "{err}");
    let (ok, err) = atelier(&["serve", "--shard", "3/3"]);
    assert!(!ok);
    assert!(err.contains("--shard takes I/N"), "{err}");
}

#[test]
fn a_replica_url_naming_several_hosts_is_refused() {
    let (ok, err) = atelier(&[
        "serve",
        "--database-url",
        "host=/nonexistent user=x",
        "--replica-url",
        "host=standby-a,standby-b user=x dbname=atelier",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--replica-url names several hosts") && err.contains("of its own"),
        "{err}"
    );
    // In the environment, URLs are separated by `;`: the second one here is the refused one.
    let (ok, err) = atelier_with_env(
        &["serve", "--database-url", "host=/nonexistent user=x"],
        &[(
            "ATELIER_REPLICA_URLS",
            "host=/nonexistent user=x dbname=atelier;host=standby-a,standby-b user=x",
        )],
    );
    assert!(!ok);
    assert!(
        err.contains("--replica-url names several hosts (standby-a"),
        "{err}"
    );
    let (ok, err) = atelier(&[
        "serve",
        "--database-url",
        "host=/nonexistent user=x",
        "--replica-max-lag-ms",
        "60000",
    ]);
    assert!(!ok);
    assert!(err.contains("--replica-max-lag-ms"), "{err}");
}

#[test]
fn a_products_run_length_out_of_range_is_refused() {
    for rows in ["0", "4", "1000001"] {
        let (ok, err) = atelier(&[
            "serve",
            "--database-url",
            "host=/nonexistent user=x",
            "--max-page-rows",
            rows,
        ]);
        assert!(!ok, "{rows}");
        assert!(err.contains("--max-page-rows"), "{rows}: {err}");
    }
}

/// A server of this build refuses a database that lacks one of its migrations, and says what
/// to run; migrated, the same database is served.
#[tokio::test]
async fn serve_refuses_a_database_behind_this_builds_migrations() {
    let db = common::empty_database().await;
    let newest = atelier::pg::migrate::MIGRATIONS.last().unwrap().version;
    let mut client = db.client().await;
    atelier::pg::migrate::migrate_to(&mut client, newest - 1)
        .await
        .unwrap();
    let url = common::connection_string(&db.config);
    let serve = |url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--database-url", &url])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run atelier")
    };
    let out = serve(url.clone()).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("migrations up to {}", newest - 1))
            && err.contains("atelier migrate"),
        "{err}"
    );
    // Never migrated at all: refused too.
    let bare = common::empty_database().await;
    let out = serve(common::connection_string(&bare.config))
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never migrated"));

    atelier::pg::migrate::migrate(&mut client).await.unwrap();
    let mut child = common::KillOnDrop(serve(url));
    let (addr, _lines) = common::served_address(&mut child);
    common::ready(addr).await;
}

/// Whether this process may lock memory past any limit (CAP_IPC_LOCK), or has no limit.
fn may_lock_memory() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the one struct it is given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    caps & (1 << 14) != 0 || (got == 0 && limit.rlim_cur == libc::RLIM_INFINITY)
}

/// `--lock-memory` locks the server's pages as they are touched (its `VmLck`); without it,
/// nothing is locked. Where the process may not lock past a finite limit, the server refuses
/// the flag at once and says what to change.
#[tokio::test]
async fn lock_memory_locks_the_servers_pages_and_only_when_asked() {
    let db = common::empty_database().await;
    let mut client = db.client().await;
    atelier::pg::migrate::migrate(&mut client).await.unwrap();
    let url = common::connection_string(&db.config);
    let serve = |lock: bool| {
        Command::new(env!("CARGO_BIN_EXE_atelier"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--cache-mb", "16", "--database-url", &url])
            .args(lock.then_some("--lock-memory"))
            .env_remove("ATELIER_LOCK_MEMORY")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run atelier")
    };
    // The refusal, staged where the tools are: under a 64 KiB limit and without CAP_IPC_LOCK
    // (util-linux's prlimit and setpriv, which drops the capability for what it runs).
    let staged = Command::new("prlimit")
        .args([
            "--memlock=65536:65536",
            "setpriv",
            "--bounding-set=-ipc_lock",
        ])
        .args(["--inh-caps=-ipc_lock", "--", env!("CARGO_BIN_EXE_atelier")])
        .args(["serve", "--lock-memory", "--database-url", &url])
        .env_remove("ATELIER_LOCK_MEMORY")
        .output();
    match staged {
        Ok(out) if !String::from_utf8_lossy(&out.stderr).contains("prlimit:") => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{err}");
            assert!(
                err.contains("memlock limit is 64 KiB") && err.contains("CAP_IPC_LOCK"),
                "{err}"
            );
        }
        _ => println!("no prlimit or setpriv here: the staged refusal was skipped"),
    }
    if !may_lock_memory() {
        let out = serve(true).wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("memlock limit") && err.contains("CAP_IPC_LOCK"),
            "{err}"
        );
        println!("this process may not lock memory: only the refusal was checked");
        return;
    }
    for lock in [false, true] {
        let mut child = common::KillOnDrop(serve(lock));
        let (addr, _lines) = common::served_address(&mut child.0);
        common::ready(addr).await;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
        let locked_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmLck in /proc/PID/status");
        assert_eq!(
            locked_kb > 0,
            lock,
            "--lock-memory {lock}: VmLck {locked_kb} kB"
        );
    }
}

#[test]
fn settings_that_would_break_the_server_are_refused_with_the_flag_named() {
    for (flag, value) in [
        ("--pool-size", "0"),
        ("--pool-size", "18446744073709551615"),
        ("--cache-mb", "17592186044416"),
        ("--max-headers", "0"),
        ("--body-limit", "0"),
        ("--max-connections", "0"),
        ("--sweep-max-rate", "0"),
        ("--sweep-period-s", "18446744073709551615"),
    ] {
        let (ok, err) = atelier(&["serve", flag, value]);
        assert!(!ok, "{flag} {value}");
        assert!(
            err.contains(flag) && err.contains("is not in"),
            "{flag} {value}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let (ok, err) = atelier(&["load", "/tmp", "--jobs", "1000"]);
    assert!(!ok && err.contains("--jobs"), "{err}");
}

#[test]
fn an_empty_database_url_is_no_database_url() {
    let (ok, err) = atelier_with_env(&["serve"], &[("DATABASE_URL", "")]);
    assert!(!ok);
    assert!(err.contains("no database given: set DATABASE_URL"), "{err}");
}

#[test]
fn demo_refuses_what_it_cannot_do_before_starting_a_database() {
    // Without DATABASE_URL the data would go with the demo's private cluster.
    let (ok, err) = atelier(&["demo", "--no-serve"]);
    assert!(!ok);
    assert!(err.contains("--no-serve needs DATABASE_URL"), "{err}");
    assert!(!err.contains("starting a private PostgreSQL"), "{err}");
    // A serving setting that cannot work is refused before the cluster, data and load.
    let (ok, err) = atelier(&["demo", "--feed-database-url", "not a url"]);
    assert!(!ok);
    assert!(
        err.contains("--feed-database-url: not a valid PostgreSQL connection string"),
        "{err}"
    );
    assert!(!err.contains("starting a private PostgreSQL"), "{err}");
}

#[tokio::test]
async fn demo_refuses_a_database_that_holds_data_unless_told_to_replace_it() {
    let db = common::loaded_database(&common::sample_dir()).await;
    let url = common::connection_string(&db.config);
    // On a thread of its own: this test's runtime must go on serving its connections (the
    // load's, whose session lock it lets go of when it closes) while the demo runs.
    let demo = |replace: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_atelier"));
        command
            .args(["demo", "--no-serve", "--data"])
            .arg(common::sample_dir())
            .env("DATABASE_URL", &url);
        if replace {
            command.arg("--replace");
        }
        tokio::task::spawn_blocking(move || run(&mut command))
    };
    let (ok, err) = demo(false).await.unwrap();
    assert!(!ok);
    assert!(
        err.contains("already holds data") && err.contains("--replace"),
        "{err}"
    );
    let client = db.client().await;
    let reviews = common::count(&client, "reviews").await;
    assert!(reviews > 0, "the data is still there");
    let (ok, err) = demo(true).await.unwrap();
    assert!(ok, "{err}");
    assert_eq!(common::count(&client, "reviews").await, reviews);
}

/// Ctrl-C in a terminal signals the whole foreground process group: while the demo still loads
/// (before it handles signals) it dies at once, and its private PostgreSQL must go with it.
#[test]
fn a_demo_interrupted_while_it_loads_takes_its_private_database_with_it() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut child = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_atelier"))
            .args(["demo", "--data"])
            .arg(common::sample_dir())
            .env_remove("DATABASE_URL")
            .process_group(0)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run atelier demo"),
    );
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut cluster_dir = None;
    for line in stderr.lines().map_while(Result::ok) {
        if let Some(url) = line.strip_prefix("private cluster ready: DATABASE_URL='") {
            let host = url
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("host="));
            cluster_dir = host.map(std::path::PathBuf::from);
            break;
        }
    }
    let cluster_dir = cluster_dir.expect("the demo names its private cluster");
    assert!(cluster_dir.exists());
    // SAFETY: a signal to the process group this test started (its pid is the group's id).
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    let _ = child.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cluster_dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} outlived the interrupted demo",
            cluster_dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_refused_connection_says_what_the_server_refused() {
    let db = common::migrated_database().await;
    let mut config = db.config.clone();
    config.dbname("no_such_database");
    let url = common::connection_string(&config);
    let (ok, err) =
        tokio::task::spawn_blocking(move || atelier(&["migrate", "--database-url", &url]))
            .await
            .unwrap();
    assert!(!ok);
    assert!(
        err.contains("the server has no such database: create it"),
        "{err}"
    );
    assert!(!err.contains("is the server running"), "{err}");
}

#[test]
fn a_port_in_use_is_named_as_such() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = busy.local_addr().unwrap().to_string();
    // A database nothing answers for: the server starts anyway, and the port is what fails.
    let (ok, err) = atelier(&[
        "serve",
        "--listen",
        &listen,
        "--database-url",
        "host=/nonexistent user=x",
        "--db-timeout-ms",
        "200",
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot listen on {listen}"))
            && err.contains("another server uses that port"),
        "{err}"
    );
}
