//! Configuration: one `KEY=VALUE` file plus the environment, which wins. The table of
//! keys ([`keys`]), the layers the values come from ([`layers`]), the sections validated
//! from them ([`sections`]), and here the configuration they make.

use std::path::{Path, PathBuf};

use crate::base::error::{Error, Result};
use crate::base::gate::{Gate, GateName, Knock};
use crate::base::rate::Rate;
use crate::base::totp::Secret;
use crate::store::actions::Actions;

pub(crate) mod approve;
pub(crate) mod keys;
mod layers;
mod sections;

pub use keys::{KEYS, Key};
pub use layers::parse_file;
use layers::{Layers, TokenFile, read_trusted};
pub(crate) use sections::{Files, FirewallKind, FirewallSettings, Limits, TelegramSettings, Token};

pub(crate) const DEFAULT_PATH: &str = "/etc/tgknock/tgknock.conf";

/// The whole configuration, in sections.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) telegram: TelegramSettings,
    pub(crate) gates: Vec<Gate>,
    pub(crate) limits: Limits,
    pub(crate) firewall: FirewallSettings,
    pub(crate) knock: Option<Knock>,
    /// Per-source rate limits of gates (`TGKNOCK_RATE_LIMIT`), in the gates' order.
    pub(crate) rate_limits: Vec<(GateName, Rate)>,
    /// The second factor (`TGKNOCK_TOTP_SECRET_FILE`): chat openings need a code.
    pub(crate) totp: Option<Secret>,
    pub(crate) actions: Actions,
    /// `approve-login` (`TGKNOCK_APPROVE_*`).
    pub(crate) approve: crate::store::config::approve::Approve,
    pub(crate) files: Files,
    /// Where the settings came from, for `check`.
    pub(crate) origin: String,
    /// Problems worth a warning but not an error (e.g. a token file others can read).
    pub(crate) warnings: Vec<String>,
}

impl Config {
    /// Loads the config: `path` (or the default path, which may be missing), then the
    /// environment on top; reads the token file it names.
    pub(crate) fn load(path: Option<&Path>) -> Result<Config> {
        let (env, file_path, text) = Config::sources(path)?;
        let file = text.as_deref().map(|t| (file_path.as_path(), t));
        Config::from_sources(file, &env)
    }

    /// The loader of the commands `pam_exec` runs as root (`notify-login`, and
    /// `approve-login` after it): their environment is the logging-in user's to set
    /// (`pam_env` reads `~/.pam_environment`), so **no setting comes from it** — no
    /// `TGKNOCK_*` key, no `ALL_PROXY`/`HTTPS_PROXY` — only the config file, `path` or the
    /// default one (which may be missing: then the defaults, and no token). Run as root,
    /// that file must be a plain file owned by root and writable by no one else, in a
    /// directory of root's that no one else can write to (or sticky, as `/tmp`): another
    /// is refused, naming it and why.
    pub(crate) fn load_trusted(path: Option<&Path>) -> Result<Config> {
        let (file_path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match read_trusted(&file_path, crate::os::sys::is_root()) {
            Ok(t) => Some(t),
            Err(Error::ConfigFile { source, .. })
                if !required && source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        let file = text.as_deref().map(|t| (file_path.as_path(), t));
        Config::from_sources(file, &[])
    }

    /// One setting as the file and the environment give it, without validating the rest
    /// (`totp-setup` runs before the secret file it names exists).
    pub(crate) fn setting(path: Option<&Path>, key: Key) -> Result<Option<String>> {
        let (env, file_path, text) = Config::sources(path)?;
        let file = text.as_deref().map(|t| (file_path.as_path(), t));
        Ok(Layers::new(file, &env)?.nonempty(key))
    }

    /// The environment, the config file's path and its text (`None`: the default path,
    /// missing).
    #[allow(clippy::type_complexity)]
    fn sources(path: Option<&Path>) -> Result<(Vec<(String, String)>, PathBuf, Option<String>)> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let (file_path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&file_path) {
            Ok(t) => Some(t),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(Error::ConfigFile {
                    path: file_path,
                    source,
                });
            }
        };
        Ok((env, file_path, text))
    }

    /// The config from a file's text and environment pairs, reading the token file they
    /// name (the loader's only file besides the config itself).
    pub(crate) fn from_sources(
        file: Option<(&Path, &str)>,
        env: &[(String, String)],
    ) -> Result<Config> {
        let layers = Layers::new(file, env)?;
        let token_file = layers
            .nonempty(keys::TOKEN_FILE)
            .map(|p| TokenFile::read(Path::new(&p)));
        let totp_file = layers
            .nonempty(keys::TOTP_SECRET_FILE)
            .map(|p| TokenFile::read(Path::new(&p)));
        Config::build(&layers, token_file, totp_file)
    }

    /// Validates the settings, section by section. Pure: the files are read already.
    fn build(
        layers: &Layers,
        token_file: Option<TokenFile>,
        totp_file: Option<TokenFile>,
    ) -> Result<Config> {
        let mut warnings = Vec::new();
        let telegram = sections::telegram(layers, token_file, &mut warnings)?;
        let gates = sections::gates(layers)?;
        let limits = sections::limits(layers)?;
        let firewall = sections::firewall(layers)?;
        let files = sections::files(layers)?;
        let knock = sections::knock(layers, &gates, &mut warnings)?;
        let rate_limits = sections::rate_limits(layers, &gates)?;
        let totp = sections::totp(layers, totp_file, &mut warnings)?;
        let actions = sections::actions(layers)?;
        let approve = crate::store::config::approve::Approve::parse(
            &|k| layers.nonempty(k),
            &|k, why| layers.bad(k, why),
            &firewall.always_allow,
        )?;
        Ok(Config {
            approve,
            rate_limits,
            totp,
            telegram,
            gates,
            limits,
            firewall,
            knock,
            actions,
            files,
            origin: layers.origin.clone(),
            warnings,
        })
    }

    /// What `run`, `check` and `whoami` need on top of a valid file: a token.
    pub(crate) fn require_token(&self) -> Result<&Token> {
        if let Some(problem) = &self.telegram.token_problem {
            return Err(Error::Usage {
                argument: None,
                problem: problem.clone(),
            });
        }
        self.telegram.token.as_ref().ok_or_else(|| {
            Error::config(
                keys::TOKEN_FILE.name,
                "no bot token: set TGKNOCK_TOKEN_FILE (or TGKNOCK_TOKEN) to the token BotFather gave",
            )
        })
    }

    /// What `run` and `check` need: a token and at least one allowed user.
    pub(crate) fn require_bot(&self) -> Result<&Token> {
        let token = self.require_token()?;
        if self.telegram.allowed_users.is_empty() {
            return Err(Error::config(
                keys::ALLOWED_USERS.name,
                "no user is allowed: add your numeric Telegram user id (`tgknock whoami` shows it)",
            ));
        }
        Ok(token)
    }

    pub(crate) fn gate(&self, name: &str) -> Option<&Gate> {
        self.gates.iter().find(|g| g.name == name)
    }

    pub(crate) fn default_gate(&self) -> &Gate {
        &self.gates[0]
    }

    /// A gate named on the command line (`None`: the default gate).
    pub(crate) fn gate_arg(&self, name: Option<&str>) -> Result<GateName> {
        match name {
            None => Ok(self.default_gate().name.clone()),
            Some(n) => self.gate(n).map(|g| g.name.clone()).ok_or_else(|| {
                Error::usage(
                    "GATE",
                    format!("there is no gate '{n}' (gates: {})", self.gate_names()),
                )
            }),
        }
    }

    /// `ssh, web`.
    pub(crate) fn gate_names(&self) -> String {
        self.gates
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests;
