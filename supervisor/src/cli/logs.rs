//! `berth logs [-f] ID`: print the original bytes back from the CRI log,
//! stdout to stdout and stderr to stderr. Reads the log file directly, so
//! `-f` keeps following across a berthd restart; it stops once the exit
//! record exists (written only after all output was logged).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use runtime_core::layout::ContainerPaths;
use runtime_core::logfmt::Stream;
use runtime_core::logread::LogReader;

use super::{connect, Failure, Outcome};
use crate::api::{methods, ContainerInfo, Target};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Container ID, ID prefix or name.
    container: String,
}

pub async fn logs(root: &Path, a: LogsArgs) -> Outcome {
    let mut c = connect(root).await?;
    let info: ContainerInfo = c
        .call(methods::INSPECT, &Target { id: a.container })
        .await?;
    drop(c);
    let follow = a.follow;
    tokio::task::spawn_blocking(move || print_log(&info, follow))
        .await
        .map_err(|e| Failure::new(e.to_string()))?
}

fn print_log(info: &ContainerInfo, follow: bool) -> Outcome {
    let paths = ContainerPaths::from_dir(PathBuf::from(&info.state_dir));
    let mut reader = LogReader::new(Path::new(&info.log_path));
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let broken = std::cell::Cell::new(false);
    let mut emit = |s: Stream, b: &[u8]| {
        let r = match s {
            Stream::Stdout => out.write_all(b),
            Stream::Stderr => err.write_all(b),
        };
        if r.is_err() {
            broken.set(true);
        }
    };
    loop {
        let finished = !follow || paths.exit().exists() || !paths.dir().exists();
        reader
            .read_available(&mut emit)
            .map_err(|e| Failure::new(format!("read {}: {e}", info.log_path)))?;
        if finished || broken.get() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::io::stdout().flush();
    Ok(0)
}
