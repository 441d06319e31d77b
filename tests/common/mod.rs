//! Test support: one PostgreSQL server per test binary (a private cluster, or the server named
//! by `DATABASE_URL`) and a fresh database for each test, cloned from a migrated template so
//! tests run in parallel without seeing each other's rows.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use atelier::pg::cluster::{ClusterOptions, PrivateCluster};
use atelier::pg::{self, migrate::migrate};
use tokio_postgres::{Client, Config};

struct Server {
    admin: Config,
    template: String,
    _cluster: Option<PrivateCluster>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        // The test's own runtime cannot block on setup; use a thread with its own.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(start_server())
        })
        .join()
        .expect("test database setup panicked")
    })
}

async fn start_server() -> Server {
    let (admin, cluster) = match std::env::var("DATABASE_URL") {
        Ok(url) => (pg::parse_url(&url).expect("DATABASE_URL"), None),
        Err(_) => {
            let cluster = PrivateCluster::start(&ClusterOptions {
                shared_buffers: "128MB".into(),
                maintenance_work_mem: "64MB".into(),
                max_connections: 200,
            })
            .expect("start a private PostgreSQL cluster");
            (cluster.config("postgres"), Some(cluster))
        }
    };
    let template = format!("atelier_template_{}", std::process::id());
    let client = pg::connect(&admin)
        .await
        .expect("connect to the test server");
    client
        .batch_execute(&format!("CREATE DATABASE {template}"))
        .await
        .expect("create the template database");
    let mut config = admin.clone();
    config.dbname(&template);
    let mut template_client = pg::connect(&config).await.expect("connect to the template");
    migrate(&mut template_client)
        .await
        .expect("migrate the template");
    Server {
        admin,
        template,
        _cluster: cluster,
    }
}

/// A database of its own for one test.
pub struct TestDb {
    pub config: Config,
    pub name: String,
}

impl TestDb {
    pub async fn client(&self) -> Client {
        pg::connect(&self.config)
            .await
            .expect("connect to the test database")
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

async fn create_database(template: &str) -> TestDb {
    let server = server();
    let name = format!(
        "atelier_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let admin = pg::connect(&server.admin)
        .await
        .expect("connect to the test server");
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .await
        .expect("create a test database");
    let mut config = server.admin.clone();
    config.dbname(&name);
    TestDb { config, name }
}

/// A fresh database with the schema migrated and no rows.
pub async fn migrated_database() -> TestDb {
    create_database(&server().template).await
}

/// A fresh database without the schema.
pub async fn empty_database() -> TestDb {
    create_database("template0").await
}

/// The hand-made sample data set in ../shared.
pub fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/sample")
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "atelier-test-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a data set directory, so a test can break one file of it.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy file");
    }
}

/// Rows in `table`.
pub async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count rows")
        .get(0)
}
