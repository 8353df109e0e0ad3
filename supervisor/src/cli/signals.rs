//! Signal names as users type them: `9`, `KILL`, `SIGKILL`, `sigterm`,
//! and the real-time ones (`37`, `RTMIN+3`, `SIGRTMAX-1`), as Docker.

use std::str::FromStr;

use nix::sys::signal::Signal;

/// Parses a signal number or name.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if let Ok(n) = s.parse::<i32>() {
        if Signal::try_from(n).is_ok() || (rtmin..=rtmax).contains(&n) {
            return Ok(n);
        }
        return Err(format!("invalid signal number {n}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rt) = real_time(name, rtmin, rtmax) {
        return rt.ok_or_else(|| {
            format!("invalid signal {s:?}: real-time signals are RTMIN..RTMAX ({rtmin}..{rtmax})")
        });
    }
    Signal::from_str(&format!("SIG{name}"))
        .map(|sig| sig as i32)
        .map_err(|_| format!("unknown signal {s:?}"))
}

/// `RTMIN`, `RTMIN+N`, `RTMAX`, `RTMAX-N`: `None` when `name` is not of
/// that form, `Some(None)` when it is but out of range.
fn real_time(name: &str, rtmin: i32, rtmax: i32) -> Option<Option<i32>> {
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        match rest {
            "" => rtmin,
            _ => rtmin + rest.strip_prefix('+')?.parse::<i32>().ok()?,
        }
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        match rest {
            "" => rtmax,
            _ => rtmax - rest.strip_prefix('-')?.parse::<i32>().ok()?,
        }
    } else {
        return None;
    };
    Some((rtmin..=rtmax).contains(&n).then_some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_numbers_and_names() {
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("KILL"), Ok(9));
        assert_eq!(parse_signal("SIGKILL"), Ok(9));
        assert_eq!(parse_signal("term"), Ok(15));
        assert!(parse_signal("NOPE").unwrap_err().contains("NOPE"));
        assert!(parse_signal("99").unwrap_err().contains("99"));
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn accepts_real_time_signals() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        assert_eq!(parse_signal("37"), Ok(37));
        assert_eq!(parse_signal("RTMIN"), Ok(min));
        assert_eq!(parse_signal("RTMIN+3"), Ok(min + 3));
        assert_eq!(parse_signal("sigrtmax-1"), Ok(max - 1));
        assert!(parse_signal("RTMIN+99").unwrap_err().contains("RTMIN+99"));
        assert!(parse_signal("RTMINX").is_err());
    }
}
