//! Signal names as users type them: `9`, `KILL`, `SIGKILL`, `sigterm`.

use std::str::FromStr;

use nix::sys::signal::Signal;

/// Parses a signal number or name.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map(|sig| sig as i32)
            .map_err(|_| format!("invalid signal number {n}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .map(|sig| sig as i32)
        .map_err(|_| format!("unknown signal {s:?}"))
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
    }
}
