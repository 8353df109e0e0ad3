//! berth: the command-line client of berthd. See `berth_supervisor::cli`.

fn main() -> std::process::ExitCode {
    berth_supervisor::cli::main()
}
