//! A private, throwaway PostgreSQL cluster started from the installed server binaries.
//!
//! `atelier demo` and the test suite use one when `DATABASE_URL` is not set, so nothing has to
//! be set up beyond installing the PostgreSQL server package. The cluster lives in a fresh
//! directory under the system temp dir, listens only on a Unix socket inside that directory
//! (so it never fights over a TCP port), runs as the `postgres` OS user when the caller is
//! root (PostgreSQL refuses to run as root), and is tuned for bulk loading rather than
//! durability. It is stopped and deleted when dropped — and, because test binaries never drop
//! their statics, also by a small watchdog process that notices when its owner has exited.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tokio_postgres::Config;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("PostgreSQL server binaries not found (looked for initdb and pg_ctl in ATELIER_PG_BIN if set, else through pg_config, on PATH, in /usr/lib/postgresql/*/bin and /usr/pgsql-*/bin): install them, e.g. `apt-get install postgresql` on Debian/Ubuntu; if they are installed elsewhere, set ATELIER_PG_BIN to their directory; or set DATABASE_URL to use a running server")]
    BinariesNotFound,
    #[error("running as root, but there is no `postgres` OS user to run PostgreSQL as: create one (`useradd postgres`) or set DATABASE_URL")]
    NoPostgresUser,
    #[error("cannot prepare the cluster directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
}

/// Settings for the private cluster, tuned for loading tens of millions of rows on a small
/// machine: durability is traded for speed because the data can always be reloaded.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub shared_buffers: String,
    pub maintenance_work_mem: String,
    pub max_connections: u32,
    /// Whether standbys may stream from it ([`PrivateCluster::start_standby`]); otherwise the
    /// log holds only what crash recovery needs, which makes bulk loads cheaper.
    pub replication: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            shared_buffers: "256MB".into(),
            maintenance_work_mem: "512MB".into(),
            max_connections: 200,
            replication: false,
        }
    }
}

/// A running private cluster; stopped and removed on drop.
pub struct PrivateCluster {
    root: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    port: u16,
    watchdog: Option<Child>,
    stopped: bool,
}

impl PrivateCluster {
    /// Creates and starts a new cluster. Takes a few seconds (initdb).
    pub fn start(opts: &ClusterOptions) -> Result<Self, ClusterError> {
        let bin = find_bin_dir().ok_or(ClusterError::BinariesNotFound)?;
        let run_as = if is_root() {
            if owner_ids("postgres").is_none() {
                return Err(ClusterError::NoPostgresUser);
            }
            Some("postgres".to_owned())
        } else {
            None
        };
        let cluster = PrivateCluster::in_fresh_dir(bin, run_as, 5432)?;
        cluster.init(opts)?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// A cluster (not yet created) in a fresh directory, watched so that it goes with this
    /// process.
    fn in_fresh_dir(
        bin: PathBuf,
        run_as: Option<String>,
        port: u16,
    ) -> Result<PrivateCluster, ClusterError> {
        let mut cluster = PrivateCluster {
            root: unique_dir()?,
            bin,
            run_as,
            port,
            watchdog: None,
            stopped: false,
        };
        cluster.watchdog = cluster.spawn_watchdog().ok();
        Ok(cluster)
    }

    /// A connection configuration for database `dbname` as the superuser `postgres`.
    pub fn config(&self, dbname: &str) -> Config {
        let mut config = Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.port)
            .user("postgres")
            .dbname(dbname)
            .application_name("atelier");
        config
    }

    /// The same as [`Self::config`], as a `DATABASE_URL` for psql and other tools.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.socket_dir().display(),
            self.port
        )
    }

    /// The directory holding the data directory, socket and server log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.clone()
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn init(&self, opts: &ClusterOptions) -> Result<(), ClusterError> {
        let data = self.data_dir();
        self.run(
            "initdb",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("--auth=trust"),
                OsStr::new("--encoding=UTF8"),
                OsStr::new("--locale=C"),
                OsStr::new("--no-sync"),
            ],
        )?;
        let (wal_level, wal_senders) = if opts.replication {
            ("replica", 4)
        } else {
            ("minimal", 0)
        };
        let settings = format!(
            "\n# atelier private cluster: throwaway, tuned for bulk loading\n\
             listen_addresses = ''\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             max_connections = {max_connections}\n\
             shared_buffers = {shared_buffers}\n\
             maintenance_work_mem = {maintenance_work_mem}\n\
             work_mem = 16MB\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             wal_level = {wal_level}\n\
             max_wal_senders = {wal_senders}\n\
             max_wal_size = 8GB\n\
             checkpoint_timeout = 30min\n\
             max_parallel_maintenance_workers = 2\n\
             logging_collector = off\n\
             log_min_messages = warning\n",
            port = self.port,
            socket = self.socket_dir().display(),
            max_connections = opts.max_connections,
            shared_buffers = opts.shared_buffers,
            maintenance_work_mem = opts.maintenance_work_mem,
        );
        self.add_settings(&settings)
    }

    /// Appends `settings` to the cluster's `postgresql.conf` (a later line wins).
    fn add_settings(&self, settings: &str) -> Result<(), ClusterError> {
        let conf = self.data_dir().join("postgresql.conf");
        let io = |source| ClusterError::Io {
            path: conf.clone(),
            source,
        };
        let mut text = std::fs::read_to_string(&conf).map_err(io)?;
        text.push_str(settings);
        std::fs::write(&conf, text).map_err(io)
    }

    /// Starts the server on the cluster's files, logging to `server.log`.
    fn start_server(&self) -> Result<(), ClusterError> {
        self.pg_ctl(
            &["start", "-w", "-t", "120", "-l"],
            Some(&self.root.join("server.log")),
        )
    }

    fn pg_ctl(&self, args: &[&str], log: Option<&Path>) -> Result<(), ClusterError> {
        let data = self.data_dir();
        let mut all: Vec<&OsStr> = vec![OsStr::new("-D"), data.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        if let Some(log) = log {
            all.push(log.as_os_str());
        }
        self.run("pg_ctl", all).map_err(|e| match e {
            ClusterError::Command { command, output } => {
                let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                ClusterError::Command {
                    command,
                    output: format!("{output}\nserver log:\n{}", tail.join("\n")),
                }
            }
            other => other,
        })
    }

    /// Runs one of the server's programs, as `postgres` when we are root.
    fn run<I, S>(&self, program: &str, args: I) -> Result<(), ClusterError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command(program);
        command.args(args);
        let shown = format!("{command:?}");
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ClusterError::Command {
                command: shown.clone(),
                output: e.to_string(),
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(ClusterError::Command {
                command: shown,
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            })
        }
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(path);
                c
            }
            None => Command::new(path),
        };
        // In the cluster's own directory: PostgreSQL's programs go back to the directory they
        // were started in, and complain ("could not change directory") where the user they
        // run as may not enter it (a checkout under /root, run as root).
        command.current_dir(&self.root);
        command
    }

    /// Starts `sh` watching this process: once it is gone, the cluster is stopped and removed.
    fn spawn_watchdog(&self) -> std::io::Result<Child> {
        let pg_ctl = format!("'{}'", self.bin.join("pg_ctl").display());
        let pg_ctl = match &self.run_as {
            Some(user) => format!("runuser -u {user} -- {pg_ctl}"),
            None => pg_ctl,
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {pg_ctl} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            data = self.data_dir().display(),
            root = self.root.display(),
        );
        // A process group of its own: the Ctrl-C that interrupts this process (while a demo
        // still generates or loads, before any handler is set) must not take the watchdog
        // with it, or the cluster would outlive both.
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&self.root)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    /// Starts a hot standby streaming from this cluster (which must have been started with
    /// `replication`), from a base backup taken now, in a directory of its own. It applies
    /// each commit `apply_delay` after the primary made it (`recovery_min_apply_delay`), so
    /// tests can watch a replica lag.
    pub fn start_standby(&self, apply_delay: std::time::Duration) -> Result<Self, ClusterError> {
        let standby =
            PrivateCluster::in_fresh_dir(self.bin.clone(), self.run_as.clone(), self.port)?;
        let data = standby.data_dir();
        let primary_socket = self.socket_dir();
        self.run(
            "pg_basebackup",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-h"),
                primary_socket.as_os_str(),
                OsStr::new("-p"),
                OsStr::new(&self.port.to_string()),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("--checkpoint=fast"),
                OsStr::new("--wal-method=stream"),
                OsStr::new("--write-recovery-conf"),
                OsStr::new("--no-sync"),
            ],
        )?;
        // The copied configuration names the primary's socket directory: the standby's own
        // settings come after it, and the later line wins.
        let settings = format!(
            "\n# atelier private standby\n\
             unix_socket_directories = '{socket}'\n\
             hot_standby = on\n\
             hot_standby_feedback = on\n\
             recovery_min_apply_delay = '{delay}ms'\n",
            socket = standby.socket_dir().display(),
            delay = apply_delay.as_millis(),
        );
        standby.add_settings(&settings)?;
        standby.start_server()?;
        Ok(standby)
    }

    /// Stops the server but keeps its files, as an outage would; [`Self::resume`] restarts it.
    pub fn pause(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&["stop", "-m", "fast", "-w"], None)
    }

    /// Starts the server again after [`Self::pause`].
    pub fn resume(&self) -> Result<(), ClusterError> {
        self.start_server()
    }

    /// Stops the server and deletes its files.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = self.pg_ctl(&["stop", "-m", "fast", "-w"], None);
        let _ = std::fs::remove_dir_all(&self.root);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn find_bin_dir() -> Option<PathBuf> {
    bin_dir_from(
        std::env::var_os("ATELIER_PG_BIN"),
        std::env::var_os("PATH").as_deref(),
        Path::new("/usr"),
    )
}

/// [`find_bin_dir`] over what it reads of the system: `ATELIER_PG_BIN`, the `PATH` (which
/// also finds `pg_config`), and the prefix under which Debian's `lib/postgresql/*/bin` and
/// PGDG's `pgsql-*/bin` are looked for.
fn bin_dir_from(pg_bin: Option<OsString>, path: Option<&OsStr>, usr: &Path) -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = pg_bin.map(PathBuf::from) {
        return has_initdb(&dir).then_some(dir);
    }
    let mut pg_config = Command::new("pg_config");
    if let Some(path) = path {
        pg_config.env("PATH", path);
    }
    if let Ok(out) = pg_config.arg("--bindir").stderr(Stdio::null()).output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Some(dir);
        }
    }
    // On PATH (Fedora's /usr/bin, a source build's prefix).
    if let Some(dir) = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_initdb(dir))
    {
        return Some(dir);
    }
    // The newest of Debian's versioned directories, then of PGDG's RPM ones.
    let newest = |parent: &Path, version_of: fn(&str) -> Option<&str>| {
        let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let version = version_of(&name)?.parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                has_initdb(&bin).then_some((version, bin))
            })
            .collect();
        candidates.sort();
        candidates.pop().map(|(_, bin)| bin)
    };
    newest(&usr.join("lib/postgresql"), |n| Some(n))
        .or_else(|| newest(usr, |n| n.strip_prefix("pgsql-")))
}

fn is_root() -> bool {
    // Without libc: the effective uid is in /proc/self/status ("Uid: real effective ...").
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// The uid and gid of an OS user, from /etc/passwd.
fn owner_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&user) && fields.len() > 3 {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// A new directory for the cluster, owned by the user the server will run as.
fn unique_dir() -> Result<PathBuf, ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "atelier-pg-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                let io = |source| ClusterError::Io {
                    path: dir.clone(),
                    source,
                };
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io)?;
                if is_root() {
                    let (uid, gid) = owner_ids("postgres").ok_or(ClusterError::NoPostgresUser)?;
                    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io)?;
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(ClusterError::Io { path: dir, source }),
        }
    }
    Err(ClusterError::Io {
        path: base,
        source: std::io::Error::other("could not create a unique directory"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory holding what [`bin_dir_from`] looks for, under `root`.
    fn binaries(root: &Path, dir: &str) -> PathBuf {
        let bin = root.join(dir);
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["initdb", "pg_ctl"] {
            std::fs::write(bin.join(name), "").unwrap();
        }
        bin
    }

    #[test]
    fn the_binaries_are_found_by_setting_then_path_then_the_newest_packaged_version() {
        let root = std::env::temp_dir().join(format!("atelier-bin-search-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let usr = root.join("usr");
        let search = |pg_bin: Option<&Path>, path: &[&Path]| {
            let path = std::env::join_paths(path).unwrap();
            bin_dir_from(pg_bin.map(OsString::from), Some(&path), &usr)
        };
        let empty = root.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert_eq!(search(None, &[&empty]), None);

        // PGDG's directories, when Debian has none.
        binaries(&usr, "pgsql-9/bin");
        let pgdg = binaries(&usr, "pgsql-14/bin");
        assert_eq!(search(None, &[&empty]), Some(pgdg));
        // Debian's before PGDG's, the newest by number (16 after 9), a directory without both
        // binaries left out.
        binaries(&usr, "lib/postgresql/9/bin");
        let debian = binaries(&usr, "lib/postgresql/16/bin");
        std::fs::create_dir_all(usr.join("lib/postgresql/17/bin")).unwrap();
        assert_eq!(search(None, &[&empty]), Some(debian));
        // On PATH before either, in PATH's order.
        let first = binaries(&root, "opt/a/bin");
        let second = binaries(&root, "opt/b/bin");
        assert_eq!(
            search(None, &[&empty, &first, &second]),
            Some(first.clone())
        );
        // ATELIER_PG_BIN before everything, and alone: a setting that names a directory
        // without the binaries finds none.
        assert_eq!(search(Some(&second), &[&first]), Some(second));
        assert_eq!(search(Some(&empty), &[&first]), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
