//! The one error type of tgknock, and how each kind maps to an exit code.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::base::addr::Cidr;
use crate::base::gate::GateName;

/// Everything that can go wrong, with the context a user needs to act on it.
#[derive(Debug)]
pub(crate) enum Error {
    /// Bad command-line use (exit 2): the argument, when one is to blame, and what is wrong.
    Usage {
        argument: Option<&'static str>,
        problem: String,
    },
    /// A configuration key is wrong or missing (exit 2): the key, where it was set, and
    /// what is wrong with it.
    Config {
        key: &'static str,
        place: Option<String>,
        problem: String,
    },
    /// A `TGKNOCK_*` key that does not exist (exit 2), with the known key nearest to it.
    UnknownKey {
        key: String,
        place: String,
        nearest: Option<&'static str>,
    },
    /// The config file cannot be read (exit 2).
    ConfigFile { path: PathBuf, source: io::Error },
    /// A line of the config file is not `KEY=VALUE` (exit 2).
    ConfigSyntax {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    /// A file or directory tgknock refuses to use (exit 2).
    Unsafe { path: PathBuf, problem: Unsafe },
    /// A file could not be read or written.
    File {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// A firewall tool could not be started or exited with an error; carries its stderr.
    Firewall {
        program: String,
        arguments: Vec<String>,
        status: Option<i32>,
        stderr: String,
    },
    /// The firewall, read back after a change, does not show what was asked for: where
    /// (`IPv4 chain TGKNOCK`), and what it shows instead.
    Verify { place: String, shows: String },
    /// The rules could not be read back: where, and what the tool said.
    Unreadable { place: String, problem: String },
    /// Telegram rejected the bot token (exit 3).
    TokenRejected(ApiError),
    /// A Telegram request failed (network, timeout, HTTP or API error).
    Telegram(ApiError),
    /// A gate already has as many openings as it can take.
    TooManyOpenings { gate: GateName, max: usize },
    /// There are as many bans as tgknock keeps.
    TooManyBans { max: usize },
    /// A ban would overlap another one (`other`, banned until `until`).
    BanOverlaps {
        addr: Cidr,
        other: Cidr,
        until: Option<u64>,
    },
    /// Another daemon holds the pid file's lock.
    AlreadyRunning { pid: Option<u32>, pid_file: PathBuf },
    /// A program or thread could not be started.
    Spawn { what: String, source: io::Error },
    /// A daemon the watchdog started exited at once.
    DaemonExited {
        program: PathBuf,
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    /// A hung daemon did not die when killed.
    Unkillable { pid: u32 },
}

/// Why a file or directory is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsafe {
    /// A symbolic link where tgknock keeps its own files.
    Link,
    /// Something else than a regular file.
    NotAFile,
    NotADirectory,
    /// A directory others can write to (its mode).
    WritableByGroup(u32),
    WritableByEveryone(u32),
    /// A file others can write to (its mode), where only its owner may.
    FileWritableByGroup(u32),
    FileWritableByEveryone(u32),
    /// A file or directory that is not root's (its owner), where only root's is trusted.
    NotRoots(u32),
    /// A file with more than one name (its link count): a hard link planted there.
    HardLinked(u64),
}

impl Error {
    /// The process exit code of the contract: 1 runtime, 2 usage/config, 3 token.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. }
            | Error::Config { .. }
            | Error::UnknownKey { .. }
            | Error::ConfigFile { .. }
            | Error::ConfigSyntax { .. }
            | Error::Unsafe { .. } => 2,
            Error::TokenRejected(_) => 3,
            _ => 1,
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Error {
        Error::File {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn usage(argument: &'static str, problem: impl Into<String>) -> Error {
        Error::Usage {
            argument: Some(argument),
            problem: problem.into(),
        }
    }

    /// A configuration error about `key`, set nowhere in particular.
    pub(crate) fn config(key: &'static str, problem: impl Into<String>) -> Error {
        Error::Config {
            key,
            place: None,
            problem: problem.into(),
        }
    }
}

/// A Telegram error: the token's rejection (401, or 404 for a token of no bot) is its own
/// kind, the exit-3 one; everything else is a failed request.
impl From<ApiError> for Error {
    fn from(e: ApiError) -> Error {
        if e.is_token_rejected() {
            Error::TokenRejected(e)
        } else {
            Error::Telegram(e)
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage { argument, problem } => match argument {
                Some(a) => write!(f, "{a}: {problem}"),
                None => write!(f, "{problem}"),
            },
            Error::Config {
                key,
                place,
                problem,
            } => fmt_config(key, place.as_deref(), problem, f),
            Error::UnknownKey {
                key,
                place,
                nearest,
            } => fmt_unknown_key(key, place, *nearest, f),
            Error::ConfigFile { path, source } => write!(
                f,
                "configuration: cannot read config file {}: {source}",
                path.display()
            ),
            Error::ConfigSyntax {
                path,
                line,
                problem,
            } => write!(
                f,
                "configuration: {}: line {line}: {problem}",
                path.display()
            ),
            Error::Unsafe { path, problem } => problem.fmt_for(&path.display(), f),
            Error::Firewall {
                program,
                arguments,
                status,
                stderr,
            } => fmt_firewall(program, arguments, *status, stderr, f),
            Error::BanOverlaps { addr, other, until } => fmt_overlap(addr, other, *until, f),
            Error::File {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            Error::Verify { place, shows } => write!(
                f,
                "firewall check after the change failed: {place} does not hold the rules just written (it shows: {shows})"
            ),
            Error::Unreadable { place, problem } => write!(f, "cannot read {place}: {problem}"),
            Error::TokenRejected(e) => write!(f, "Telegram rejected the bot token: {e}"),
            Error::Telegram(e) => write!(f, "Telegram: {e}"),
            Error::TooManyOpenings { gate, max } => {
                write!(f, "{gate} already has {max} openings; close it first")
            }
            Error::TooManyBans { max } => {
                write!(f, "there are already {max} bans; lift some first")
            }
            Error::AlreadyRunning { pid, pid_file } => fmt_running(*pid, pid_file, f),
            Error::Spawn { what, source } => write!(f, "cannot start {what}: {source}"),
            Error::DaemonExited {
                program,
                status,
                log,
            } => write!(
                f,
                "started `{} run`, but it exited at once ({status}); see {}",
                program.display(),
                log.display()
            ),
            Error::Unkillable { pid } => {
                write!(f, "the daemon (pid {pid}) did not die after SIGKILL")
            }
        }
    }
}

/// A setting that is wrong: the key, where it was set, and what is wrong.
fn fmt_config(
    key: &str,
    place: Option<&str>,
    problem: &str,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    write!(f, "configuration: {key}")?;
    if let Some(p) = place {
        write!(f, " (from {p})")?;
    }
    write!(f, ": {problem}")
}

/// A key the table does not know, and the nearest one it does.
fn fmt_unknown_key(
    key: &str,
    place: &str,
    nearest: Option<&str>,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    write!(f, "configuration: unknown key {key} in {place}")?;
    if let Some(k) = nearest {
        write!(f, "; did you mean {k}?")?;
    }
    Ok(())
}

/// Another daemon holds the pid file's lock: its pid when it is known.
fn fmt_running(pid: Option<u32>, pid_file: &Path, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match pid {
        Some(pid) => write!(
            f,
            "another tgknock daemon is running (pid {pid}); stop it first"
        ),
        None => write!(
            f,
            "another tgknock daemon holds {}; stop it first",
            pid_file.display()
        ),
    }
}

/// A firewall tool that failed: the command, its exit code and what it said.
fn fmt_firewall(
    program: &str,
    arguments: &[String],
    status: Option<i32>,
    stderr: &str,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    write!(f, "`{program}")?;
    for a in arguments {
        write!(f, " {a}")?;
    }
    match status {
        Some(code) => write!(f, "` failed with exit code {code}")?,
        None => write!(f, "` failed")?,
    }
    let stderr = stderr.trim();
    if !stderr.is_empty() {
        write!(f, ": {stderr}")?;
    }
    Ok(())
}

/// A ban that overlaps one in force.
fn fmt_overlap(
    addr: &Cidr,
    other: &Cidr,
    until: Option<u64>,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    let until = match until {
        Some(u) => format!("until {}", crate::base::duration::utc_full(u)),
        None => "until lifted".to_string(),
    };
    if other.prefix() < addr.prefix() {
        write!(
            f,
            "{addr} is inside {other}, which is banned already ({until}); bans cannot overlap: to change how long, ban {other} again"
        )
    } else {
        write!(
            f,
            "{addr} holds {other}, which is banned on its own ({until}); bans cannot overlap: unban {other} first"
        )
    }
}

impl Unsafe {
    /// What is unsafe about `p`, and the command that mends it.
    fn fmt_for(&self, p: &dyn fmt::Display, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problem = self;
        match problem {
            Unsafe::Link => write!(
                f,
                "{p} is a symbolic link; tgknock never follows links in its directories: remove it"
            ),
            Unsafe::NotAFile => write!(
                f,
                "{p} is not a regular file (a FIFO, device or directory); tgknock uses only plain files there: remove it"
            ),
            Unsafe::HardLinked(n) => write!(
                f,
                "{p} has {n} names (a hard link to another file); tgknock never reads, writes or hands over a file with more than one name: remove it"
            ),
            Unsafe::NotRoots(uid) => write!(
                f,
                "{p} is not owned by root (owner uid {uid}): run as root from PAM, tgknock takes its settings only from a file and directory that root owns; run: chown root {p}"
            ),
            Unsafe::FileWritableByGroup(mode) | Unsafe::FileWritableByEveryone(mode) => {
                write!(
                    f,
                    "{p} is writable by {} (mode {mode:04o}): another user could change tgknock's settings; run: chmod go-w {p}",
                    if matches!(problem, Unsafe::FileWritableByEveryone(_)) {
                        "everyone"
                    } else {
                        "its group"
                    }
                )
            }
            Unsafe::NotADirectory => write!(f, "{p} is not a directory"),
            Unsafe::WritableByGroup(mode) | Unsafe::WritableByEveryone(mode) => write!(
                f,
                "the directory {p} is writable by {} (mode {mode:04o}): another user could replace tgknock's files; run: chmod go-w {p}",
                if matches!(problem, Unsafe::WritableByEveryone(_)) {
                    "everyone"
                } else {
                    "its group"
                }
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::File { source, .. }
            | Error::ConfigFile { source, .. }
            | Error::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Bot API responses larger than this are refused (a full batch of 100 long messages is
/// far less).
pub(crate) const BODY_LIMIT: u64 = 4 * 1024 * 1024;

/// A failed request, classified the way the daemon's retry logic needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// Connecting, resolving, reading or writing failed.
    Network(String),
    /// The request hit its timeout.
    Timeout,
    /// TLS failed; `clock` when the certificate looked expired or not yet valid: what
    /// the system clock said then.
    Tls { message: String, clock: Option<u64> },
    /// Telegram (or something in between) answered with an error.
    Http {
        status: u16,
        description: String,
        retry_after: Option<u64>,
    },
    /// The answer was not the JSON the Bot API sends.
    Malformed(String),
    /// The answer was larger than the Bot API client's body limit.
    TooLarge,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Network(m) => write!(f, "network error: {m}"),
            ApiError::Timeout => write!(f, "request timed out"),
            ApiError::Tls { message, clock } => {
                write!(f, "TLS error: {message}")?;
                if let Some(said) = clock {
                    write!(
                        f,
                        " (the certificate looks expired or not yet valid: is the system clock right? it says {})",
                        crate::base::duration::utc_full(*said)
                    )?;
                }
                Ok(())
            }
            ApiError::Http {
                status,
                description,
                retry_after,
            } => {
                write!(f, "HTTP {status}: {description}")?;
                if let Some(r) = retry_after {
                    write!(f, " (retry after {r} s)")?;
                }
                Ok(())
            }
            ApiError::Malformed(m) => write!(f, "malformed response: {m}"),
            ApiError::TooLarge => write!(f, "response larger than {} bytes", BODY_LIMIT),
        }
    }
}

impl ApiError {
    /// Telegram rejected the token: 401 Unauthorized, or 404 for a token of no bot.
    pub(crate) fn is_token_rejected(&self) -> bool {
        matches!(
            self,
            ApiError::Http {
                status: 401 | 404,
                ..
            }
        )
    }

    /// Telegram no longer takes an answer to a button press: it waited too long, or it
    /// was answered already.
    pub(crate) fn is_query_too_old(&self) -> bool {
        matches!(self, ApiError::Http { status: 400, description, .. }
            if description.contains("query is too old") || description.contains("query ID is invalid"))
    }

    /// An edit that would change nothing (a Refresh of an unchanged state).
    pub(crate) fn is_not_modified(&self) -> bool {
        matches!(self, ApiError::Http { status: 400, description, .. }
            if description.contains("message is not modified"))
    }
}
