//! `berth top CONTAINER`: its processes (PID, USER, TIME, COMMAND).

use std::path::Path;

use clap::Args;

use super::{connect, say, Outcome};
use crate::api::{methods, Target, TopResult};

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Container ID, ID prefix or name.
    container: String,
}

pub async fn top(root: &Path, a: TopArgs) -> Outcome {
    let mut c = connect(root).await?;
    let r: TopResult = c.call(methods::TOP, &Target { id: a.container }).await?;
    for line in table(&r) {
        say(&line)?;
    }
    Ok(0)
}

/// Columns padded to their widest cell; the last one (COMMAND) not.
fn table(r: &TopResult) -> Vec<String> {
    let rows: Vec<&Vec<String>> = std::iter::once(&r.titles).chain(&r.processes).collect();
    let cols = r.titles.len();
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|row| row.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(i, cell)| {
                    if i + 1 == cols {
                        cell.clone()
                    } else {
                        format!("{cell:<w$}", w = widths[i])
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let r = TopResult {
            titles: ["PID", "USER", "TIME", "COMMAND"]
                .map(String::from)
                .to_vec(),
            processes: vec![["12345", "root", "00:00:01", "sleep 100"]
                .map(String::from)
                .to_vec()],
        };
        assert_eq!(
            table(&r),
            [
                "PID    USER  TIME      COMMAND",
                "12345  root  00:00:01  sleep 100"
            ]
        );
    }
}
