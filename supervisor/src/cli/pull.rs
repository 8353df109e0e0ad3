//! `berth pull REF`, `berth login`, `berth logout`: registry access. The
//! pull runs in the CLI against the shared store (its flocks keep berthd
//! and other pulls safe), so progress comes straight from the pipeline.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;

use berth_image::auth::{self, Credential};
use berth_image::digest::Digest;
use berth_image::pull::{self, Progress, PullOptions};
use berth_image::reference::Reference;

use super::images::{human_size, image_failure, open_store};
use super::{say, Failure, Outcome};

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The image: [REGISTRY/]REPOSITORY[:TAG|@DIGEST].
    reference: String,
    /// Speak plain HTTP to this registry (host[:port]); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Print only the reference at the end.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry (host[:port]).
    server: String,
    #[arg(short, long)]
    username: String,
    /// The password (prefer --password-stdin: a command line is visible to others).
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry (host[:port]).
    server: String,
}

/// Progress on a terminal: one status line on stderr, redrawn at most
/// ten times a second, and a line per finished layer.
struct TermProgress {
    state: Mutex<State>,
}

struct State {
    layers: BTreeMap<String, (u64, u64)>,
    last: Option<Instant>,
}

impl TermProgress {
    fn line(&self, st: &mut State, force: bool, done: Option<String>) {
        if !force && st.last.is_some_and(|t| t.elapsed().as_millis() < 100) {
            return;
        }
        st.last = Some(Instant::now());
        let (got, total) = st
            .layers
            .values()
            .fold((0, 0), |(g, t), (a, b)| (g + a, t + b));
        let finished = st.layers.values().filter(|(a, b)| a >= b).count();
        let mut err = std::io::stderr().lock();
        if let Some(d) = done {
            let _ = write!(err, "\r\x1b[K{d}\n");
        }
        let _ = write!(
            err,
            "\r\x1b[Klayers {finished}/{}  {} / {}",
            st.layers.len(),
            human_size(got),
            human_size(total)
        );
        let _ = err.flush();
    }
}

impl Progress for TermProgress {
    fn layer_start(&self, d: &Digest, size: u64) {
        if let Ok(mut st) = self.state.lock() {
            st.layers.insert(d.short().to_string(), (0, size));
            self.line(&mut st, true, None);
        }
    }
    fn layer_bytes(&self, d: &Digest, n: u64) {
        if let Ok(mut st) = self.state.lock() {
            if let Some(l) = st.layers.get_mut(d.short()) {
                l.0 += n;
            }
            self.line(&mut st, false, None);
        }
    }
    fn layer_exists(&self, d: &Digest) {
        if let Ok(mut st) = self.state.lock() {
            self.line(
                &mut st,
                true,
                Some(format!("{}: Already exists", d.short())),
            );
        }
    }
    fn layer_done(&self, d: &Digest) {
        if let Ok(mut st) = self.state.lock() {
            if let Some(l) = st.layers.get_mut(d.short()) {
                l.0 = l.1;
            }
            self.line(&mut st, true, Some(format!("{}: Pull complete", d.short())));
        }
    }
}

pub async fn pull(data_root: &Path, a: PullArgs) -> Outcome {
    let store = open_store(data_root)?;
    let r = Reference::parse(&a.reference).map_err(image_failure)?;
    let credential = auth::lookup(data_root, &r.domain).map_err(image_failure)?;
    let ca_certs = berth_image::certs::for_registry(data_root, &r.domain).map_err(image_failure)?;
    let term = (!a.quiet && std::io::stderr().is_terminal()).then(|| {
        Arc::new(TermProgress {
            state: Mutex::new(State {
                layers: BTreeMap::new(),
                last: None,
            }),
        })
    });
    let opts = PullOptions {
        insecure_registries: a.insecure_registries.clone(),
        credential,
        ca_certs,
        progress: term.clone().map(|t| t as Arc<dyn Progress>),
    };
    let result = pull::pull(&store, &a.reference, opts).await;
    if term.is_some() {
        eprint!("\r\x1b[K");
    }
    let pulled = result.map_err(image_failure)?;
    if !a.quiet {
        say(&format!("Digest: {}", pulled.digest))?;
        say(&format!(
            "Status: {} for {}",
            if pulled.downloaded {
                "Downloaded newer image"
            } else {
                "Image is up to date"
            },
            r
        ))?;
    }
    say(&pulled.reference)?;
    Ok(0)
}

/// Tries the credentials on the registry, then stores them: a wrong
/// password is an error naming the registry and nothing is stored.
pub async fn login(data_root: &Path, a: LoginArgs) -> Outcome {
    let password = match (a.password, a.password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_line(&mut s)
                .map_err(|e| Failure::new(format!("read the password from stdin: {e}")))?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            return Err(Failure {
                message: "give the password with --password-stdin (or -p)".into(),
                code: 125,
            })
        }
    };
    if password.is_empty() {
        return Err(Failure {
            message: "the password is empty".into(),
            code: 125,
        });
    }
    let cred = Credential {
        username: a.username,
        password,
    };
    let ca_certs = berth_image::certs::for_registry(data_root, &a.server).map_err(image_failure)?;
    berth_image::login::verify(&a.server, &cred, &ca_certs)
        .await
        .map_err(image_failure)?;
    auth::store(data_root, &a.server, Some(cred)).map_err(image_failure)?;
    say("Login Succeeded")?;
    Ok(0)
}

pub fn logout(data_root: &Path, a: LogoutArgs) -> Outcome {
    auth::store(data_root, &a.server, None).map_err(image_failure)?;
    say(&format!("Removing login credentials for {}", a.server))?;
    Ok(0)
}
