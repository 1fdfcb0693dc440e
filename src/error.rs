//! The one error type of tgknock, and how each kind maps to an exit code.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong, with the context a user needs to act on it.
#[derive(Debug)]
pub enum Error {
    /// Bad command-line use (exit 2).
    Usage(String),
    /// A configuration key or file is wrong or missing (exit 2); the message names it.
    Config(String),
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
    /// The firewall, read back after a change, does not show what was asked for.
    Verify(String),
    /// Telegram rejected the bot token (exit 3).
    TokenRejected(String),
    /// A Telegram request failed (network, timeout, HTTP or API error).
    Telegram(String),
    /// Any other runtime failure (another daemon running, a lock, a restart).
    Runtime(String),
}

impl Error {
    /// The process exit code of the contract: 1 runtime, 2 usage/config, 3 token.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            Error::TokenRejected(_) => 3,
            _ => 1,
        }
    }

    pub fn file(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Error {
        Error::File {
            path: path.into(),
            action,
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "{m}"),
            Error::Config(m) => write!(f, "configuration: {m}"),
            Error::File {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            Error::Firewall {
                program,
                arguments,
                status,
                stderr,
            } => {
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
            Error::Verify(m) => write!(f, "firewall check after the change failed: {m}"),
            Error::TokenRejected(m) => write!(f, "Telegram rejected the bot token: {m}"),
            Error::Telegram(m) => write!(f, "Telegram: {m}"),
            Error::Runtime(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::File { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
