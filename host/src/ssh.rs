//! SSH connections over russh: strict known_hosts checking, key-file / agent /
//! certificate authentication, ProxyJump chains, command execution, SFTP
//! sessions and a per-label connection pool.
//!
//! Design notes and limits:
//! * Host keys are never accepted automatically. The server key must be listed in
//!   one of `HostParams::known_hosts_files` under `host` (port 22) or `[host]:port`
//!   (or under `HostKeyAlias`). Plain entries may use `*`/`?` wildcards, `!negation`
//!   and comma lists; hashed `|1|` entries are matched through russh. `@revoked`
//!   lines (with plain host patterns) reject a key; `@cert-authority` lines are
//!   ignored because host certificates are not requested from the server.
//! * The host-key algorithms are ordered so that types already recorded in
//!   known_hosts for the host are negotiated first (as OpenSSH does); a server
//!   whose only recorded key has a type the server no longer offers is reported
//!   as unknown.
//! * Authentication is public-key only (no password / keyboard-interactive / 2FA).
//!   Order: agent identities whose public key matches a configured identity file,
//!   then the remaining agent identities (skipped when `IdentitiesOnly yes`), then
//!   the unencrypted identity files themselves. Passphrase-protected key files are
//!   only usable through the agent; they are reported in the `AuthFailed` message.
//!   OpenSSH user certificates (`<identity>-cert.pub`, `CertificateFile`, or agent
//!   certificate identities) are tried before the bare key.
//! * `ProxyCommand` is refused (`SshError::Config`). For `ProxyJump a,b` the first
//!   hop honours its own `ProxyJump` from the ssh config (as OpenSSH does), later
//!   hops are reached through the previous one. Chains deeper than
//!   [`MAX_JUMP_DEPTH`] are rejected as a probable loop.
//! * One [`Connection`] multiplexes many channels. Concurrent `exec` calls are
//!   limited by a per-connection semaphore (`ConnectOptions::max_sessions`, default 8)
//!   because OpenSSH's `MaxSessions` (default 10) refuses more open session channels.
//!   SFTP sessions are not counted in that limit.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, Certificate, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, MethodKind, Sig, client};
use tokio::sync::Semaphore;

use crate::ssh_config::{self, HostParams};

/// ProxyJump chains nested deeper than this are treated as a configuration loop.
pub const MAX_JUMP_DEPTH: usize = 8;

/// SFTP per-request timeout (seconds); russh-sftp's default is 10 s.
const SFTP_REQUEST_TIMEOUT_SECS: u64 = 30;

/// Errors from the SSH layer. Messages are meant for an operator and say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    /// The server's host key is not in any known_hosts file. `fingerprint` is
    /// `<algorithm> SHA256:<base64>`; `known_hosts` lists the files checked,
    /// separated by ", ", the first being where new keys belong.
    #[error("{}", unknown_host_key_message(.host, .port, .fingerprint, .known_hosts))]
    HostKeyUnknown {
        host: String,
        port: u16,
        fingerprint: String,
        known_hosts: String,
    },
    /// known_hosts records a different key of the same type for this host.
    #[error("{}", mismatch_message(.host, .port, .fingerprint, .known_hosts, .line))]
    HostKeyMismatch {
        host: String,
        port: u16,
        fingerprint: String,
        known_hosts: String,
        line: usize,
    },
    /// The server's key is marked `@revoked` in known_hosts.
    #[error(
        "REFUSING TO CONNECT to {host} port {port}: its host key {fingerprint} is marked @revoked \
         in {known_hosts} line {line}. Ask the cluster administrators for the current host key."
    )]
    HostKeyRevoked {
        host: String,
        port: u16,
        fingerprint: String,
        known_hosts: String,
        line: usize,
    },
    /// Authentication failed; the message lists user@host and every identity tried.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("SSH connection error: {0}")]
    Connection(String),
    /// The remote side reported an error (SFTP status, refused channel, ...).
    #[error("remote error: {0}")]
    Remote(String),
    #[error("local I/O error: {0}")]
    LocalIo(String),
    #[error("SSH configuration error: {0}")]
    Config(String),
    /// The host's policy refused the request on what the cluster showed
    /// (a remote path that resolves outside remoteRoot, a symlink where a
    /// file is written, a device or FIFO as a source, a download over the
    /// operator's size cap); nothing was read or written through it.
    #[error("{0}")]
    Denied(String),
}

impl SshError {
    /// The last attempt's error, repeated while the pool backs off.
    fn not_retried_for(self, wait: Duration, failures: u32) -> SshError {
        let note = format!(
            " (not retried yet: {failures} failed attempt(s) in a row; the next is allowed in {:.1} s)",
            wait.as_secs_f64()
        );
        match self {
            SshError::AuthFailed(m) => SshError::AuthFailed(m + &note),
            SshError::Timeout(m) => SshError::Timeout(m + &note),
            SshError::Connection(m) => SshError::Connection(m + &note),
            SshError::Remote(m) => SshError::Remote(m + &note),
            SshError::LocalIo(m) => SshError::LocalIo(m + &note),
            SshError::Config(m) => SshError::Config(m + &note),
            // Host key errors keep their exact form (the guest and the
            // operator act on them); retrying them soon would not help anyway.
            other => other,
        }
    }
}

fn unknown_host_key_message(
    host: &str,
    port: &u16,
    fingerprint: &str,
    known_hosts: &str,
) -> String {
    let first = known_hosts
        .split(", ")
        .next()
        .unwrap_or("~/.ssh/known_hosts");
    let (scan_port, ssh_port) = if *port == 22 {
        (String::new(), String::new())
    } else {
        (format!("-p {port} "), format!("-p {port} "))
    };
    format!(
        "the host key of {host} port {port} is not known (server offered {fingerprint}; checked: {known_hosts}). \
         Host keys are never accepted automatically. Verify this fingerprint with the cluster's \
         administrators or documentation, then record the key: either run `ssh {ssh_port}{host}` once and \
         answer yes after comparing the fingerprint, or run `ssh-keyscan {scan_port}{host} >> {first}` \
         and compare with `ssh-keygen -lf {first}`."
    )
}

fn mismatch_message(
    host: &str,
    port: &u16,
    fingerprint: &str,
    known_hosts: &str,
    line: &usize,
) -> String {
    let entry = if *port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    format!(
        "HOST KEY MISMATCH for {host} port {port}: the server presented {fingerprint}, but {known_hosts} \
         line {line} records a different key for it. Someone could be intercepting the connection \
         (man-in-the-middle), or the server was reinstalled. Do not continue until the cluster's \
         administrators confirm the new key; then remove the old entry with \
         `ssh-keygen -R '{entry}' -f {known_hosts}` and record the new key."
    )
}

impl From<russh::Error> for SshError {
    fn from(e: russh::Error) -> Self {
        match e {
            russh::Error::KeepaliveTimeout => {
                SshError::Connection("the server stopped answering keepalives".into())
            }
            russh::Error::InactivityTimeout => {
                SshError::Timeout("connection inactive for too long".into())
            }
            other => SshError::Connection(other.to_string()),
        }
    }
}

impl From<ssh_config::SshConfigError> for SshError {
    fn from(e: ssh_config::SshConfigError) -> Self {
        SshError::Config(e.to_string())
    }
}

/// Connection settings not taken from the ssh config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Bound for the whole connect (TCP, key exchange, authentication and all
    /// ProxyJump hops). `ConnectTimeout` from the ssh config overrides it.
    pub connect_timeout: Duration,
    /// Send a keepalive after this long without traffic from the server.
    /// `ServerAliveInterval` from the ssh config overrides it.
    pub keepalive_interval: Option<Duration>,
    /// Close the connection after this many unanswered keepalives
    /// (`ServerAliveCountMax` overrides it when `ServerAliveInterval` is set).
    pub keepalive_max: usize,
    /// Maximum concurrent `exec` channels per connection (OpenSSH's `MaxSessions`
    /// defaults to 10, so stay below it). Further calls wait for a free slot.
    pub max_sessions: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(15),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            max_sessions: 8,
        }
    }
}

/// Output of a remote command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecResult {
    /// Exit status, if the server reported one.
    pub exit_code: Option<i32>,
    /// Signal name (e.g. `KILL`, `SEGV`) if the command was killed by a signal.
    pub exit_signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// More than `output_cap` bytes were produced on stdout; the rest was discarded.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// POSIX-shell quoting of one word: safe words stay as they are, everything else
/// is single-quoted with embedded `'` written as `'"'"'`.
pub fn quote_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./=:,%@+-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\"'\"'"))
    }
}

/// Build a shell command line from a program and its arguments, quoting every word.
/// The program word is also quoted when it contains `=` (the shell would otherwise
/// read it as a variable assignment).
pub fn quote_command(program: &str, args: &[String]) -> String {
    let mut out = if program.contains('=') {
        format!("'{}'", program.replace('\'', "'\"'\"'"))
    } else {
        quote_word(program)
    };
    for a in args {
        out.push(' ');
        out.push_str(&quote_word(a));
    }
    out
}

// ---------------------------------------------------------------------------
// known_hosts
// ---------------------------------------------------------------------------

/// What a known_hosts lookup is keyed on.
#[derive(Debug, Clone)]
struct HostKeyLookup {
    /// Name shown in messages (the HostKeyAlias or the host name).
    display_host: String,
    /// Port shown in messages.
    port: u16,
    /// Name matched against known_hosts patterns: `host`, `[host]:port`, or the alias.
    pattern_name: String,
    /// (host, port) passed to russh for hashed entries (port 22 = no brackets).
    russh_host: String,
    russh_port: u16,
}

impl HostKeyLookup {
    fn new(params: &HostParams) -> Self {
        match &params.host_key_alias {
            Some(alias) => HostKeyLookup {
                display_host: alias.clone(),
                port: params.port,
                pattern_name: alias.clone(),
                russh_host: alias.clone(),
                russh_port: 22,
            },
            None => HostKeyLookup {
                display_host: params.hostname.clone(),
                port: params.port,
                pattern_name: if params.port == 22 {
                    params.hostname.clone()
                } else {
                    format!("[{}]:{}", params.hostname, params.port)
                },
                russh_host: params.hostname.clone(),
                russh_port: params.port,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone)]
struct KnownEntry {
    file: PathBuf,
    line: usize,
    marker: Marker,
    key: PublicKey,
}

/// All entries of `files` whose host patterns match `lookup`.
fn matching_known_entries(lookup: &HostKeyLookup, files: &[PathBuf]) -> Vec<KnownEntry> {
    let mut out = Vec::new();
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        // Hashed (`|1|salt|hash`) entries are matched by russh, which numbers only
        // lines that do not start with '#'. Map its numbers back to real lines.
        let russh_lines: Vec<usize> = russh::keys::known_hosts::known_host_keys_path(
            &lookup.russh_host,
            lookup.russh_port,
            file,
        )
        .map(|v| v.into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
        let mut russh_no = 0usize;
        for (idx, raw) in text.lines().enumerate() {
            let real_no = idx + 1;
            let counted = !raw.starts_with('#');
            if counted {
                russh_no += 1;
            }
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let Some(mut first) = fields.next() else {
                continue;
            };
            let marker = match first {
                "@revoked" => Marker::Revoked,
                "@cert-authority" => Marker::CertAuthority,
                m if m.starts_with('@') => continue, // unknown marker: ignore the line
                _ => Marker::None,
            };
            if marker != Marker::None {
                match fields.next() {
                    Some(f) => first = f,
                    None => continue,
                }
            }
            let patterns = first;
            let (Some(_keytype), Some(b64)) = (fields.next(), fields.next()) else {
                continue;
            };
            let matched = if patterns.starts_with("|1|") {
                counted && marker == Marker::None && russh_lines.contains(&russh_no)
            } else {
                let list: Vec<&str> = patterns.split(',').filter(|p| !p.is_empty()).collect();
                ssh_config::pattern_list_match(&list, &lookup.pattern_name)
            };
            if !matched {
                continue;
            }
            let Ok(key) = russh::keys::parse_public_key_base64(b64) else {
                continue;
            };
            out.push(KnownEntry {
                file: file.clone(),
                line: real_no,
                marker,
                key,
            });
        }
    }
    out
}

#[derive(Debug)]
enum HostKeyVerdict {
    Trusted,
    Revoked { file: PathBuf, line: usize },
    Changed { file: PathBuf, line: usize },
    Unknown,
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

fn verify_host_key(lookup: &HostKeyLookup, key: &PublicKey, files: &[PathBuf]) -> HostKeyVerdict {
    let entries = matching_known_entries(lookup, files);
    if let Some(e) = entries
        .iter()
        .find(|e| e.marker == Marker::Revoked && same_key(&e.key, key))
    {
        return HostKeyVerdict::Revoked {
            file: e.file.clone(),
            line: e.line,
        };
    }
    let plain = || entries.iter().filter(|e| e.marker == Marker::None);
    if plain().any(|e| same_key(&e.key, key)) {
        return HostKeyVerdict::Trusted;
    }
    if let Some(e) = plain().find(|e| e.key.algorithm() == key.algorithm()) {
        return HostKeyVerdict::Changed {
            file: e.file.clone(),
            line: e.line,
        };
    }
    HostKeyVerdict::Unknown
}

fn fingerprint(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256))
}

fn join_paths(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return "(no known_hosts files configured)".into();
    }
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cipher preference: AES-256-GCM first where the CPU has AES instructions
/// (ring then encrypts several times faster than ChaCha20-Poly1305, and
/// OpenSSH's sshd decrypts it with AES-NI too: both ends of a large transfer
/// cost less CPU), else russh's default order (ChaCha20-Poly1305 first). The
/// client's order decides among the ciphers both sides offer (RFC 4253).
fn cipher_order() -> Vec<russh::cipher::Name> {
    let default = russh::Preferred::default().cipher.to_vec();
    if !aes_in_hardware() {
        return default;
    }
    let (mut first, rest): (Vec<_>, Vec<_>) = default
        .into_iter()
        .partition(|c| *c == russh::cipher::AES_256_GCM);
    first.extend(rest);
    first
}

fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Algorithm preference: host-key types recorded for this host first; the
/// cipher order of [`cipher_order`].
fn preferred_algorithms(lookup: &HostKeyLookup, files: &[PathBuf]) -> russh::Preferred {
    let mut pref = russh::Preferred {
        cipher: Cow::Owned(cipher_order()),
        ..russh::Preferred::default()
    };
    let known: Vec<Algorithm> = matching_known_entries(lookup, files)
        .into_iter()
        .filter(|e| e.marker == Marker::None)
        .map(|e| e.key.algorithm())
        .collect();
    if known.is_empty() {
        return pref;
    }
    let is_rsa = |a: &Algorithm| matches!(a, Algorithm::Rsa { .. });
    let family = |a: &Algorithm, b: &Algorithm| (is_rsa(a) && is_rsa(b)) || a == b;
    let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) = pref
        .key
        .iter()
        .cloned()
        .partition(|a| known.iter().any(|k| family(k, a)));
    first.extend(rest);
    pref.key = Cow::Owned(first);
    pref
}

struct ClientHandler {
    lookup: HostKeyLookup,
    known_hosts: Vec<PathBuf>,
}

impl client::Handler for ClientHandler {
    type Error = SshError;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Host certificates are never requested; if one arrives anyway, its plain key
        // is checked (OpenSSH also falls back to the plain key).
        let key = server_public_key.public_key();
        let host = self.lookup.display_host.clone();
        let port = self.lookup.port;
        match verify_host_key(&self.lookup, &key, &self.known_hosts) {
            HostKeyVerdict::Trusted => Ok(true),
            HostKeyVerdict::Revoked { file, line } => Err(SshError::HostKeyRevoked {
                host,
                port,
                fingerprint: fingerprint(&key),
                known_hosts: file.display().to_string(),
                line,
            }),
            HostKeyVerdict::Changed { file, line } => Err(SshError::HostKeyMismatch {
                host,
                port,
                fingerprint: fingerprint(&key),
                known_hosts: file.display().to_string(),
                line,
            }),
            HostKeyVerdict::Unknown => Err(SshError::HostKeyUnknown {
                host,
                port,
                fingerprint: fingerprint(&key),
                known_hosts: join_paths(&self.known_hosts),
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

struct FileIdentity {
    path: PathBuf,
    key: Option<Arc<PrivateKey>>,
    public: Option<PublicKey>,
    certs: Vec<Certificate>,
}

fn load_identities(params: &HostParams, log: &mut Vec<String>) -> Vec<FileIdentity> {
    let mut extra_certs: Vec<Certificate> = Vec::new();
    for p in &params.certificate_files {
        match russh::keys::load_openssh_certificate(p) {
            Ok(c) => extra_certs.push(c),
            Err(e) => log.push(format!("certificate {}: unreadable ({e})", p.display())),
        }
    }
    let mut out = Vec::new();
    for path in &params.identity_files {
        if !path.exists() {
            log.push(format!("{}: not found", path.display()));
            continue;
        }
        let (key, public) = match russh::keys::load_secret_key(path, None) {
            Ok(k) => {
                let public = k.public_key().clone();
                (Some(Arc::new(k)), Some(public))
            }
            Err(russh::keys::Error::KeyIsEncrypted) => {
                let pub_path = append_to_path(path, ".pub");
                let public = russh::keys::load_public_key(&pub_path).ok();
                log.push(format!(
                    "{}: passphrase-protected, only usable through ssh-agent (run `ssh-add {}`)",
                    path.display(),
                    path.display()
                ));
                (None, public)
            }
            Err(e) => {
                log.push(format!("{}: unreadable ({e})", path.display()));
                (None, None)
            }
        };
        let mut certs = Vec::new();
        if let Some(public) = &public {
            let cert_path = append_to_path(path, "-cert.pub");
            if cert_path.exists()
                && let Ok(c) = russh::keys::load_openssh_certificate(&cert_path)
            {
                certs.push(c);
            }
            for c in &extra_certs {
                if c.public_key() == public.key_data() && !certs.contains(c) {
                    certs.push(c.clone());
                }
            }
        }
        out.push(FileIdentity {
            path: path.clone(),
            key,
            public,
            certs,
        });
    }
    out
}

fn append_to_path(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn methods_list(methods: &[MethodKind]) -> String {
    let names: Vec<&str> = methods.iter().map(<&str>::from).collect();
    if names.is_empty() {
        "none advertised".into()
    } else {
        names.join(",")
    }
}

enum Attempt {
    Success,
    Rejected,
    Stop(SshError),
}

struct Authenticator<'a> {
    handle: &'a mut client::Handle<ClientHandler>,
    params: &'a HostParams,
    log: Vec<String>,
    rsa_hash: Option<Option<HashAlg>>,
}

impl Authenticator<'_> {
    fn target(&self) -> String {
        self.params.display_target()
    }

    async fn rsa_hash(&mut self) -> Option<HashAlg> {
        if let Some(h) = self.rsa_hash {
            return h;
        }
        // None from the server (no server-sig-algs) means only legacy ssh-rsa works.
        let h = self
            .handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten();
        self.rsa_hash = Some(h);
        h
    }

    fn outcome(&mut self, what: String, r: Result<client::AuthResult, String>) -> Attempt {
        match r {
            Ok(client::AuthResult::Success) => Attempt::Success,
            Ok(client::AuthResult::Failure {
                remaining_methods,
                partial_success,
            }) => {
                if partial_success {
                    return Attempt::Stop(SshError::AuthFailed(format!(
                        "{}: {what} was accepted but the server requires further authentication \
                         ({}), e.g. a second factor; only public-key authentication is supported",
                        self.target(),
                        methods_list(&remaining_methods)
                    )));
                }
                self.log.push(format!("{what}: rejected"));
                if self.handle.is_closed() {
                    return Attempt::Stop(self.failure("the server closed the connection (too many attempts? see its MaxAuthTries)"));
                }
                if !remaining_methods.is_empty()
                    && !remaining_methods.contains(&MethodKind::PublicKey)
                {
                    let m = methods_list(&remaining_methods);
                    return Attempt::Stop(self.failure(&format!(
                        "the server does not accept public keys for this user (allowed: {m})"
                    )));
                }
                Attempt::Rejected
            }
            Err(e) => {
                self.log.push(format!("{what}: error ({e})"));
                if self.handle.is_closed() {
                    return Attempt::Stop(self.failure("the server closed the connection"));
                }
                Attempt::Rejected
            }
        }
    }

    fn failure(&self, reason: &str) -> SshError {
        let tried = if self.log.is_empty() {
            "no identities available".to_string()
        } else {
            self.log.join("; ")
        };
        SshError::AuthFailed(format!(
            "{} refused public-key login: {reason}. Tried: {tried}. Make sure one of these public keys \
             is in ~/.ssh/authorized_keys of {} on the server, that IdentityFile/User in the ssh config \
             are right, and load passphrase-protected keys into ssh-agent with ssh-add.",
            self.target(),
            self.params.user
        ))
    }

    async fn try_agent(
        &mut self,
        agent: &mut AgentClient<tokio::net::UnixStream>,
        id: &AgentIdentity,
    ) -> Attempt {
        let user = self.params.user.clone();
        let comment = id.comment().to_string();
        match id {
            AgentIdentity::PublicKey { key, .. } => {
                let hash = if key.algorithm().is_rsa() {
                    self.rsa_hash().await
                } else {
                    None
                };
                let what = format!("agent key {} ({comment})", key.fingerprint(HashAlg::Sha256));
                let r = self
                    .handle
                    .authenticate_publickey_with(user, key.clone(), hash, agent)
                    .await
                    .map_err(|e| e.to_string());
                self.outcome(what, r)
            }
            AgentIdentity::Certificate { certificate, .. } => {
                let is_rsa = certificate.algorithm().is_rsa();
                let hash = if is_rsa { self.rsa_hash().await } else { None };
                let what = format!("agent certificate {:?} ({comment})", certificate.key_id());
                let r = self
                    .handle
                    .authenticate_certificate_with(user, certificate.clone(), hash, agent)
                    .await
                    .map_err(|e| e.to_string());
                self.outcome(what, r)
            }
        }
    }

    /// Certificates for this key first, then (unless `plain_tried`) the bare key.
    async fn try_file(
        &mut self,
        id: &FileIdentity,
        key: &Arc<PrivateKey>,
        plain_tried: bool,
    ) -> Attempt {
        let user = self.params.user.clone();
        for cert in &id.certs {
            let what = format!("{} with certificate {:?}", id.path.display(), cert.key_id());
            let r = self
                .handle
                .authenticate_openssh_cert(user.clone(), key.clone(), cert.clone())
                .await
                .map_err(|e| e.to_string());
            match self.outcome(what, r) {
                Attempt::Rejected => {}
                other => return other,
            }
        }
        if plain_tried {
            return Attempt::Rejected;
        }
        let hash = if key.algorithm().is_rsa() {
            self.rsa_hash().await
        } else {
            None
        };
        let what = format!(
            "{} ({})",
            id.path.display(),
            key.public_key().fingerprint(HashAlg::Sha256)
        );
        let r = self
            .handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await
            .map_err(|e| e.to_string());
        self.outcome(what, r)
    }

    async fn run(&mut self) -> Result<(), SshError> {
        let params = self.params;
        let files = load_identities(params, &mut self.log);

        let mut agent: Option<AgentClient<tokio::net::UnixStream>> = None;
        let mut agent_ids: Vec<AgentIdentity> = Vec::new();
        match (&params.identity_agent, params.use_agent) {
            (Some(sock), true) => match AgentClient::connect_uds(sock).await {
                Ok(mut a) => match a.request_identities().await {
                    Ok(ids) => {
                        if ids.is_empty() {
                            self.log
                                .push(format!("ssh-agent at {}: holds no keys", sock.display()));
                        }
                        agent_ids = ids;
                        agent = Some(a);
                    }
                    Err(e) => self.log.push(format!(
                        "ssh-agent at {}: error listing keys ({e})",
                        sock.display()
                    )),
                },
                Err(e) => self.log.push(format!(
                    "ssh-agent at {}: unreachable ({e})",
                    sock.display()
                )),
            },
            (None, true) => {}
            (_, false) => {}
        }

        let file_publics: Vec<&PublicKey> =
            files.iter().filter_map(|f| f.public.as_ref()).collect();
        let matches_file = |id: &AgentIdentity| {
            file_publics
                .iter()
                .any(|p| p.key_data() == id.public_key().key_data())
        };
        let mut ordered: Vec<&AgentIdentity> =
            agent_ids.iter().filter(|id| matches_file(id)).collect();
        if params.identities_only {
            let skipped = agent_ids.iter().filter(|id| !matches_file(id)).count();
            if skipped > 0 {
                self.log.push(format!(
                    "{skipped} other agent key(s) skipped (IdentitiesOnly yes)"
                ));
            }
        } else {
            ordered.extend(agent_ids.iter().filter(|id| !matches_file(id)));
        }

        let mut tried: Vec<PublicKey> = Vec::new();
        if let Some(agent) = agent.as_mut() {
            for id in ordered {
                match self.try_agent(agent, id).await {
                    Attempt::Success => return Ok(()),
                    Attempt::Stop(e) => return Err(e),
                    Attempt::Rejected => {
                        if let AgentIdentity::PublicKey { key, .. } = id {
                            tried.push(key.clone());
                        }
                    }
                }
            }
        }
        for id in &files {
            let Some(key) = &id.key else { continue };
            let plain_tried = tried
                .iter()
                .any(|t| t.key_data() == key.public_key().key_data());
            if plain_tried && id.certs.is_empty() {
                continue;
            }
            match self.try_file(id, key, plain_tried).await {
                Attempt::Success => return Ok(()),
                Attempt::Stop(e) => return Err(e),
                Attempt::Rejected => {}
            }
        }
        let reason = if self.log.is_empty() {
            "no usable identity (no IdentityFile found, no ssh-agent)"
        } else {
            "no identity was accepted"
        };
        Err(self.failure(reason))
    }
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

struct ConnInner {
    id: u64,
    target: String,
    handle: client::Handle<ClientHandler>,
    /// Jump-host connections this one is tunnelled through (kept alive with it).
    jumps: Vec<Connection>,
    sessions: Arc<Semaphore>,
    max_sessions: usize,
}

/// One authenticated SSH connection. Cloning is cheap and shares the connection;
/// channels (exec, SFTP) can be opened concurrently from any clone.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<ConnInner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("target", &self.inner.target)
            .field("jumps", &self.inner.jumps.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Connection {
    /// Connect and authenticate (see the module docs for the exact rules).
    /// `config_file` is used to resolve ProxyJump hops (None = default ssh config files).
    pub async fn connect(
        params: &HostParams,
        config_file: Option<&Path>,
        opts: &ConnectOptions,
    ) -> Result<Connection, SshError> {
        let timeout = params.connect_timeout.unwrap_or(opts.connect_timeout);
        match tokio::time::timeout(timeout, connect_chain(params, config_file, opts, 0)).await {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout(format!(
                "connecting to {}{} did not complete within {}s",
                params.display_target(),
                if params.proxy_jump.is_empty() {
                    String::new()
                } else {
                    format!(" via ProxyJump {}", params.proxy_jump.join(","))
                },
                timeout.as_secs_f64()
            ))),
        }
    }

    /// Unique id of this connection within the process (clones share it).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// `user@host:port` of the final hop.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// True once the connection (or a jump host it depends on) has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.handle.is_closed() || self.inner.jumps.iter().any(|j| j.is_closed())
    }

    /// Politely end the connection (other clones become unusable).
    pub async fn close(&self) {
        let _ = self
            .inner
            .handle
            .disconnect(russh::Disconnect::ByApplication, "bye", "en")
            .await;
    }

    fn channel_error(&self, e: russh::Error) -> SshError {
        match e {
            russh::Error::ChannelOpenFailure(reason) => SshError::Remote(format!(
                "{} refused to open a session channel ({reason:?}); the server's MaxSessions \
                 may be lower than the {} concurrent sessions this client allows",
                self.inner.target, self.inner.max_sessions
            )),
            other if self.is_closed() => SshError::Connection(format!(
                "connection to {} is closed ({other})",
                self.inner.target
            )),
            other => SshError::Connection(format!("{}: {other}", self.inner.target)),
        }
    }

    /// Run `command` (an already quoted shell command line) in a new channel.
    ///
    /// `stdin` is sent and then EOF (EOF is always sent). stdout and stderr are kept up
    /// to `output_cap` bytes each; the rest is read and discarded and the matching
    /// `*_truncated` flag is set. `timeout` covers waiting for a free session slot,
    /// opening the channel and the command itself; on expiry the remote process is sent
    /// SIGKILL (best effort; not every server honours signal requests), the channel is
    /// closed and `SshError::Timeout` is returned.
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
        output_cap: usize,
    ) -> Result<ExecResult, SshError> {
        self.run(
            command,
            stdin.map(Stdin::Bytes),
            Stdout::Keep(output_cap),
            output_cap,
            Wait::Total(timeout),
        )
        .await
    }

    /// Run `command` with everything `source` gives as its stdin, then EOF;
    /// each piece goes to `seen` before it is sent (to hash exactly what
    /// the command got). stdout and stderr are kept up to `output_cap`
    /// bytes each. For input of any length (an upload's bytes): there is no
    /// deadline for the whole command, but starting it is bounded by
    /// `idle`, and so is every wait in which the channel took no more input
    /// and gave no stdout. A read error of `source` stops the command (as a
    /// timeout does) and is returned.
    pub async fn exec_from(
        &self,
        command: &str,
        source: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
        seen: &mut (dyn FnMut(&[u8]) + Send),
        idle: Duration,
        output_cap: usize,
    ) -> Result<ExecResult, SshError> {
        self.run(
            command,
            Some(Stdin::Stream { source, seen }),
            Stdout::Keep(output_cap),
            output_cap,
            Wait::Idle(idle),
        )
        .await
    }

    /// Run `command` with no input, handing its stdout to `sink` as it
    /// arrives (nothing of it is kept in the result) and keeping up to
    /// `stderr_cap` bytes of stderr. For output of any length (a
    /// download's bytes): there is no deadline for the whole command, but
    /// starting it is bounded by `idle`, and so is every wait for more
    /// stdout (stderr is no progress); once the command reported its exit,
    /// the channel gets [`AFTER_EXIT`] more. An error from `sink` stops the
    /// command (as a timeout does) and is returned.
    pub async fn exec_to(
        &self,
        command: &str,
        idle: Duration,
        sink: &mut (dyn FnMut(&[u8]) -> Result<(), SshError> + Send),
        stderr_cap: usize,
    ) -> Result<ExecResult, SshError> {
        self.run(
            command,
            None,
            Stdout::Sink(sink),
            stderr_cap,
            Wait::Idle(idle),
        )
        .await
    }

    async fn run(
        &self,
        command: &str,
        stdin: Option<Stdin<'_>>,
        mut stdout: Stdout<'_>,
        stderr_cap: usize,
        wait: Wait,
    ) -> Result<ExecResult, SshError> {
        let (limit, idle) = match wait {
            Wait::Total(t) => (t, None),
            Wait::Idle(t) => (t, Some(t)),
        };
        let deadline = tokio::time::Instant::now() + limit;
        let timed_out = |what: &str| {
            SshError::Timeout(format!(
                "command on {} {what} within {}s: {}",
                self.inner.target,
                limit.as_secs_f64(),
                abbreviate(command, 200)
            ))
        };
        let opened = tokio::time::timeout_at(deadline, async {
            let permit = self
                .inner
                .sessions
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| SshError::Connection("connection pool shut down".into()))?;
            let channel = self
                .inner
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.channel_error(e))?;
            Ok::<_, SshError>((permit, channel))
        })
        .await;
        let (_permit, channel) = match opened {
            Ok(r) => r?,
            Err(_) => return Err(timed_out("could not start")),
        };
        let (mut read, write) = channel.split();
        let run = run_exec(
            &mut read,
            &write,
            command,
            stdin,
            &mut stdout,
            stderr_cap,
            idle,
        );
        let outcome = match idle {
            // Bounded message by message instead (inside `run_exec`).
            Some(_) => Ok(run.await),
            None => tokio::time::timeout_at(deadline, run).await,
        };
        let stop = || async {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = write.signal(Sig::KILL).await;
                let _ = write.close().await;
            })
            .await;
        };
        match outcome {
            Ok(Ok(res)) => {
                if res.exit_code.is_none() && res.exit_signal.is_none() && self.is_closed() {
                    return Err(SshError::Connection(format!(
                        "connection to {} was lost before the command finished",
                        self.inner.target
                    )));
                }
                Ok(res)
            }
            Ok(Err(e)) => {
                if !self.is_closed() {
                    // A sink that gave up, or no message for `idle`.
                    stop().await;
                }
                Err(match e {
                    SshError::Connection(m) if self.is_closed() => SshError::Connection(format!(
                        "connection to {} was lost: {m}",
                        self.inner.target
                    )),
                    SshError::Timeout(_) => timed_out("went silent (no output)"),
                    other => other,
                })
            }
            Err(_) => {
                stop().await;
                Err(timed_out("did not finish"))
            }
        }
    }

    /// Open an SFTP session on a new channel of this connection.
    pub async fn open_sftp(&self) -> Result<russh_sftp::client::SftpSession, SshError> {
        let fut = async {
            let mut channel = self
                .inner
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.channel_error(e))?;
            channel
                .request_subsystem(true, "sftp")
                .await
                .map_err(|e| self.channel_error(e))?;
            loop {
                match channel.wait().await {
                    Some(ChannelMsg::Success) => break,
                    Some(ChannelMsg::Failure) => {
                        return Err(SshError::Remote(format!(
                            "{} refused the sftp subsystem (is SFTP enabled in its sshd_config?)",
                            self.inner.target
                        )));
                    }
                    Some(ChannelMsg::Close) | Some(ChannelMsg::Eof) | None => {
                        return Err(SshError::Remote(format!(
                            "{} closed the channel while starting sftp",
                            self.inner.target
                        )));
                    }
                    Some(_) => {}
                }
            }
            let cfg = russh_sftp::client::Config {
                request_timeout_secs: SFTP_REQUEST_TIMEOUT_SECS,
                ..Default::default()
            };
            russh_sftp::client::SftpSession::new_with_config(channel.into_stream(), cfg)
                .await
                .map_err(|e| {
                    SshError::Remote(format!("starting sftp on {}: {e}", self.inner.target))
                })
        };
        match tokio::time::timeout(Duration::from_secs(60), fut).await {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout(format!(
                "starting sftp on {} took over 60s",
                self.inner.target
            ))),
        }
    }
}

fn abbreviate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(s) => s.clone(),
    }
}

fn push_capped(buf: &mut Vec<u8>, data: &[u8], cap: usize, truncated: &mut bool) {
    let room = cap.saturating_sub(buf.len());
    if data.len() > room {
        *truncated = true;
    }
    buf.extend(data.iter().take(room));
}

/// Where a command's stdin comes from (EOF follows it).
enum Stdin<'a> {
    Bytes(&'a [u8]),
    /// Read to its end, each piece handed to `seen` before it is sent.
    Stream {
        source: &'a mut (dyn tokio::io::AsyncRead + Unpin + Send),
        seen: &'a mut (dyn FnMut(&[u8]) + Send),
    },
}

/// How much of a streamed stdin is read and sent at a time.
const STREAM_PIECE: usize = 256 << 10;

/// Why feeding a command's stdin stopped.
enum Fed {
    /// Reading the source failed.
    Source(std::io::Error),
    /// The channel refused more (the command is gone, usually).
    Channel,
}

/// Where a command's stdout goes.
enum Stdout<'a> {
    /// Into the result, up to this many bytes.
    Keep(usize),
    /// To this function, as it arrives.
    Sink(&'a mut (dyn FnMut(&[u8]) -> Result<(), SshError> + Send)),
}

/// How long a command may take.
#[derive(Clone, Copy)]
enum Wait {
    /// In all.
    Total(Duration),
    /// Between two messages (and to start).
    Idle(Duration),
}

/// The channel's next message, waiting until `quiet_until` when given.
async fn next_message(
    read: &mut ChannelReadHalf,
    quiet_until: Option<tokio::time::Instant>,
) -> Result<Option<ChannelMsg>, SshError> {
    match quiet_until {
        Some(at) => tokio::time::timeout_at(at, read.wait())
            .await
            .map_err(|_| SshError::Timeout("no output".to_string())),
        None => Ok(read.wait().await),
    }
}

/// How long a streamed command's channel may stay open once the command
/// reported its exit, with no more stdout: the channel closes when every
/// holder of its descriptors is gone, and a process of the user's can hold
/// stderr open (`/proc/PID/fd/2`) as long as it likes.
const AFTER_EXIT: Duration = Duration::from_secs(5);

/// The most a streamed command's channel may stay open after the command
/// reported its exit, however much stdout still comes: such a process can
/// hold stdout open as well, and write into it.
const AFTER_EXIT_MAX: Duration = Duration::from_secs(30);

async fn run_exec(
    read: &mut ChannelReadHalf,
    write: &ChannelWriteHalf<client::Msg>,
    command: &str,
    stdin: Option<Stdin<'_>>,
    stdout: &mut Stdout<'_>,
    stderr_cap: usize,
    idle: Option<Duration>,
) -> Result<ExecResult, SshError> {
    use tokio::io::AsyncReadExt as _;
    write.exec(true, command).await?;
    // stdin is written concurrently with reading so that a command which produces a
    // lot of output before consuming its input cannot deadlock us.
    let started = tokio::time::Instant::now();
    // When the channel last took input (milliseconds after `started`):
    // progress, for a command with `idle`.
    let last_taken = AtomicU64::new(0);
    // stdout is progress, unless the input is what the command is for (an
    // upload): a process of the user's can write into its stdout.
    let stdout_is_progress = !matches!(stdin, Some(Stdin::Stream { .. }));
    let writer = async {
        match stdin {
            Some(Stdin::Bytes(data)) if !data.is_empty() => {
                // Whole packets: `data` (an AsyncRead) would go through an
                // 8 KiB copy buffer, several times slower for large inputs
                // (tar bundles).
                write
                    .data_bytes(data.to_vec())
                    .await
                    .map_err(|_| Fed::Channel)?;
            }
            Some(Stdin::Stream { source, seen }) => {
                let mut buf = vec![0u8; STREAM_PIECE];
                loop {
                    let n = source.read(&mut buf).await.map_err(Fed::Source)?;
                    if n == 0 {
                        break;
                    }
                    let piece = buf.get(..n).unwrap_or_default();
                    seen(piece);
                    write
                        .data_bytes(piece.to_vec())
                        .await
                        .map_err(|_| Fed::Channel)?;
                    let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    last_taken.store(now, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        write.eof().await.map_err(|_| Fed::Channel)
    };
    tokio::pin!(writer);
    let mut writer_done = false;
    let mut res = ExecResult::default();
    // With `idle`: only stdout (the bytes asked for), input taken and the
    // exit count as progress; stderr does not keep a command alive. After
    // the exit, stdout still coming (what the channel held) extends the
    // wait, never beyond AFTER_EXIT_MAX.
    let mut quiet_until = idle.map(|d| tokio::time::Instant::now() + d);
    let mut exited_at: Option<tokio::time::Instant> = None;
    let exited = |res: &ExecResult| res.exit_code.is_some() || res.exit_signal.is_some();
    loop {
        tokio::select! {
            r = &mut writer, if !writer_done => {
                writer_done = true;
                match r {
                    // The input could not be read here: the command must not
                    // take what it got for all of it.
                    Err(Fed::Source(e)) => {
                        return Err(SshError::LocalIo(format!("reading the input of a command: {e}")));
                    }
                    // A channel write error usually means the command exited
                    // without reading its input; the outcome is reported by
                    // the messages below.
                    Err(Fed::Channel) | Ok(()) => {}
                }
            }
            msg = next_message(read, quiet_until) => {
                let msg = match msg {
                    // Silent after its exit: done, whoever holds the channel.
                    Err(_) if exited(&res) => break,
                    Err(e) => {
                        // Silent, but the channel took input meanwhile: wait
                        // `idle` from then.
                        let taken = Duration::from_millis(last_taken.load(Ordering::Relaxed));
                        match idle.map(|d| started + taken + d) {
                            Some(until) if until > tokio::time::Instant::now() => {
                                quiet_until = Some(until);
                                continue;
                            }
                            _ => return Err(e),
                        }
                    }
                    Ok(msg) => msg,
                };
                if let (Some(d), Some(ChannelMsg::Data { .. })) = (idle, &msg) {
                    let now = tokio::time::Instant::now();
                    match exited_at {
                        _ if !stdout_is_progress => {}
                        Some(at) => quiet_until = Some((now + AFTER_EXIT).min(at + AFTER_EXIT_MAX)),
                        None => quiet_until = Some(now + d),
                    }
                }
                match msg {
                    None => break,
                    Some(ChannelMsg::Data { data }) => match stdout {
                        Stdout::Keep(cap) => {
                            push_capped(&mut res.stdout, &data, *cap, &mut res.stdout_truncated);
                        }
                        Stdout::Sink(sink) => sink(&data)?,
                    },
                    Some(ChannelMsg::ExtendedData { data, ext }) => {
                        if ext == 1 {
                            push_capped(&mut res.stderr, &data, stderr_cap, &mut res.stderr_truncated);
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        res.exit_code = Some(i32::try_from(exit_status).unwrap_or(i32::MAX));
                        exited_at = exited_at.or(Some(tokio::time::Instant::now()));
                        quiet_until = quiet_until.map(|_| tokio::time::Instant::now() + AFTER_EXIT);
                    }
                    Some(ChannelMsg::ExitSignal { signal_name: sig, .. }) => {
                        res.exit_signal = Some(signal_name(&sig));
                        exited_at = exited_at.or(Some(tokio::time::Instant::now()));
                        quiet_until = quiet_until.map(|_| tokio::time::Instant::now() + AFTER_EXIT);
                    }
                    Some(ChannelMsg::Failure) => {
                        return Err(SshError::Remote("the server refused to execute the command".into()));
                    }
                    Some(ChannelMsg::Close) => break,
                    Some(_) => {}
                }
            }
        }
    }
    Ok(res)
}

/// Connect to `params`, honouring its ProxyJump chain. `depth` guards against loops.
fn connect_chain<'a>(
    params: &'a HostParams,
    config_file: Option<&'a Path>,
    opts: &'a ConnectOptions,
    depth: usize,
) -> BoxFuture<'a, Result<Connection, SshError>> {
    Box::pin(async move {
        if let Some(cmd) = &params.proxy_command {
            return Err(SshError::Config(format!(
                "{} uses ProxyCommand ({cmd}), which is not supported; use ProxyJump instead",
                params.alias
            )));
        }
        if depth > MAX_JUMP_DEPTH {
            return Err(SshError::Config(format!(
                "ProxyJump chain for {} is nested deeper than {MAX_JUMP_DEPTH} hops; probably a loop \
                 (does the jump host inherit ProxyJump from a `Host *` block? add `ProxyJump none` to its block)",
                params.alias
            )));
        }
        let mut hops = params.proxy_jump.iter();
        let Some(first_hop) = hops.next() else {
            let addr = (params.hostname.as_str(), params.port);
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
                SshError::Connection(format!(
                    "cannot reach {}:{}: {e}",
                    params.hostname, params.port
                ))
            })?;
            let _ = tcp.set_nodelay(true);
            return establish(tcp, params, opts, Vec::new()).await;
        };
        let first = ssh_config::resolve(first_hop, config_file)?;
        let mut prev = connect_chain(&first, config_file, opts, depth + 1).await?;
        let mut jumps = vec![prev.clone()];
        for hop in hops {
            let hp = ssh_config::resolve(hop, config_file)?;
            prev = connect_via(&prev, &hp, opts, jumps.clone()).await?;
            jumps.push(prev.clone());
        }
        connect_via(&prev, params, opts, jumps).await
    })
}

async fn connect_via(
    jump: &Connection,
    params: &HostParams,
    opts: &ConnectOptions,
    jumps: Vec<Connection>,
) -> Result<Connection, SshError> {
    let channel = jump
        .inner
        .handle
        .channel_open_direct_tcpip(
            params.hostname.clone(),
            u32::from(params.port),
            "127.0.0.1",
            0,
        )
        .await
        .map_err(|e| {
            SshError::Connection(format!(
                "jump host {} could not open a tunnel to {}:{}: {e}",
                jump.target(),
                params.hostname,
                params.port
            ))
        })?;
    establish(channel.into_stream(), params, opts, jumps).await
}

async fn establish<S>(
    stream: S,
    params: &HostParams,
    opts: &ConnectOptions,
    jumps: Vec<Connection>,
) -> Result<Connection, SshError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let lookup = HostKeyLookup::new(params);
    let (keepalive_interval, keepalive_max) = match params.server_alive_interval {
        Some(i) => (Some(i), params.server_alive_count_max as usize),
        None => (opts.keepalive_interval, opts.keepalive_max),
    };
    let config = client::Config {
        preferred: preferred_algorithms(&lookup, &params.known_hosts_files),
        keepalive_interval,
        keepalive_max,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    };
    let handler = ClientHandler {
        lookup,
        known_hosts: params.known_hosts_files.clone(),
    };
    let mut handle = client::connect_stream(Arc::new(config), stream, handler)
        .await
        .map_err(|e| match e {
            SshError::Connection(m) => SshError::Connection(format!(
                "SSH handshake with {}:{} failed: {m}",
                params.hostname, params.port
            )),
            other => other,
        })?;
    let mut auth = Authenticator {
        handle: &mut handle,
        params,
        log: Vec::new(),
        rsa_hash: None,
    };
    auth.run().await?;
    let max_sessions = opts.max_sessions.max(1);
    Ok(Connection {
        inner: Arc::new(ConnInner {
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            target: params.display_target(),
            handle,
            jumps,
            sessions: Arc::new(Semaphore::new(max_sessions)),
            max_sessions,
        }),
    })
}

// ---------------------------------------------------------------------------
// Pool
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Slot {
    conn: Option<Connection>,
    last_failure: Option<(Instant, SshError)>,
    /// Connection attempts that failed in a row (reset by a success).
    failures: u32,
    /// When connection attempts began, within the last minute.
    attempts: std::collections::VecDeque<Instant>,
}

/// New connections per label and minute when nothing else is configured:
/// enough to ride out a few drops, few enough to never storm a login node.
pub const DEFAULT_CONNECTIONS_PER_MINUTE: u32 = 10;

/// One shared [`Connection`] per label, created on first use. Concurrent first
/// callers wait for a single connection attempt (and share its error if it fails);
/// a connection found closed is replaced on the next `get`, within a budget of
/// new connections per label and minute (over it, `get` refuses rather than
/// hammer the login node). After a failed attempt the next one waits (1 s,
/// doubling per failure, at most 30 s); until then `get` repeats the error
/// and says when it will try again.
///
/// With a shared record ([`Pool::shared_with`], [`Pool::shared_per_user`];
/// `SshTransport` uses the user's) the budget also holds per login node
/// across every process using that record (see [`crate::budget`]); without
/// one, or when the record cannot be used, it holds per process.
pub struct Pool {
    slots: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    per_minute: u32,
    first_backoff: Duration,
    attempts: std::sync::atomic::AtomicU64,
    /// The record shared with other processes: none (per process only), or
    /// the record, or why the user's record could not be found.
    shared: Option<Result<crate::budget::SharedBudget, crate::budget::Unusable>>,
}

/// The longest wait between failed connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// After `failures` failed attempts in a row, the next waits `first`,
/// doubling each time, at most [`MAX_BACKOFF`].
fn backoff(first: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    first
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::with_budget(DEFAULT_CONNECTIONS_PER_MINUTE)
    }
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// A pool that opens at most `per_minute` connections per label and minute.
    pub fn with_budget(per_minute: u32) -> Pool {
        Pool {
            slots: std::sync::Mutex::new(HashMap::new()),
            per_minute: per_minute.max(1),
            first_backoff: Duration::from_secs(1),
            attempts: std::sync::atomic::AtomicU64::new(0),
            shared: None,
        }
    }

    /// Count connection attempts in `record` too, shared with every process
    /// using it: the budget then holds per login node across them all.
    pub fn shared_with(mut self, record: crate::budget::SharedBudget) -> Pool {
        self.shared = Some(Ok(record));
        self
    }

    /// As [`shared_with`](Self::shared_with), with the user's record
    /// (`$CLUSTER_SLURM_STATE_DIR`, else the host's state directory). If there
    /// is none, the pool counts per process and says so once on stderr.
    pub fn shared_per_user(mut self) -> Pool {
        self.shared = Some(crate::budget::SharedBudget::for_user());
        self
    }

    /// After a failed connection attempt, wait `first` before the next one,
    /// doubling after each further failure (at most 30 s); zero turns the
    /// backoff off. Default: 1 s.
    pub fn with_backoff(mut self, first: Duration) -> Pool {
        self.first_backoff = first;
        self
    }

    /// Connection attempts made so far, over all labels.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn slot(&self, label: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(label.to_string()).or_default().clone()
    }

    /// The connection for `label`, connecting with `params` if there is none (or it closed).
    pub async fn get(
        &self,
        label: &str,
        params: &HostParams,
        config_file: Option<&Path>,
        opts: &ConnectOptions,
    ) -> Result<Connection, SshError> {
        let started = Instant::now();
        let slot = self.slot(label);
        let mut s = slot.lock().await;
        if let Some(c) = &s.conn
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        // Someone else tried (and failed) while we were waiting: share that result
        // instead of queueing another full connect timeout per waiter.
        if let Some((when, err)) = &s.last_failure
            && *when >= started
        {
            return Err(err.clone());
        }
        // A login node that just refused us is not asked again at once.
        if let Some((when, err)) = &s.last_failure {
            let wait = backoff(self.first_backoff, s.failures).saturating_sub(when.elapsed());
            if !wait.is_zero() {
                return Err(err.clone().not_retried_for(wait, s.failures));
            }
        }
        s.conn = None;
        let now = Instant::now();
        while s
            .attempts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            s.attempts.pop_front();
        }
        if s.attempts.len() >= self.per_minute as usize {
            let wait = s.attempts.front().map_or(60, |t| {
                60u64.saturating_sub(now.duration_since(*t).as_secs())
            });
            return Err(SshError::Connection(format!(
                "{label}: {} new SSH connections in the last minute already (the budget); not opening another, to spare the login node. Retry in about {wait} s",
                s.attempts.len()
            )));
        }
        self.take_shared(label, params).await?;
        s.attempts.push_back(now);
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match Connection::connect(params, config_file, opts).await {
            Ok(c) => {
                s.conn = Some(c.clone());
                s.last_failure = None;
                s.failures = 0;
                Ok(c)
            }
            Err(e) => {
                s.last_failure = Some((Instant::now(), e.clone()));
                s.failures = s.failures.saturating_add(1);
                Err(e)
            }
        }
    }

    /// Take this attempt from the record shared with other processes, if
    /// there is one: refused when they (and we) used the budget up. A record
    /// that cannot be used leaves the per-process count in charge.
    async fn take_shared(&self, label: &str, params: &HostParams) -> Result<(), SshError> {
        use crate::budget::{Unusable, Verdict, endpoint, warn_unusable_once};
        let record = match &self.shared {
            None => return Ok(()),
            Some(Err(why)) => {
                warn_unusable_once(why);
                return Ok(());
            }
            Some(Ok(record)) => record.clone(),
        };
        let node = endpoint(params);
        let per_minute = self.per_minute;
        let key = node.clone();
        // File locking may wait (at most budget::LOCK_WAIT): not on a runtime thread.
        let taken = tokio::task::spawn_blocking(move || record.take(&key, per_minute))
            .await
            .unwrap_or_else(|e| Err(Unusable(format!("the record check failed: {e}"))));
        match taken {
            Ok(outcome) => {
                for warning in &outcome.warnings {
                    eprintln!("{warning}");
                }
                match outcome.verdict {
                    Verdict::Granted => Ok(()),
                    Verdict::Refused {
                        used,
                        retry_in_secs,
                    } => Err(SshError::Connection(format!(
                        "{label}: {used} new SSH connections to {node} in the last minute already, counted over all cluster-slurm processes of this user (the budget: {per_minute}); not opening another, to spare the login node. Retry in about {retry_in_secs} s"
                    ))),
                }
            }
            Err(why) => {
                warn_unusable_once(&why);
                Ok(())
            }
        }
    }

    /// Close every pooled connection.
    pub async fn close_all(&self) {
        let slots: Vec<_> = {
            let map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            map.values().cloned().collect()
        };
        for slot in slots {
            let mut s = slot.lock().await;
            if let Some(c) = s.conn.take() {
                c.close().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let first = Duration::from_secs(1);
        let waits: Vec<u64> = (0..8).map(|n| backoff(first, n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(first, u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(Duration::ZERO, 5), Duration::ZERO);
    }

    #[test]
    fn quoting_words() {
        assert_eq!(quote_word("abc-1.2_x/y=z:%@+,"), "abc-1.2_x/y=z:%@+,");
        assert_eq!(quote_word(""), "''");
        assert_eq!(quote_word("a b"), "'a b'");
        assert_eq!(quote_word("it's"), "'it'\"'\"'s'");
        assert_eq!(quote_word("$HOME"), "'$HOME'");
        assert_eq!(quote_word("a\nb"), "'a\nb'");
        assert_eq!(quote_word("~"), "'~'");
        assert_eq!(quote_word("*"), "'*'");
        assert_eq!(quote_word("`id`"), "'`id`'");
    }

    #[test]
    fn quoting_commands() {
        let args = vec![
            "--name=x y".to_string(),
            String::new(),
            "$(rm -rf /)".to_string(),
            "'".to_string(),
        ];
        assert_eq!(
            quote_command("sbatch", &args),
            "sbatch '--name=x y' '' '$(rm -rf /)' ''\"'\"''"
        );
        assert_eq!(quote_command("A=b", &[]), "'A=b'");
        assert_eq!(
            quote_command("squeue", &["-u".to_string(), "me".to_string()]),
            "squeue -u me"
        );
    }

    /// Round-trip through a real POSIX shell: every argument must arrive unchanged.
    #[test]
    fn quoting_round_trips_through_sh() {
        let args: Vec<String> = vec![
            "plain".into(),
            "".into(),
            "with space".into(),
            "single'quote".into(),
            "double\"quote".into(),
            "$HOME $(id) `id`".into(),
            "new\nline".into(),
            "tab\there".into(),
            "glob*?[a]".into(),
            "back\\slash".into(),
            "~user".into(),
            "semi;colon&amp|pipe>redir".into(),
            "'".into(),
            "''".into(),
        ];
        let cmd = quote_command(
            "printf",
            &std::iter::once("%s\\0".to_string())
                .chain(args.clone())
                .collect::<Vec<_>>(),
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}");
        let got: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        let mut expected = args.clone();
        expected.push(String::new()); // trailing separator
        assert_eq!(got, expected);
    }

    #[test]
    fn capped_output() {
        let mut buf = Vec::new();
        let mut t = false;
        push_capped(&mut buf, b"hello", 8, &mut t);
        assert!(!t);
        push_capped(&mut buf, b"world", 8, &mut t);
        assert!(t);
        assert_eq!(buf, b"hellowor");
        push_capped(&mut buf, b"more", 8, &mut t);
        assert_eq!(buf, b"hellowor");
    }

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    const K1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAINlXDrIoCFQWIycNX4+B9L/LAlEnjmv1YawhUyrU3TC6";
    const K2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAICYHCsN79z+5UHpPyhW5vnnHNfbr2NX5Y5ukLOv/8TL9";

    fn lookup(host: &str, port: u16) -> HostKeyLookup {
        let params = HostParams {
            alias: host.into(),
            hostname: host.into(),
            port,
            user: "u".into(),
            identity_files: vec![],
            certificate_files: vec![],
            identities_only: false,
            identity_agent: None,
            use_agent: false,
            known_hosts_files: vec![],
            host_key_alias: None,
            proxy_jump: vec![],
            proxy_command: None,
            connect_timeout: None,
            server_alive_interval: None,
            server_alive_count_max: 3,
        };
        HostKeyLookup::new(&params)
    }

    fn kh(content: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("known_hosts");
        std::fs::write(&p, content).unwrap();
        (d, p)
    }

    #[test]
    fn known_hosts_plain_ports_patterns_and_lines() {
        let (_d, p) = kh(&format!(
            "# comment\n\
             other.example ssh-ed25519 {K2}\n\
             [login.example]:2222 ssh-ed25519 {K1}\n\
             *.wild.example,!bad.wild.example ssh-ed25519 {K1}\n\
             login.example\tssh-ed25519   {K2}\n"
        ));
        let files = vec![p.clone()];
        assert!(matches!(
            verify_host_key(&lookup("login.example", 2222), &key(K1), &files),
            HostKeyVerdict::Trusted
        ));
        assert!(matches!(
            verify_host_key(&lookup("n1.wild.example", 22), &key(K1), &files),
            HostKeyVerdict::Trusted
        ));
        assert!(matches!(
            verify_host_key(&lookup("bad.wild.example", 22), &key(K1), &files),
            HostKeyVerdict::Unknown
        ));
        // Port 22 entry (tab separated) holds K2, so K1 on port 22 is a mismatch at line 5.
        match verify_host_key(&lookup("login.example", 22), &key(K1), &files) {
            HostKeyVerdict::Changed { file, line } => {
                assert_eq!(file, p);
                assert_eq!(line, 5);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verify_host_key(&lookup("nowhere", 22), &key(K1), &files),
            HostKeyVerdict::Unknown
        ));
        assert!(matches!(
            verify_host_key(
                &lookup("login.example", 2222),
                &key(K1),
                &[PathBuf::from("/nonexistent/kh")]
            ),
            HostKeyVerdict::Unknown
        ));
    }

    #[test]
    fn known_hosts_revoked_and_multiple_files() {
        let (_d1, p1) = kh(&format!("@revoked * ssh-ed25519 {K2}\n"));
        let (_d2, p2) = kh(&format!("h ssh-ed25519 {K2}\nh ssh-ed25519 {K1}\n"));
        let files = vec![p1, p2];
        assert!(matches!(
            verify_host_key(&lookup("h", 22), &key(K1), &files),
            HostKeyVerdict::Trusted
        ));
        assert!(matches!(
            verify_host_key(&lookup("h", 22), &key(K2), &files),
            HostKeyVerdict::Revoked { line: 1, .. }
        ));
    }

    #[test]
    fn known_hosts_hashed_entries() {
        // Produced with `ssh-keygen -H` semantics: HMAC-SHA1(salt, "[127.0.0.1]:2222").
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kh");
        std::fs::write(&p, format!("[127.0.0.1]:2222 ssh-ed25519 {K1}\n")).unwrap();
        let st = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&p)
            .output();
        let Ok(st) = st else { return }; // ssh-keygen not installed: skip
        assert!(st.status.success());
        let content = std::fs::read_to_string(&p).unwrap();
        assert!(content.starts_with("|1|"), "{content}");
        // Prepend comment lines to check the line-number mapping.
        std::fs::write(&p, format!("# a\n#b\n{content}")).unwrap();
        let files = vec![p];
        assert!(matches!(
            verify_host_key(&lookup("127.0.0.1", 2222), &key(K1), &files),
            HostKeyVerdict::Trusted
        ));
        assert!(matches!(
            verify_host_key(&lookup("127.0.0.1", 2222), &key(K2), &files),
            HostKeyVerdict::Changed { line: 3, .. }
        ));
        assert!(matches!(
            verify_host_key(&lookup("127.0.0.1", 22), &key(K1), &files),
            HostKeyVerdict::Unknown
        ));
    }

    #[test]
    fn preferred_puts_known_types_first() {
        let rsa = "AAAAB3NzaC1yc2EAAAADAQABAAAAgQCa/w/Wg6/63GWz1587TVsA3QUODWK5pOShiW0h0LFjrhnWLj9KLwwa7+W+uTYpP9cZblVzrlecAtdttYInnWfXj/BeQ7z1zoiM6ZvawrkglZHcn8LPVZDSbZ2JJY5gy4LtJLBW/wSXbH4EeQUvLzIb5DTX4wRlfLJPErBBGyfPvw==";
        let (_d, p) = kh(&format!("h ssh-rsa {rsa}\n"));
        let pref = preferred_algorithms(&lookup("h", 22), &[p]);
        assert!(pref.key.first().unwrap().clone().is_rsa());
        assert!(pref.key.contains(&Algorithm::Ed25519));
        let pref = preferred_algorithms(&lookup("other", 22), &[]);
        assert_eq!(pref.key.first(), Some(&Algorithm::Ed25519));
    }

    #[test]
    fn aes_gcm_is_preferred_only_where_the_cpu_has_aes() {
        let order = cipher_order();
        let default = russh::Preferred::default().cipher.to_vec();
        let mut sorted = order.clone();
        sorted.sort_by_key(|c| c.as_ref().to_string());
        let mut expected = default.clone();
        expected.sort_by_key(|c| c.as_ref().to_string());
        assert_eq!(sorted, expected, "the same ciphers, only reordered");
        if aes_in_hardware() {
            assert_eq!(order.first(), Some(&russh::cipher::AES_256_GCM));
        } else {
            assert_eq!(order, default);
        }
        let pref = preferred_algorithms(&lookup("other", 22), &[]);
        assert_eq!(pref.cipher.to_vec(), order);
    }

    #[test]
    fn error_messages_are_actionable() {
        let e = SshError::HostKeyUnknown {
            host: "h".into(),
            port: 2222,
            fingerprint: "ssh-ed25519 SHA256:abc".into(),
            known_hosts: "/home/u/.ssh/known_hosts, /etc/ssh/ssh_known_hosts".into(),
        };
        let m = e.to_string();
        assert!(
            m.contains("ssh-keyscan -p 2222 h >> /home/u/.ssh/known_hosts"),
            "{m}"
        );
        assert!(m.contains("SHA256:abc"));
        let e = SshError::HostKeyMismatch {
            host: "h".into(),
            port: 2222,
            fingerprint: "ssh-ed25519 SHA256:abc".into(),
            known_hosts: "/kh".into(),
            line: 7,
        };
        let m = e.to_string();
        assert!(
            m.contains("line 7") && m.contains("ssh-keygen -R '[h]:2222' -f /kh"),
            "{m}"
        );
    }
}
