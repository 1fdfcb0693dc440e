//! Where the settings come from: the `KEY=VALUE` file, the environment on top, defaults
//! from the table of keys; and the reading of the files the loader trusts (the config
//! file of a root hook, the token and secret files).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::keys::{self, Key};
use crate::base::duration;
use crate::base::error::{Error, Result};
use crate::base::text::short;

/// Reads `KEY=VALUE` lines: `#` comments, blank lines, optional matching quotes.
/// An error gives the line number and the problem.
#[allow(clippy::type_complexity)]
pub fn parse_file(
    text: &str,
) -> std::result::Result<Vec<(usize, String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| (n, format!("expected KEY=VALUE, found '{}'", short(line))))?;
        let key = key.trim_end();
        let valid_key = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            return Err((n, format!("'{}' is not a valid key", short(key))));
        }
        let value = value.trim_start();
        let value = match value.as_bytes().first() {
            Some(q @ (b'"' | b'\'')) => {
                if value.len() >= 2 && value.as_bytes()[value.len() - 1] == *q {
                    value[1..value.len() - 1].to_string()
                } else {
                    return Err((n, format!("{key}: unmatched quote")));
                }
            }
            _ => value.to_string(),
        };
        out.push((n, key.to_string(), value));
    }
    Ok(out)
}

/// The settings as given: the file's, then the environment's on top, each with where it
/// was set; defaults come from the table of keys.
pub(super) struct Layers<'a> {
    values: BTreeMap<String, (String, String)>,
    env: &'a [(String, String)],
    pub(super) origin: String,
}

impl<'a> Layers<'a> {
    pub(super) fn new(
        file: Option<(&Path, &str)>,
        env: &'a [(String, String)],
    ) -> Result<Layers<'a>> {
        let mut values: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut origin = Vec::new();
        if let Some((path, text)) = file {
            let where_ = path.display().to_string();
            let pairs = parse_file(text).map_err(|(line, problem)| Error::ConfigSyntax {
                path: path.to_path_buf(),
                line,
                problem,
            })?;
            for (line, key, value) in pairs {
                if !key.starts_with("TGKNOCK_") {
                    continue;
                }
                if !keys::known_key(&key) {
                    return Err(unknown_key(&key, &format!("{where_} line {line}")));
                }
                values.insert(key, (value, format!("{where_} line {line}")));
            }
            origin.push(where_);
        }
        let mut from_env = false;
        for (key, value) in env {
            if !key.starts_with("TGKNOCK_") {
                continue;
            }
            if !keys::known_key(key) {
                return Err(unknown_key(key, "the environment"));
            }
            values.insert(key.clone(), (value.clone(), "the environment".into()));
            from_env = true;
        }
        if from_env {
            origin.push("the environment".into());
        }
        Ok(Layers {
            values,
            env,
            origin: if origin.is_empty() {
                "defaults only".into()
            } else {
                origin.join(" + ")
            },
        })
    }

    /// The value of `key`, or its default.
    pub(super) fn get(&self, key: Key) -> String {
        debug_assert!(
            keys::KEYS.iter().any(|k| k.name == key.name),
            "{} is not in KEYS",
            key.name
        );
        self.values
            .get(key.name)
            .map(|(v, _)| v.clone())
            .or_else(|| key.default.map(String::from))
            .unwrap_or_default()
    }

    /// The value of `key` when it is set and not empty.
    pub(super) fn nonempty(&self, key: Key) -> Option<String> {
        Some(self.get(key)).filter(|v| !v.is_empty())
    }

    /// The value of `key` as given (`None`: not set, whatever its default), with where.
    pub(super) fn given(&self, key: Key) -> Option<&str> {
        self.values.get(key.name).map(|(v, _)| v.as_str())
    }

    /// An error about `key`, saying where it was set.
    pub(super) fn bad(&self, key: Key, problem: impl Into<String>) -> Error {
        self.bad_named(key.name, problem)
    }

    /// An error about the key named `key` (a member of a family), saying where it was set.
    pub(super) fn bad_named(&self, key: &'static str, problem: impl Into<String>) -> Error {
        Error::Config {
            key,
            place: self.values.get(key).map(|(_, w)| w.clone()),
            problem: problem.into(),
        }
    }

    pub(super) fn duration(&self, key: Key) -> Result<u64> {
        duration::parse(&self.get(key), None).map_err(|e| self.bad(key, e))
    }

    pub(super) fn abs_path(&self, key: Key) -> Result<PathBuf> {
        let v = self.get(key);
        if !v.starts_with('/') {
            return Err(self.bad(key, format!("'{v}' must be an absolute path")));
        }
        Ok(PathBuf::from(v))
    }

    /// The items of a list key, separated by commas or spaces.
    pub(super) fn items(&self, key: Key) -> Vec<String> {
        self.get(key)
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    }

    /// The members of the family `prefix` given, with their values, in the keys' order.
    pub(super) fn family(&self, prefix: &'static str) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }

    /// The environment's value of a variable that is not a key (`ALL_PROXY`).
    pub(super) fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

fn unknown_key(key: &str, place: &str) -> Error {
    Error::UnknownKey {
        key: key.to_string(),
        place: place.to_string(),
        nearest: keys::nearest_key(key),
    }
}

/// The largest config or token file read (a file that never ends, `/dev/zero`, is not
/// read to the end).
const MAX_FILE: u64 = 1 << 20;

/// The text of a config file that settings are taken from as root, from a user's
/// environment that is not trusted: never through a FIFO (opened without blocking), a
/// plain file, and with `root`, root's and writable by no one else, in a directory of
/// root's that no one else can write to unless it is sticky.
pub(super) fn read_trusted(path: &Path, root: bool) -> Result<String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let unsafe_ = |path: &Path, problem| Error::Unsafe {
        path: path.to_path_buf(),
        problem,
    };
    let not_read = |source| Error::ConfigFile {
        path: path.to_path_buf(),
        source,
    };
    // The file itself, whatever links lead to it: its own directory is the one checked.
    let real = std::fs::canonicalize(path).map_err(not_read)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(crate::os::files::O_NOFOLLOW | crate::os::files::O_NONBLOCK)
        .open(&real)
        .map_err(not_read)?;
    let meta = file.metadata().map_err(not_read)?;
    if !meta.is_file() {
        return Err(unsafe_(path, crate::base::error::Unsafe::NotAFile));
    }
    if root {
        use crate::base::error::Unsafe;
        let mode = meta.mode() & 0o7777;
        if meta.uid() != 0 {
            return Err(unsafe_(path, Unsafe::NotRoots(meta.uid())));
        }
        if mode & 0o002 != 0 {
            return Err(unsafe_(path, Unsafe::FileWritableByEveryone(mode)));
        }
        if mode & 0o020 != 0 {
            return Err(unsafe_(path, Unsafe::FileWritableByGroup(mode)));
        }
        let dir = real.parent().unwrap_or(Path::new("/"));
        let d = std::fs::metadata(dir).map_err(not_read)?;
        let dmode = d.mode() & 0o7777;
        if d.uid() != 0 {
            return Err(unsafe_(dir, Unsafe::NotRoots(d.uid())));
        }
        if dmode & 0o1000 == 0 {
            if dmode & 0o002 != 0 {
                return Err(unsafe_(dir, Unsafe::WritableByEveryone(dmode)));
            }
            if dmode & 0o020 != 0 {
                return Err(unsafe_(dir, Unsafe::WritableByGroup(dmode)));
            }
        }
    }
    read_capped(file).map_err(not_read)
}

/// The text of an opened file, at most [`MAX_FILE`] bytes of UTF-8.
fn read_capped(file: std::fs::File) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other("larger than 1 MiB"));
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The token file as the loader found it.
#[derive(Debug)]
pub(super) struct TokenFile {
    pub(crate) path: PathBuf,
    pub(crate) text: std::io::Result<String>,
    /// Its permission bits, when they could be read.
    pub(crate) mode: Option<u32>,
}

impl TokenFile {
    pub(super) fn read(path: &Path) -> TokenFile {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::fs::PermissionsExt;
        // A plain file of a sensible size: never a FIFO that blocks, nor `/dev/zero`.
        let text = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(crate::os::files::O_NONBLOCK)
            .open(path)
            .and_then(|f| {
                if !f.metadata()?.is_file() {
                    return Err(std::io::Error::other("not a regular file"));
                }
                read_capped(f)
            });
        TokenFile {
            path: path.to_path_buf(),
            text,
            mode: std::fs::metadata(path)
                .ok()
                .map(|m| m.permissions().mode() & 0o7777),
        }
    }
}
