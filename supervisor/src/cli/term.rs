//! The local terminal: raw mode for `-t` sessions, restored on every exit
//! path by a guard, and the window size sent to the container's pty.
//! rustix's safe termios calls: no `unsafe` here.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use rustix::termios::{tcgetattr, tcgetwinsize, tcsetattr, OptionalActions, Termios};

/// Puts stdin in raw mode until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Enables raw mode when stdin is a terminal; `None` otherwise.
    pub fn enable() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// Refuses a tty session whose input is not a terminal (`echo x | berth
/// run -it`): a pty never sees that EOF, so the session would hang.
/// Docker's check and message.
pub fn check_input_is_tty() -> Result<(), super::Failure> {
    if std::io::stdin().is_terminal() {
        Ok(())
    } else {
        Err(super::Failure {
            message: "the input device is not a TTY".into(),
            code: 125,
        })
    }
}

/// The terminal size of stdout (or stdin), as rows and columns; a
/// non-terminal just fails with ENOTTY and the next is tried.
pub fn size() -> Option<(u16, u16)> {
    let (stdout, stdin) = (std::io::stdout(), std::io::stdin());
    let found = [stdout.as_fd(), stdin.as_fd()]
        .into_iter()
        .filter_map(|fd| tcgetwinsize(fd).ok())
        .find(|ws| ws.ws_row > 0);
    found.map(|ws| (ws.ws_row, ws.ws_col))
}

/// Parses detach keys like `ctrl-p,ctrl-q` or `ctrl-x,x` into bytes.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    let mut keys = Vec::new();
    for part in spec.split(',') {
        let key = part.trim();
        let lower = key.to_ascii_lowercase();
        let byte = if let Some(c) = lower.strip_prefix("ctrl-") {
            match c.as_bytes() {
                [b @ b'a'..=b'z'] => b - b'a' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => return Err(format!("invalid detach key {key:?}")),
            }
        } else if key.len() == 1 && key.is_ascii() {
            key.as_bytes()[0]
        } else {
            return Err(format!(
                "invalid detach key {key:?}: use a character or ctrl-<char>"
            ));
        };
        keys.push(byte);
    }
    if keys.is_empty() {
        return Err("empty detach keys".into());
    }
    Ok(keys)
}

/// Watches input for the detach sequence, holding back a partial match
/// and releasing it unchanged when the sequence breaks off.
pub struct DetachMatcher {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachMatcher {
    pub fn new(keys: Vec<u8>) -> Self {
        DetachMatcher { keys, matched: 0 }
    }

    /// Feeds input; appends what may go to the container to `out`.
    /// Returns true when the full sequence was typed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return true;
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    self.matched = 0;
                    return true;
                }
            } else {
                out.push(b);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(parse_detach_keys("ctrl-x,x").unwrap(), vec![24, b'x']);
        assert!(parse_detach_keys("ctrl-").unwrap_err().contains("ctrl-"));
        assert!(parse_detach_keys("abc").is_err());
    }

    #[test]
    fn matcher_detaches_and_releases_broken_sequences() {
        let mut m = DetachMatcher::new(vec![16, 17]);
        let mut out = Vec::new();
        assert!(!m.feed(b"ab\x10", &mut out));
        assert_eq!(out, b"ab");
        assert!(!m.feed(b"c", &mut out));
        assert_eq!(out, b"ab\x10c");
        out.clear();
        assert!(!m.feed(b"\x10\x10", &mut out));
        assert_eq!(out, b"\x10");
        assert!(m.feed(b"\x11", &mut out));
    }
}
