//! `berth completion bash|zsh|fish`: a completion script for the shell,
//! generated from the same clap definition the CLI parses with
//! (clap_complete), so it never falls behind a flag. `berth man DIR`
//! (hidden, used by scripts/demo at install) writes the man pages
//! (clap_mangen): berth(1) and one berth-VERB(1) per verb.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, ValueEnum};

use super::{Cli, Failure, Outcome};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete for.
    shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write berth.1 and berth-VERB.1 into.
    dir: PathBuf,
}

pub fn completion(a: CompletionArgs) -> Outcome {
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "berth", &mut out);
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&out).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::new(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(0),
    }
}

pub fn man(a: ManArgs) -> Outcome {
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| Failure::new(format!("create {}: {e}", a.dir.display())))?;
    let mut cmd = Cli::command();
    cmd.build();
    write_page(&a.dir, "berth", cmd.clone())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("berth-{}", sub.get_name());
        write_page(&a.dir, &name, sub.clone().name(name.clone()))?;
    }
    Ok(0)
}

fn write_page(dir: &Path, name: &str, cmd: clap::Command) -> Result<(), Failure> {
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .map_err(|e| Failure::new(format!("render {name}.1: {e}")))?;
    runtime_core::atomic::write(&path, &out)
        .map_err(|e| Failure::new(format!("write {}: {e}", path.display())))
}
