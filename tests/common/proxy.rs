//! A loopback TCP proxy in front of the test PostgreSQL, to make one connection misbehave
//! while others work: it can delay what the server sends, or swallow everything both ways (a
//! network that silently drops packets).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::Host;
use tokio_postgres::Config;

const PASS: u8 = 0;
const BLACK_HOLE: u8 = 1;

pub struct Proxy {
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy to the server `target` names; [`Proxy::config`] connects through it.
    pub async fn start(target: &Config) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let server_port = target.get_ports().first().copied().unwrap_or(5432);
        let host = target.get_hosts().first().cloned().expect("a host");
        let (m, d) = (Arc::clone(&mode), Arc::clone(&delay_ms));
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (m, d, host) = (Arc::clone(&m), Arc::clone(&d), host.clone());
                links.spawn(async move {
                    let (cr, cw) = client.into_split();
                    match host {
                        Host::Unix(dir) => {
                            let path = dir.join(format!(".s.PGSQL.{server_port}"));
                            let Ok(server) = tokio::net::UnixStream::connect(path).await else {
                                return;
                            };
                            let (sr, sw) = server.into_split();
                            link(cr, cw, sr, sw, m, d).await;
                        }
                        Host::Tcp(name) => {
                            let Ok(server) =
                                tokio::net::TcpStream::connect((name.as_str(), server_port)).await
                            else {
                                return;
                            };
                            let (sr, sw) = server.into_split();
                            link(cr, cw, sr, sw, m, d).await;
                        }
                    }
                });
            }
        });
        Proxy {
            mode,
            delay_ms,
            port,
            task,
        }
    }

    /// `target` with its host and port replaced by the proxy's.
    pub fn config(&self, target: &Config) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(target.get_user().unwrap_or("postgres"))
            .dbname(target.get_dbname().unwrap_or("postgres"));
        if let Some(password) = target.get_password() {
            config.password(password);
        }
        config
    }

    /// Swallow everything, both ways, on every connection (new ones included).
    pub fn black_hole(&self) {
        self.mode.store(BLACK_HOLE, Ordering::SeqCst);
    }

    /// Forward everything again.
    pub fn pass(&self) {
        self.mode.store(PASS, Ordering::SeqCst);
    }

    /// Hold each chunk the server sends for `delay` before passing it on.
    pub fn delay_replies(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

async fn link(
    cr: impl AsyncRead + Unpin + Send + 'static,
    cw: impl AsyncWrite + Unpin + Send + 'static,
    sr: impl AsyncRead + Unpin + Send + 'static,
    sw: impl AsyncWrite + Unpin + Send + 'static,
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
) {
    let none = Arc::new(AtomicU64::new(0));
    let up = tokio::spawn(pump(cr, sw, Arc::clone(&mode), none));
    pump(sr, cw, mode, delay_ms).await;
    up.abort();
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if mode.load(Ordering::SeqCst) == BLACK_HOLE {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
