//! systemd's notification protocol (`sd_notify`), for a unit of `Type=notify`: one datagram a
//! message to the socket named by `NOTIFY_SOCKET` — `READY=1` once the instance would answer
//! `/readyz` with 200, `STATUS=…` while it warms up, `STOPPING=1` when it begins to drain, and
//! `WATCHDOG=1` pings while the runtime and the change feed are alive.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A socket to send notifications from. Non-blocking: a receiver that does not read (its
/// queue holds ten datagrams by default) must not block the runtime thread that notifies; a
/// notification it cannot take is dropped.
fn unbound() -> std::io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Where notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// The notifier systemd asked for through the environment, if it did.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|name| {
            let address = socket_address(name.as_encoded_bytes())?;
            Some((unbound().ok()?, address))
        });
        Notifier { socket }
    }

    /// A notifier that sends to the socket at `path` (what systemd would name in
    /// `NOTIFY_SOCKET`).
    pub fn at(path: &std::path::Path) -> std::io::Result<Notifier> {
        let address = std::os::unix::net::SocketAddr::from_pathname(path)?;
        Ok(Notifier {
            socket: Some((unbound()?, address)),
        })
    }

    /// Whether notifications go anywhere.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (lines of `KEY=value`); best effort: systemd not listening is no error
    /// the server could do anything about.
    pub fn notify(&self, state: &str) {
        if let Some((socket, address)) = &self.socket {
            let _ = socket.send_to_addr(state.as_bytes(), address);
        }
    }

    /// How often to ping the watchdog: half the `WatchdogSec=` systemd set, if it set one for
    /// this process.
    pub fn watchdog_interval() -> Option<Duration> {
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.trim() != std::process::id().to_string() {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

/// The socket's address: a path, or (starting with `@`) a name in the abstract namespace.
fn socket_address(name: &[u8]) -> Option<std::os::unix::net::SocketAddr> {
    match name.split_first() {
        Some((b'@', abstract_name)) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name).ok()
        }
        Some(_) => {
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(name));
            std::os::unix::net::SocketAddr::from_pathname(path).ok()
        }
        None => None,
    }
}

use std::os::unix::ffi::OsStrExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_socket_systemd_names() {
        let dir = std::env::temp_dir().join(format!("atelier-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                socket_address(path.as_os_str().as_bytes()).unwrap(),
            )),
        };
        notifier.notify("READY=1\nSTATUS=ready");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ready");
        assert!(socket_address(b"@abstract").is_some());
        assert!(socket_address(b"").is_none());
        Notifier { socket: None }.notify("READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
