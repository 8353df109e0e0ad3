//! Bearer-token auth (the distribution spec's token flow, as Docker Hub
//! and most registries do it): docker-registry configured for token auth,
//! and a token service run by the test on 127.0.0.1 that checks a user's
//! password and issues ES256 JWTs (signed with ring, its certificate made
//! with openssl and trusted by the registry).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::imgutil::{LayerBuilder, Registry, TestImage};
use crate::util::{stderr, Env};

const SERVICE: &str = "berth-test-registry";
const ISSUER: &str = "berth-test-issuer";
const USER: &str = "tester";
const PASSWORD: &str = "berth-secret";

fn b64(data: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| (a << 8) | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let n =
            chunk.iter().fold(0u32, |a, &c| (a << 6) | val(c) as u32) << (6 * (4 - chunk.len()));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The token service: a thread answering `GET /token` on 127.0.0.1.
struct TokenServer {
    addr: String,
    stop: Arc<AtomicBool>,
    /// Tokens issued (a request with the right password).
    issued: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Makes the signing key and certificate in `dir` (token.crt is the
    /// registry's rootcertbundle) and starts serving.
    fn start(dir: &Path) -> TokenServer {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=berth token issuer",
                "-keyout",
                "token.key",
                "-out",
                "token.crt",
            ],
        );
        openssl(
            dir,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "token.key",
                "-outform",
                "DER",
                "-out",
                "token.p8",
            ],
        );
        let pkcs8 = std::fs::read(dir.join("token.p8")).unwrap();
        let pem = std::fs::read_to_string(dir.join("token.crt")).unwrap();
        let der = unb64(
            &pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        );
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &rng,
        )
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicUsize::new(0));
        let (stop2, issued2) = (stop.clone(), issued.clone());
        let x5c = b64(&der, false);
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        serve(conn, &key, &rng, &x5c, &issued2);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        TokenServer {
            addr,
            stop,
            issued,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request: a token for the scopes asked when the basic credentials
/// are right, else 401.
fn serve(
    conn: std::net::TcpStream,
    key: &ring::signature::EcdsaKeyPair,
    rng: &ring::rand::SystemRandom,
    x5c: &str,
    issued: &AtomicUsize,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authorized = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                let value = value.trim();
                if let Some(basic) = value.strip_prefix("Basic ") {
                    authorized = unb64(basic) == format!("{USER}:{PASSWORD}").as_bytes();
                }
            }
        }
    }
    let mut conn = conn;
    if !authorized {
        let _ = conn.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    // scope=repository:NAME:ACTIONS (repeatable), percent-encoded.
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut access = Vec::new();
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("scope=") {
            let v = v
                .replace("%3A", ":")
                .replace("%3a", ":")
                .replace("%2F", "/")
                .replace("%2f", "/")
                .replace("%2C", ",")
                .replace("%2c", ",");
            let parts: Vec<&str> = v.splitn(3, ':').collect();
            if parts.len() == 3 {
                access.push(serde_json::json!({
                    "type": parts[0], "name": parts[1],
                    "actions": parts[2].split(',').collect::<Vec<_>>(),
                }));
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": USER, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", issued.load(Ordering::Relaxed)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&header).unwrap(), true),
        b64(&serde_json::to_vec(&claims).unwrap(), true)
    );
    let sig = key.sign(rng, signing_input.as_bytes()).unwrap();
    let token = format!("{signing_input}.{}", b64(sig.as_ref(), true));
    issued.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::to_vec(
        &serde_json::json!({"token": token, "access_token": token, "expires_in": 300}),
    )
    .unwrap();
    let _ = conn.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let _ = conn.write_all(&body);
}

/// A registry behind a token service: pulls without credentials are
/// refused with the registry's words; `login` gets a token with the
/// right password (and is refused, nothing stored, with a wrong one);
/// then the pull goes through the token flow and the image runs.
#[test]
fn bearer_token_login_and_pull() {
    let Some(env) = Env::new() else { return };
    let tokens = TokenServer::start(env.dir.path());
    let auth = format!(
        "auth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        tokens.addr,
        env.dir.path().join("token.crt").display()
    );
    let reg = Registry::start_with_auth(env.dir.path(), &auth);
    let img = TestImage::new(
        vec![
            LayerBuilder::new().busybox().build(),
            LayerBuilder::new()
                .file("token", 0o644, b"via a token\n")
                .build(),
        ],
        serde_json::json!({"Cmd": ["cat", "/token"], "Env": ["PATH=/bin"]}),
    );
    let layout = env.dir.path().join("layout-token");
    img.write_oci_layout(&layout, None);
    let name = reg.push_as(&layout, "team/token:1", Some(&format!("{USER}:{PASSWORD}")));
    let pushed = tokens.issued.load(Ordering::Relaxed);
    assert!(pushed > 0, "skopeo's push went through the token service");
    let pull = ["pull", "-q", "--insecure-registry", &reg.addr, &name];
    let out = env.berth(&pull);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("401") || stderr(&out).contains("uthoriz"),
        "{}",
        stderr(&out)
    );
    let login = |password: &str| {
        env.berth_input(
            &["login", "-u", USER, "--password-stdin", &reg.addr],
            format!("{password}\n").as_bytes(),
        )
    };
    let out = login("wrong-password");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!("login to {} failed", reg.addr))
            && err.contains("the token service refused"),
        "{err}"
    );
    assert!(!env.root.join("auth.json").exists(), "nothing stored");
    let out = login(PASSWORD);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = tokens.issued.load(Ordering::Relaxed);
    assert!(before > pushed, "login fetched a token");
    env.ok(&pull);
    assert!(
        tokens.issued.load(Ordering::Relaxed) > before,
        "the pull fetched a token"
    );
    assert_eq!(env.ok(&["run", "--rm", &name]), "via a token\n");
}
