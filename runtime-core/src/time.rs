//! Timestamps as RFC 3339 with nanoseconds, the form CRI logs and Docker's
//! inspect output use.

use std::time::SystemTime;

/// Now, formatted as RFC 3339 UTC with nanoseconds.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// Formats a time as RFC 3339 UTC with nanoseconds.
pub fn format_rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}
