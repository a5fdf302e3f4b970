//! A small resolver for OpenSSH client configuration files (`~/.ssh/config`).
//!
//! It understands the subset of `ssh_config(5)` that the SSH transport uses and
//! follows OpenSSH's evaluation rules:
//!
//! * Files are read top to bottom; for every keyword the **first obtained value
//!   wins** (later `Host *` defaults never override earlier specific blocks).
//!   `IdentityFile` and `CertificateFile` accumulate instead, as in OpenSSH.
//! * `Host` lines take several whitespace-separated patterns with `*` and `?`
//!   wildcards and `!negation`; a block applies when at least one positive
//!   pattern matches the requested host and no negated pattern does. Matching
//!   is case-insensitive and uses the name given on the command line (the alias),
//!   never the `HostName`.
//! * Keywords are case-insensitive; both `Key value` and `Key=value` work;
//!   values may be double- or single-quoted; `#` starts a comment at the start
//!   of a line or of a token.
//! * `Include` takes one or more paths (relative paths are relative to
//!   `~/.ssh`, as in OpenSSH), with `*`/`?` globs in any path component. A
//!   non-matching or missing include is silently ignored, as OpenSSH does. An
//!   `Include` inside a non-matching `Host` block is skipped.
//! * **`Match` blocks are not evaluated**: every keyword after a `Match` line is
//!   ignored until the next `Host`/`Match` line. The only exception is `Match all`,
//!   which applies like `Host *`.
//! * Unknown keywords are ignored. `ProxyCommand` is recorded (so that the
//!   connection code can refuse it clearly) but never run.
//! * When no config file is given, `~/.ssh/config` and then `/etc/ssh/ssh_config`
//!   are read, like `ssh` without `-F`. An explicit file is read alone, like `ssh -F file`.
//!
//! Supported `%` tokens (in `HostName`, `IdentityFile`, `CertificateFile`,
//! `IdentityAgent`, `UserKnownHostsFile`, `GlobalKnownHostsFile`):
//! `%%`, `%d` (local home), `%h` (remote host name), `%n` (host as given),
//! `%p` (port), `%r` (remote user), `%u` (local user), `%l`/`%L` (local host name,
//! long/short), `%i` (local uid). Others (e.g. `%C`) are rejected with an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything needed to connect to one host, after ssh config resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostParams {
    /// The host (or alias) as it was asked for, without `user@`/`:port`.
    pub alias: String,
    /// `HostName`, else the alias/host itself.
    pub hostname: String,
    /// Port from the target, else `Port`, else 22.
    pub port: u16,
    /// User from the target, else `User`, else the local user name.
    pub user: String,
    /// `IdentityFile` entries in order (expanded); if none are configured, the
    /// default `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` that exist.
    pub identity_files: Vec<PathBuf>,
    /// `CertificateFile` entries in order (expanded). Certificates named
    /// `<identity>-cert.pub` are also picked up at connect time.
    pub certificate_files: Vec<PathBuf>,
    /// `IdentitiesOnly`.
    pub identities_only: bool,
    /// Agent socket: `IdentityAgent` if set, else `$SSH_AUTH_SOCK`.
    pub identity_agent: Option<PathBuf>,
    /// False when `IdentityAgent none` was configured or no agent socket is known.
    pub use_agent: bool,
    /// `UserKnownHostsFile` entries (default `~/.ssh/known_hosts`,
    /// `~/.ssh/known_hosts2`) followed by `GlobalKnownHostsFile` entries
    /// (default `/etc/ssh/ssh_known_hosts`, `/etc/ssh/ssh_known_hosts2`).
    /// The first entry is where an operator should add new keys.
    pub known_hosts_files: Vec<PathBuf>,
    /// `HostKeyAlias`: the name looked up in known_hosts instead of `[host]:port`.
    pub host_key_alias: Option<String>,
    /// `ProxyJump` hops in order (`none` = empty). Each is `[user@]host[:port]` or an alias.
    pub proxy_jump: Vec<String>,
    /// `ProxyCommand`, if configured (and obtained before any `ProxyJump`).
    /// It is never executed; the connection code refuses such hosts.
    pub proxy_command: Option<String>,
    /// `ConnectTimeout` (None if unset or 0).
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval` (None if unset or 0).
    pub server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax` (default 3).
    pub server_alive_count_max: u32,
}

impl HostParams {
    /// `user@hostname:port`, for messages.
    pub fn display_target(&self) -> String {
        format!("{}@{}:{}", self.user, self.hostname, self.port)
    }
}

/// Errors from reading or evaluating ssh config files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshConfigError {
    /// The target string itself is malformed.
    BadTarget { target: String, reason: String },
    /// A config file could not be read.
    Read { file: PathBuf, reason: String },
    /// A line in a config file is malformed.
    Syntax {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    /// Something needed from the local environment is missing (home directory, user name).
    Environment(String),
}

impl fmt::Display for SshConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SshConfigError::BadTarget { target, reason } => {
                write!(f, "invalid SSH target {target:?}: {reason}")
            }
            SshConfigError::Read { file, reason } => {
                write!(f, "cannot read ssh config {}: {reason}", file.display())
            }
            SshConfigError::Syntax { file, line, reason } => {
                write!(f, "ssh config {}, line {line}: {reason}", file.display())
            }
            SshConfigError::Environment(msg) => write!(f, "ssh config: {msg}"),
        }
    }
}

impl std::error::Error for SshConfigError {}

/// Resolve `target` (`[user@]host[:port]`, `[user@][host]:port`, `ssh://[user@]host[:port]`
/// or a `Host` alias) through the ssh config.
///
/// `config_file`: `None` reads `~/.ssh/config` (if it exists) and then
/// `/etc/ssh/ssh_config` (if it exists), like `ssh`; `Some(path)` reads only that
/// file (which must exist), like `ssh -F path`.
pub fn resolve(target: &str, config_file: Option<&Path>) -> Result<HostParams, SshConfigError> {
    let env = LocalEnv::from_process()?;
    let files = match config_file {
        Some(p) => vec![ConfigSource {
            path: p.to_path_buf(),
            required: true,
        }],
        None => vec![
            ConfigSource {
                path: env.home.join(".ssh").join("config"),
                required: false,
            },
            ConfigSource {
                path: PathBuf::from("/etc/ssh/ssh_config"),
                required: false,
            },
        ],
    };
    resolve_with(target, &files, &env)
}

// ---------------------------------------------------------------------------
// Local environment (injectable for tests)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct LocalEnv {
    home: PathBuf,
    local_user: String,
    uid: Option<u32>,
    local_hostname: String,
    ssh_auth_sock: Option<String>,
    /// For `IdentityAgent $VAR`.
    vars: Vec<(String, String)>,
    /// Only existing default identity files are used; tests can override the check.
    check_default_identities_exist: bool,
}

impl LocalEnv {
    fn from_process() -> Result<LocalEnv, SshConfigError> {
        let uid = current_uid();
        let passwd = uid.and_then(passwd_entry_for_uid);
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| passwd.as_ref().map(|p| PathBuf::from(&p.1)))
            .ok_or_else(|| {
                SshConfigError::Environment(
                    "cannot determine the home directory ($HOME unset)".into(),
                )
            })?;
        let local_user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
            .or_else(|| passwd.as_ref().map(|p| p.0.clone()))
            .ok_or_else(|| {
                SshConfigError::Environment(
                    "cannot determine the local user name ($USER unset)".into(),
                )
            })?;
        let local_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string());
        Ok(LocalEnv {
            home,
            local_user,
            uid,
            local_hostname,
            ssh_auth_sock: std::env::var("SSH_AUTH_SOCK")
                .ok()
                .filter(|s| !s.is_empty()),
            // vars_os: std::env::vars() panics on non-UTF-8 entries.
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            check_default_identities_exist: true,
        })
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// (name, home) from /etc/passwd.
fn passwd_entry_for_uid(uid: u32) -> Option<(String, String)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        match (f.first(), f.get(2), f.get(5)) {
            (Some(name), Some(u), Some(home)) if u.parse::<u32>().ok() == Some(uid) => {
                Some(((*name).to_string(), (*home).to_string()))
            }
            _ => None,
        }
    })
}

fn passwd_home_for_user(user: &str) -> Option<PathBuf> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        match (f.first(), f.get(5)) {
            (Some(name), Some(home)) if *name == user => Some(PathBuf::from(home)),
            _ => None,
        }
    })
}

// ---------------------------------------------------------------------------
// Target parsing
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

fn parse_target(target: &str) -> Result<Target, SshConfigError> {
    let bad = |reason: &str| SshConfigError::BadTarget {
        target: target.to_string(),
        reason: reason.to_string(),
    };
    let t = target.trim();
    if t.is_empty() {
        return Err(bad("empty"));
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or control characters"));
    }
    let t = t.strip_prefix("ssh://").unwrap_or(t);
    let t = t.strip_suffix('/').unwrap_or(t);
    let (user, rest) = match t.rsplit_once('@') {
        Some((u, r)) => {
            if u.is_empty() {
                return Err(bad("empty user name before '@'"));
            }
            (Some(u.to_string()), r)
        }
        None => (None, t),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        if after.is_empty() {
            (h, None)
        } else {
            let p = after
                .strip_prefix(':')
                .ok_or_else(|| bad("unexpected text after ']'"))?;
            (h, Some(p))
        }
    } else {
        match rest.split_once(':') {
            // Exactly one colon: host:port. Several colons: a bare IPv6 address.
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            _ => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host name"));
    }
    if host.starts_with('-') {
        return Err(bad("host name must not start with '-'"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).map_err(|e| bad(&e))?),
    };
    Ok(Target {
        user,
        host: host.to_string(),
        port,
    })
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port {s:?} (expected 1-65535)")),
        Ok(p) => Ok(p),
    }
}

// ---------------------------------------------------------------------------
// Config evaluation
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ConfigSource {
    path: PathBuf,
    required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Proxy {
    Jump(Vec<String>),
    Command(String),
    Disabled,
}

/// Raw (unexpanded) values, first obtained wins.
#[derive(Debug, Default)]
struct Settings {
    hostname: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    identity_files: Vec<String>,
    certificate_files: Vec<String>,
    identities_only: Option<bool>,
    identity_agent: Option<String>,
    user_known_hosts: Option<Vec<String>>,
    global_known_hosts: Option<Vec<String>>,
    host_key_alias: Option<String>,
    proxy: Option<Proxy>,
    connect_timeout: Option<u64>,
    server_alive_interval: Option<u64>,
    server_alive_count_max: Option<u32>,
}

fn set_first<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

const MAX_INCLUDE_DEPTH: usize = 16;

struct Evaluator<'a> {
    host: &'a str,
    env: &'a LocalEnv,
    settings: Settings,
    /// Base for relative `Include` paths: `~/.ssh`, or `/etc/ssh` while reading
    /// the system-wide file (as OpenSSH does).
    include_base: PathBuf,
}

impl Evaluator<'_> {
    fn read_file(
        &mut self,
        path: &Path,
        required: bool,
        depth: usize,
        active: &mut bool,
    ) -> Result<(), SshConfigError> {
        let content = match std::fs::read(path) {
            Ok(c) => c,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(SshConfigError::Read {
                    file: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        };
        let text = String::from_utf8_lossy(&content);
        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            let syntax = |reason: String| SshConfigError::Syntax {
                file: path.to_path_buf(),
                line: lineno,
                reason,
            };
            let Some((keyword, args)) = split_line(raw).map_err(syntax)? else {
                continue;
            };
            let kw = keyword.to_ascii_lowercase();
            match kw.as_str() {
                "host" => {
                    if args.is_empty() {
                        return Err(syntax("Host needs at least one pattern".into()));
                    }
                    *active = host_patterns_match(&args, self.host);
                }
                "match" => {
                    if args.is_empty() {
                        return Err(syntax("Match needs criteria".into()));
                    }
                    // Match blocks are not evaluated (see module docs); only `Match all` applies.
                    *active = args.len() == 1
                        && args.first().is_some_and(|a| a.eq_ignore_ascii_case("all"));
                }
                "include" => {
                    if args.is_empty() {
                        return Err(syntax("Include needs a path".into()));
                    }
                    if !*active {
                        continue;
                    }
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(syntax(format!(
                            "Include nested deeper than {MAX_INCLUDE_DEPTH} levels"
                        )));
                    }
                    for arg in &args {
                        let expanded = expand_tilde(arg, self.env).map_err(syntax)?;
                        let full = if expanded.is_absolute() {
                            expanded
                        } else {
                            self.include_base.join(expanded)
                        };
                        for file in glob_paths(&full) {
                            let saved = *active;
                            self.read_file(&file, false, depth + 1, active)?;
                            *active = saved;
                        }
                    }
                }
                _ => self.keyword(&kw, &args, *active).map_err(syntax)?,
            }
        }
        Ok(())
    }

    /// Handles one ordinary keyword. Values are validated even in inactive blocks.
    fn keyword(&mut self, kw: &str, args: &[String], active: bool) -> Result<(), String> {
        let first = || -> Result<&String, String> {
            args.first()
                .ok_or_else(|| format!("{kw}: missing argument"))
        };
        let s = &mut self.settings;
        match kw {
            "hostname" => {
                let v = first()?.clone();
                if active {
                    set_first(&mut s.hostname, v);
                }
            }
            "port" => {
                let v = parse_port(first()?)?;
                if active {
                    set_first(&mut s.port, v);
                }
            }
            "user" => {
                let v = first()?.clone();
                if active {
                    set_first(&mut s.user, v);
                }
            }
            "identityfile" => {
                let v = first()?.clone();
                if active {
                    s.identity_files.push(v);
                }
            }
            "certificatefile" => {
                let v = first()?.clone();
                if active {
                    s.certificate_files.push(v);
                }
            }
            "identitiesonly" => {
                let v = parse_yes_no(kw, first()?)?;
                if active {
                    set_first(&mut s.identities_only, v);
                }
            }
            "identityagent" => {
                let v = first()?.clone();
                if active {
                    set_first(&mut s.identity_agent, v);
                }
            }
            "userknownhostsfile" | "globalknownhostsfile" => {
                first()?;
                let v = if args.len() == 1
                    && args.first().is_some_and(|a| a.eq_ignore_ascii_case("none"))
                {
                    Vec::new()
                } else {
                    args.to_vec()
                };
                if active {
                    if kw == "userknownhostsfile" {
                        set_first(&mut s.user_known_hosts, v);
                    } else {
                        set_first(&mut s.global_known_hosts, v);
                    }
                }
            }
            "hostkeyalias" => {
                let v = first()?.clone();
                if active {
                    set_first(&mut s.host_key_alias, v);
                }
            }
            "proxyjump" => {
                let v = first()?;
                let proxy = if v.eq_ignore_ascii_case("none") {
                    Proxy::Disabled
                } else {
                    let hops: Vec<String> = v.split(',').map(|h| h.trim().to_string()).collect();
                    if hops.iter().any(|h| h.is_empty()) {
                        return Err(format!("ProxyJump: empty hop in {v:?}"));
                    }
                    for h in &hops {
                        parse_target(h).map_err(|e| format!("ProxyJump: {e}"))?;
                    }
                    Proxy::Jump(hops)
                };
                if active {
                    set_first(&mut s.proxy, proxy);
                }
            }
            "proxycommand" => {
                first()?;
                let cmd = args.join(" ");
                let proxy = if cmd.eq_ignore_ascii_case("none") {
                    Proxy::Disabled
                } else {
                    Proxy::Command(cmd)
                };
                if active {
                    set_first(&mut s.proxy, proxy);
                }
            }
            "connecttimeout" => {
                let v = first()?;
                let secs = if v.eq_ignore_ascii_case("none") {
                    0
                } else {
                    parse_seconds(kw, v)?
                };
                if active {
                    set_first(&mut s.connect_timeout, secs);
                }
            }
            "serveraliveinterval" => {
                let v = parse_seconds(kw, first()?)?;
                if active {
                    set_first(&mut s.server_alive_interval, v);
                }
            }
            "serveralivecountmax" => {
                let v = first()?;
                let n: u32 = v
                    .parse()
                    .map_err(|_| format!("ServerAliveCountMax: invalid number {v:?}"))?;
                if active {
                    set_first(&mut s.server_alive_count_max, n);
                }
            }
            _ => {} // unknown or irrelevant keyword: ignored
        }
        Ok(())
    }
}

fn parse_yes_no(kw: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("{kw}: expected yes or no, got {v:?}")),
    }
}

/// OpenSSH time format: plain seconds or a sequence like `1m30s` (s, m, h, d, w).
fn parse_seconds(kw: &str, v: &str) -> Result<u64, String> {
    let err = || format!("{kw}: invalid time {v:?}");
    if let Ok(n) = v.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mult: u64 = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(err()),
        };
        let n: u64 = num.parse().map_err(|_| err())?;
        total = total
            .checked_add(n.checked_mul(mult).ok_or_else(err)?)
            .ok_or_else(err)?;
        num.clear();
    }
    if !num.is_empty() {
        let n: u64 = num.parse().map_err(|_| err())?;
        total = total.checked_add(n).ok_or_else(err)?;
    }
    Ok(total)
}

/// Split one config line into keyword and arguments. `Ok(None)` for blank and comment lines.
fn split_line(raw: &str) -> Result<Option<(String, Vec<String>)>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let kw_end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(kw_end);
    let mut rest = rest.trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let args = tokenize(rest)?;
    Ok(Some((keyword.to_string(), args)))
}

/// Split arguments on whitespace, honouring double and single quotes and
/// backslash escapes of quotes/backslashes. An unquoted `#` at the start of a
/// token starts a comment.
fn tokenize(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                } else if c == '\\' && chars.peek().is_some_and(|n| *n == q || *n == '\\') {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else {
                    cur.push(c);
                }
            }
            None => {
                if c.is_whitespace() {
                    if in_token {
                        out.push(std::mem::take(&mut cur));
                        in_token = false;
                    }
                } else if c == '#' && !in_token {
                    break;
                } else if c == '"' || c == '\'' {
                    quote = Some(c);
                    in_token = true;
                } else if c == '\\'
                    && chars
                        .peek()
                        .is_some_and(|n| *n == '"' || *n == '\'' || *n == '\\')
                {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                    in_token = true;
                } else {
                    cur.push(c);
                    in_token = true;
                }
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_token {
        out.push(cur);
    }
    Ok(out)
}

/// `*`/`?` wildcard match, ASCII case-insensitive.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    wildcard_match_impl(pattern, text, true)
}

fn wildcard_match_impl(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    let norm = |c: char| {
        if case_insensitive {
            c.to_ascii_lowercase()
        } else {
            c
        }
    };
    let p: Vec<char> = pattern.chars().map(norm).collect();
    let t: Vec<char> = text.chars().map(norm).collect();
    // Iterative matcher with single-star backtracking (linear in practice).
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(pc) if *pc == '?' || Some(pc) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.iter().skip(pi).all(|c| *c == '*')
}

/// A list of patterns (each may start with `!`) matches when some positive
/// pattern matches and no negated one does.
pub(crate) fn pattern_list_match<S: AsRef<str>>(patterns: &[S], text: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        let p = p.as_ref();
        if let Some(neg) = p.strip_prefix('!') {
            if wildcard_match(neg, text) {
                return false;
            }
        } else if wildcard_match(p, text) {
            matched = true;
        }
    }
    matched
}

fn host_patterns_match(patterns: &[String], host: &str) -> bool {
    // Host lines may also use comma-separated lists inside a token.
    let flat: Vec<&str> = patterns
        .iter()
        .flat_map(|p| p.split(','))
        .filter(|p| !p.is_empty())
        .collect();
    pattern_list_match(&flat, host)
}

fn expand_tilde(s: &str, env: &LocalEnv) -> Result<PathBuf, String> {
    if s == "~" {
        return Ok(env.home.clone());
    }
    if let Some(rest) = s.strip_prefix("~/") {
        return Ok(env.home.join(rest));
    }
    if let Some(rest) = s.strip_prefix('~') {
        let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let home = passwd_home_for_user(user).ok_or_else(|| format!("unknown user in {s:?}"))?;
        return Ok(if tail.is_empty() {
            home
        } else {
            home.join(tail)
        });
    }
    Ok(PathBuf::from(s))
}

/// Expand `*`/`?` in any component of an absolute path (sorted, like glob(3)).
fn glob_paths(path: &Path) -> Vec<PathBuf> {
    let has_glob = |s: &str| s.contains('*') || s.contains('?');
    let Some(s) = path.to_str() else {
        return vec![path.to_path_buf()];
    };
    if !has_glob(s) {
        return if path.is_file() {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let mut current: Vec<PathBuf> = vec![PathBuf::from("/")];
    for comp in path.components().skip(1) {
        let comp = comp.as_os_str().to_string_lossy().to_string();
        let mut next = Vec::new();
        for base in &current {
            if has_glob(&comp) {
                let Ok(rd) = std::fs::read_dir(base) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| !n.starts_with('.') || comp.starts_with('.'))
                    .filter(|n| wildcard_match_impl(&comp, n, false))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| base.join(n)));
            } else {
                next.push(base.join(&comp));
            }
        }
        current = next;
    }
    current.into_iter().filter(|p| p.is_file()).collect()
}

struct TokenCtx<'a> {
    env: &'a LocalEnv,
    host: &'a str,
    alias: &'a str,
    port: u16,
    user: &'a str,
}

fn expand_tokens(s: &str, ctx: &TokenCtx<'_>, what: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('d') => out.push_str(&ctx.env.home.to_string_lossy()),
            Some('h') => out.push_str(ctx.host),
            Some('n') => out.push_str(ctx.alias),
            Some('p') => out.push_str(&ctx.port.to_string()),
            Some('r') => out.push_str(ctx.user),
            Some('u') => out.push_str(&ctx.env.local_user),
            Some('l') => out.push_str(&ctx.env.local_hostname),
            Some('L') => out.push_str(ctx.env.local_hostname.split('.').next().unwrap_or_default()),
            Some('i') => match ctx.env.uid {
                Some(uid) => out.push_str(&uid.to_string()),
                None => return Err(format!("{what}: cannot determine the local uid for %i")),
            },
            Some(other) => return Err(format!("{what}: unsupported token %{other} in {s:?}")),
            None => return Err(format!("{what}: trailing '%' in {s:?}")),
        }
    }
    Ok(out)
}

fn expand_path(s: &str, ctx: &TokenCtx<'_>, what: &str) -> Result<PathBuf, String> {
    let tokens = expand_tokens(s, ctx, what)?;
    expand_tilde(&tokens, ctx.env)
}

fn resolve_with(
    target: &str,
    files: &[ConfigSource],
    env: &LocalEnv,
) -> Result<HostParams, SshConfigError> {
    let t = parse_target(target)?;
    let mut ev = Evaluator {
        host: &t.host,
        env,
        settings: Settings::default(),
        include_base: env.home.join(".ssh"),
    };
    for src in files {
        ev.include_base = if src.path.starts_with("/etc/ssh") {
            PathBuf::from("/etc/ssh")
        } else {
            env.home.join(".ssh")
        };
        let mut active = true;
        ev.read_file(&src.path, src.required, 0, &mut active)?;
    }
    let s = ev.settings;
    let env_err = |m: String| SshConfigError::Environment(m);

    let port = t.port.or(s.port).unwrap_or(22);
    let user = t
        .user
        .clone()
        .or(s.user.clone())
        .unwrap_or_else(|| env.local_user.clone());
    // HostName may itself contain %h (the original host) and %%.
    let hostname = match &s.hostname {
        Some(h) => {
            let ctx = TokenCtx {
                env,
                host: &t.host,
                alias: &t.host,
                port,
                user: &user,
            };
            expand_tokens(h, &ctx, "HostName").map_err(env_err)?
        }
        None => t.host.clone(),
    };
    let ctx = TokenCtx {
        env,
        host: &hostname,
        alias: &t.host,
        port,
        user: &user,
    };

    let mut identity_files = Vec::new();
    for f in &s.identity_files {
        let p = expand_path(f, &ctx, "IdentityFile").map_err(env_err)?;
        if !identity_files.contains(&p) {
            identity_files.push(p);
        }
    }
    if identity_files.is_empty() {
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let p = env.home.join(".ssh").join(name);
            if !env.check_default_identities_exist || p.is_file() {
                identity_files.push(p);
            }
        }
    }
    let mut certificate_files = Vec::new();
    for f in &s.certificate_files {
        certificate_files.push(expand_path(f, &ctx, "CertificateFile").map_err(env_err)?);
    }

    let (identity_agent, use_agent) = match s.identity_agent.as_deref() {
        Some(v) if v.eq_ignore_ascii_case("none") => (None, false),
        Some("SSH_AUTH_SOCK") => (
            env.ssh_auth_sock.as_ref().map(PathBuf::from),
            env.ssh_auth_sock.is_some(),
        ),
        Some(v) if v.starts_with('$') => {
            let name = v
                .trim_start_matches('$')
                .trim_start_matches('{')
                .trim_end_matches('}');
            let val = env.var(name).filter(|x| !x.is_empty()).map(PathBuf::from);
            let ok = val.is_some();
            (val, ok)
        }
        Some(v) => (
            Some(expand_path(v, &ctx, "IdentityAgent").map_err(env_err)?),
            true,
        ),
        None => (
            env.ssh_auth_sock.as_ref().map(PathBuf::from),
            env.ssh_auth_sock.is_some(),
        ),
    };

    let user_kh = s.user_known_hosts.clone().unwrap_or_else(|| {
        vec![
            "~/.ssh/known_hosts".to_string(),
            "~/.ssh/known_hosts2".to_string(),
        ]
    });
    let global_kh = s.global_known_hosts.clone().unwrap_or_else(|| {
        vec![
            "/etc/ssh/ssh_known_hosts".to_string(),
            "/etc/ssh/ssh_known_hosts2".to_string(),
        ]
    });
    let mut known_hosts_files = Vec::new();
    for f in user_kh.iter().chain(global_kh.iter()) {
        let p = expand_path(f, &ctx, "KnownHostsFile").map_err(env_err)?;
        if !known_hosts_files.contains(&p) {
            known_hosts_files.push(p);
        }
    }

    let (proxy_jump, proxy_command) = match s.proxy {
        Some(Proxy::Jump(h)) => (h, None),
        Some(Proxy::Command(c)) => (Vec::new(), Some(c)),
        Some(Proxy::Disabled) | None => (Vec::new(), None),
    };
    let host_key_alias = match &s.host_key_alias {
        Some(a) => Some(expand_tokens(a, &ctx, "HostKeyAlias").map_err(env_err)?),
        None => None,
    };

    Ok(HostParams {
        alias: t.host.clone(),
        hostname,
        port,
        user,
        identity_files,
        certificate_files,
        identities_only: s.identities_only.unwrap_or(false),
        identity_agent,
        use_agent,
        known_hosts_files,
        host_key_alias,
        proxy_jump,
        proxy_command,
        connect_timeout: s
            .connect_timeout
            .filter(|n| *n > 0)
            .map(Duration::from_secs),
        server_alive_interval: s
            .server_alive_interval
            .filter(|n| *n > 0)
            .map(Duration::from_secs),
        server_alive_count_max: s.server_alive_count_max.unwrap_or(3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolve `target` with one required config file and a fake home.
    fn resolve_in(target: &str, path: PathBuf, home: &Path) -> Result<HostParams, SshConfigError> {
        resolve_with(
            target,
            &[ConfigSource {
                path,
                required: true,
            }],
            &env(home),
        )
    }
    use std::io::Write;

    fn env(home: &Path) -> LocalEnv {
        LocalEnv {
            home: home.to_path_buf(),
            local_user: "localme".into(),
            uid: Some(1000),
            local_hostname: "ws.example.org".into(),
            ssh_auth_sock: Some("/tmp/agent.sock".into()),
            vars: vec![("MYSOCK".into(), "/run/my.sock".into())],
            check_default_identities_exist: false,
        }
    }

    fn with_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".ssh")).unwrap();
        let p = dir.path().join(".ssh").join("config");
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        (dir, p)
    }

    fn res(text: &str, target: &str) -> HostParams {
        let (dir, p) = with_config(text);
        resolve_in(target, p, dir.path()).unwrap()
    }

    fn res_err(text: &str, target: &str) -> SshConfigError {
        let (dir, p) = with_config(text);
        resolve_in(target, p, dir.path()).unwrap_err()
    }

    #[test]
    fn defaults_without_matching_block() {
        let (dir, p) = with_config("Host other\n  Port 1\n");
        let h = resolve_in("plain.example", p, dir.path()).unwrap();
        assert_eq!(h.alias, "plain.example");
        assert_eq!(h.hostname, "plain.example");
        assert_eq!(h.port, 22);
        assert_eq!(h.user, "localme");
        let ssh = dir.path().join(".ssh");
        assert_eq!(
            h.identity_files,
            vec![
                ssh.join("id_ed25519"),
                ssh.join("id_ecdsa"),
                ssh.join("id_rsa")
            ]
        );
        assert_eq!(h.known_hosts_files.first(), Some(&ssh.join("known_hosts")));
        assert!(
            h.known_hosts_files
                .contains(&PathBuf::from("/etc/ssh/ssh_known_hosts"))
        );
        assert_eq!(h.identity_agent, Some(PathBuf::from("/tmp/agent.sock")));
        assert!(h.use_agent);
        assert!(!h.identities_only);
        assert!(h.proxy_jump.is_empty());
        assert_eq!(h.proxy_command, None);
        assert_eq!(h.connect_timeout, None);
        assert_eq!(h.server_alive_interval, None);
        assert_eq!(h.server_alive_count_max, 3);
    }

    #[test]
    fn missing_default_config_is_fine_but_explicit_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = env(dir.path());
        let missing = dir.path().join("nope");
        let h = resolve_with(
            "h",
            &[ConfigSource {
                path: missing.clone(),
                required: false,
            }],
            &e,
        )
        .unwrap();
        assert_eq!(h.hostname, "h");
        let err = resolve_with(
            "h",
            &[ConfigSource {
                path: missing,
                required: true,
            }],
            &e,
        )
        .unwrap_err();
        assert!(matches!(err, SshConfigError::Read { .. }), "{err}");
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn first_value_wins() {
        let h = res(
            "Host cluster\n  HostName login1.example\n  User alice\n  Port 2200\n\
             Host cluster\n  HostName login2.example\n  User bob\n\
             Host *\n  User carol\n  Port 2222\n  ServerAliveInterval 30\n",
            "cluster",
        );
        assert_eq!(h.hostname, "login1.example");
        assert_eq!(h.user, "alice");
        assert_eq!(h.port, 2200);
        assert_eq!(h.server_alive_interval, Some(Duration::from_secs(30)));
        // Global defaults before any Host line also win.
        let h = res("User early\nHost x\n  User late\n", "x");
        assert_eq!(h.user, "early");
    }

    #[test]
    fn wildcard_and_negation() {
        let cfg = "Host !bastion.example *.example\n  User wild\n\
                   Host node?? \n  Port 2022\n\
                   Host *\n  User fallback\n";
        assert_eq!(res(cfg, "login.example").user, "wild");
        assert_eq!(res(cfg, "LOGIN.EXAMPLE").user, "wild");
        assert_eq!(res(cfg, "bastion.example").user, "fallback");
        assert_eq!(res(cfg, "node01").port, 2022);
        assert_eq!(res(cfg, "node1").port, 22);
        assert_eq!(res(cfg, "node001").port, 22);
        // Negation alone never matches.
        assert_eq!(res("Host !foo\n User x\n", "bar").user, "localme");
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("c?uster*", "cluster-a"));
    }

    #[test]
    fn targets_with_user_and_port() {
        let cfg = "Host cluster\n  HostName login.example\n  User cfguser\n  Port 2200\n";
        let h = res(cfg, "me@cluster:2022");
        assert_eq!(
            (
                h.alias.as_str(),
                h.hostname.as_str(),
                h.user.as_str(),
                h.port
            ),
            ("cluster", "login.example", "me", 2022)
        );
        let h = res(cfg, "cluster");
        assert_eq!((h.user.as_str(), h.port), ("cfguser", 2200));
        let h = res(cfg, "ssh://x@cluster");
        assert_eq!((h.user.as_str(), h.port), ("x", 2200));
        let h = res(cfg, "u@[::1]:2222");
        assert_eq!(
            (h.hostname.as_str(), h.port, h.user.as_str()),
            ("::1", 2222, "u")
        );
        let h = res(cfg, "fe80::1");
        assert_eq!((h.hostname.as_str(), h.port), ("fe80::1", 22));
        let h = res(cfg, "a@b@host");
        assert_eq!((h.user.as_str(), h.hostname.as_str()), ("a@b", "host"));
        assert!(matches!(
            res_err(cfg, "host:99999"),
            SshConfigError::BadTarget { .. }
        ));
        assert!(matches!(
            res_err(cfg, "host:0"),
            SshConfigError::BadTarget { .. }
        ));
        assert!(matches!(
            res_err(cfg, "@host"),
            SshConfigError::BadTarget { .. }
        ));
        assert!(matches!(res_err(cfg, ""), SshConfigError::BadTarget { .. }));
        assert!(matches!(
            res_err(cfg, "-oProxyCommand=x"),
            SshConfigError::BadTarget { .. }
        ));
        assert!(matches!(
            res_err(cfg, "a b"),
            SshConfigError::BadTarget { .. }
        ));
    }

    #[test]
    fn identity_files_multiple_and_expanded() {
        let h = res(
            "Host c\n  User bob\n  IdentityFile ~/.ssh/id_c\n  IdentityFile %d/keys/%r@%h_%p\n  IdentitiesOnly yes\n\
             Host *\n  IdentityFile \"/abs/with space\"\n  IdentityFile ~/.ssh/id_c\n",
            "c:2022",
        );
        let home = h
            .identity_files
            .first()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        assert_eq!(
            h.identity_files,
            vec![
                home.join(".ssh/id_c"),
                home.join("keys/bob@c_2022"),
                PathBuf::from("/abs/with space"),
            ]
        );
        assert!(h.identities_only);
        assert!(matches!(
            res_err("IdentityFile ~/%C\n", "c"),
            SshConfigError::Environment(_)
        ));
    }

    #[test]
    fn proxy_jump_list_and_none() {
        let h = res("Host c\n  ProxyJump alice@bastion1:2200,bastion2\n", "c");
        assert_eq!(
            h.proxy_jump,
            vec!["alice@bastion1:2200".to_string(), "bastion2".to_string()]
        );
        let h = res(
            "Host bastion*\n  ProxyJump none\nHost *\n  ProxyJump gw\n",
            "bastion1",
        );
        assert!(h.proxy_jump.is_empty());
        assert_eq!(
            res("Host *\n  ProxyJump gw\n", "x").proxy_jump,
            vec!["gw".to_string()]
        );
        // First of ProxyCommand/ProxyJump wins.
        let h = res("ProxyCommand ssh -W %h:%p gw\nProxyJump other\n", "x");
        assert_eq!(h.proxy_command.as_deref(), Some("ssh -W %h:%p gw"));
        assert!(h.proxy_jump.is_empty());
        assert!(matches!(
            res_err("ProxyJump a,,b\n", "x"),
            SshConfigError::Syntax { line: 1, .. }
        ));
    }

    #[test]
    fn equals_syntax_quotes_and_case() {
        let h = res(
            "HOST=c\n  hostname=login.example\n  Port = 2022\n  USER \"quoted user\"\n  ConnectTimeout=1m5s\n",
            "c",
        );
        assert_eq!(h.hostname, "login.example");
        assert_eq!(h.port, 2022);
        assert_eq!(h.user, "quoted user");
        assert_eq!(h.connect_timeout, Some(Duration::from_secs(65)));
    }

    #[test]
    fn comments_and_blank_lines() {
        let h = res(
            "# leading comment\n\n   # indented comment\nHost c # trailing comment\n  User u # another\n\tPort 2200\n",
            "c",
        );
        assert_eq!(h.user, "u");
        assert_eq!(h.port, 2200);
    }

    #[test]
    fn syntax_errors_carry_file_and_line() {
        let err = res_err("Host c\n  Port nope\n", "c");
        match &err {
            SshConfigError::Syntax { line, .. } => assert_eq!(*line, 2),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("config"), "{err}");
        assert!(matches!(
            res_err("User \"unterminated\n", "c"),
            SshConfigError::Syntax { line: 1, .. }
        ));
        assert!(matches!(
            res_err("Host\n", "c"),
            SshConfigError::Syntax { .. }
        ));
        assert!(matches!(
            res_err("IdentitiesOnly maybe\n", "c"),
            SshConfigError::Syntax { .. }
        ));
    }

    #[test]
    fn match_blocks_are_skipped_except_match_all() {
        let h = res(
            "Match host c exec \"true\"\n  User frommatch\n  Port 1\nHost c\n  User fromhost\nMatch all\n  Port 2022\n",
            "c",
        );
        assert_eq!(h.user, "fromhost");
        assert_eq!(h.port, 2022);
    }

    #[test]
    fn include_relative_glob_and_scoping() {
        let (dir, p) = with_config(
            "Include conf.d/*.conf\nHost other\n  Include never.conf\nHost c\n  Port 2200\n",
        );
        let ssh = dir.path().join(".ssh");
        std::fs::create_dir_all(ssh.join("conf.d")).unwrap();
        std::fs::write(ssh.join("conf.d/10-a.conf"), "Host c\n  User inc_a\n").unwrap();
        std::fs::write(
            ssh.join("conf.d/20-b.conf"),
            "Host c\n  User inc_b\n  HostName from-b\n",
        )
        .unwrap();
        std::fs::write(ssh.join("never.conf"), "Port 9\n").unwrap();
        let h = resolve_in("c", p, dir.path()).unwrap();
        assert_eq!(h.user, "inc_a");
        assert_eq!(h.hostname, "from-b");
        // Host state from the included file does not leak: "Host other" applies afterwards,
        // and Port comes from the outer "Host c".
        assert_eq!(h.port, 2200);
    }

    #[test]
    fn agent_and_known_hosts_options() {
        let h = res("IdentityAgent none\n", "c");
        assert!(!h.use_agent);
        assert_eq!(h.identity_agent, None);
        let h = res("IdentityAgent $MYSOCK\n", "c");
        assert_eq!(h.identity_agent, Some(PathBuf::from("/run/my.sock")));
        assert!(h.use_agent);
        let h = res("IdentityAgent $UNSET_VAR\n", "c");
        assert!(!h.use_agent);
        let h = res("IdentityAgent ~/agent.sock\n", "c");
        assert!(h.identity_agent.unwrap().ends_with("agent.sock"));
        let h = res(
            "UserKnownHostsFile /a/kh ~/b_%h\nGlobalKnownHostsFile none\n",
            "c",
        );
        assert_eq!(h.known_hosts_files.len(), 2);
        assert_eq!(h.known_hosts_files.first(), Some(&PathBuf::from("/a/kh")));
        assert!(h.known_hosts_files.get(1).unwrap().ends_with("b_c"));
        let h = res(
            "HostKeyAlias cluster-%h\nServerAliveInterval 0\nServerAliveCountMax 5\n",
            "c",
        );
        assert_eq!(h.host_key_alias.as_deref(), Some("cluster-c"));
        assert_eq!(h.server_alive_interval, None);
        assert_eq!(h.server_alive_count_max, 5);
    }

    #[test]
    fn hostname_tokens() {
        let h = res("Host *.short\n  HostName %h.example.org\n", "n1.short");
        assert_eq!(h.hostname, "n1.short.example.org");
    }

    #[test]
    fn tokenizer() {
        assert_eq!(
            tokenize(r#"a "b c" 'd e' f\"g"#).unwrap(),
            vec!["a", "b c", "d e", "f\"g"]
        );
        assert_eq!(tokenize("a #comment").unwrap(), vec!["a"]);
        assert_eq!(tokenize("a#b").unwrap(), vec!["a#b"]);
        assert!(tokenize("\"x").is_err());
    }
}
