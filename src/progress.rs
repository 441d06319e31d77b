//! Progress lines for long jobs (generating and loading data).
//!
//! On a terminal the line is redrawn in place a few times a second; when stderr is a file or
//! a pipe (CI, systemd) a plain line is printed every few seconds instead, so logs stay short.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Reports the progress of one phase: rows done, rows per second and, when the total amount of
/// work is known, the percentage and the estimated time left.
pub struct Progress {
    label: String,
    started: Instant,
    last_drawn: Instant,
    interval: Duration,
    terminal: bool,
    quiet: bool,
}

impl Progress {
    /// Starts reporting on a phase called `label`. `quiet` silences everything but errors.
    pub fn new(label: impl Into<String>, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let now = Instant::now();
        Progress {
            label: label.into(),
            started: now,
            last_drawn: now,
            interval: if terminal {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            },
            terminal,
            quiet,
        }
    }

    /// Time since the phase started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Notes that `rows` rows are done and `done` of `total` units of work (bytes, say).
    /// Cheap when nothing needs drawing, so it can be called often.
    pub fn update(&mut self, rows: u64, done: u64, total: u64) {
        if self.quiet || self.last_drawn.elapsed() < self.interval {
            return;
        }
        self.last_drawn = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let mut line = format!(
            "{:<24} {:>12} rows {:>10} rows/s",
            self.label,
            group_thousands(rows),
            group_thousands((rows as f64 / secs) as u64)
        );
        if total > 0 && done > 0 {
            let fraction = (done as f64 / total as f64).min(1.0);
            let eta = secs * (1.0 - fraction) / fraction;
            line.push_str(&format!("  {:>5.1}%  ETA {}", fraction * 100.0, clock(eta)));
        }
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the phase with a final line that says what was done and how long it took.
    pub fn finish(&mut self, summary: &str) {
        if self.quiet {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{:<24} {summary} in {}", self.label, clock(secs));
    }
}

/// `1234567` → `"1,234,567"`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds as `m:ss.s` (or `h:mm:ss` past an hour).
pub fn clock(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let whole = secs as u64;
    if whole >= 3600 {
        format!("{}:{:02}:{:02}", whole / 3600, whole / 60 % 60, whole % 60)
    } else {
        format!("{}:{:04.1}", whole / 60, secs % 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{clock, group_thousands};

    #[test]
    fn groups_and_clocks() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000_011), "1,000,011");
        assert_eq!(clock(75.25), "1:15.2");
        assert_eq!(clock(3725.0), "1:02:05");
    }
}
