//! The commands that leave the firewall alone: `totp-setup` writes the second factor's
//! secret, `whoami` shows who wrote to the bot, `knock` sends a knock sequence.

use std::path::{Path, PathBuf};

use crate::base::error::ApiError;
use crate::base::error::{Error, Result};
use crate::base::gate::Knock;
use crate::chat::telegram::{BotApi, Incoming};
use crate::store::config::{Config, keys};

use super::args::{KnockCmd, TotpSetupCmd, WhoamiCmd, load};

pub(super) fn totp_setup(c: TotpSetupCmd) -> Result<i32> {
    let key = keys::TOTP_SECRET_FILE.name;
    let path = match c.file {
        Some(p) => p,
        None => Config::setting(c.config.as_deref(), keys::TOTP_SECRET_FILE)?
            .map(PathBuf::from)
            .ok_or_else(|| {
                Error::usage(
                    "--file",
                    format!("where? give --file PATH, or set {key} in the config"),
                )
            })?,
    };
    if !path.is_absolute() {
        return Err(Error::usage("--file", "must be an absolute path"));
    }
    if std::fs::symlink_metadata(&path).is_ok() && !c.force {
        return Err(Error::usage(
            "--file",
            format!(
                "{} exists; --force replaces it (the authenticator's current entry then stops working)",
                path.display()
            ),
        ));
    }
    let secret = crate::base::totp::Secret::generate().map_err(|e| Error::Usage {
        argument: None,
        problem: e,
    })?;
    let owner = Config::setting(c.config.as_deref(), keys::STATE_DIR)
        .ok()
        .flatten()
        .unwrap_or_else(|| "/var/lib/tgknock".into());
    let owner = crate::os::files::write_secret(
        &path,
        &format!("{}\n", secret.base32()),
        Path::new(&owner),
    )?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let uri = secret.uri(host.trim());
    println!(
        "wrote a new TOTP secret to {} (mode 0600{owner})\n",
        path.display()
    );
    println!(
        "Scan this QR code with your authenticator app (or enter the secret {} by hand):\n",
        secret.base32()
    );
    print!(
        "{}",
        crate::cli::qr::terminal(&uri, std::io::IsTerminal::is_terminal(&std::io::stdout()))
    );
    println!("\n{uri}\n");
    println!(
        "Then set {key}={} in the config (if it is not yet) and restart tgknock: openings from chat will need a code.",
        path.display()
    );
    Ok(0)
}

pub(super) fn whoami(c: WhoamiCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let token = cfg.require_token()?.clone();
    let api = BotApi::new(&cfg.telegram, &token)?;
    let (me, _) = api.get_me()?;
    println!(
        "bot: @{} (id {})",
        me.username.as_deref().unwrap_or("?"),
        me.id
    );
    // No offset: Telegram confirms nothing, so the daemon still gets these messages.
    let answer = api.get_updates(None, 0, 100).map_err(|e| match e {
        ApiError::Http { status: 409, .. } => Error::Telegram(ApiError::Http {
            status: 409,
            description: "Conflict: the daemon (or another program) is polling, or a webhook is set; stop the daemon and run whoami again".into(),
            retry_after: None,
        }),
        e => Error::from(e),
    })?;
    let raw = answer.raw_result()?;
    let items = crate::chat::telegram::decode_updates(raw).map_err(ApiError::Malformed)?;
    let mut seen = 0;
    for item in items {
        let Incoming::Update(u) = item else { continue };
        let Some(m) = u.message.or(u.edited_message) else {
            continue;
        };
        let Some(from) = m.from else { continue };
        seen += 1;
        let text: String = m
            .text
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(40)
            .collect();
        println!(
            "user id {}  {}  chat {} ({})  {:?}  allowed: {}",
            from.id,
            from.describe(),
            m.chat.id,
            m.chat.kind,
            text,
            if cfg.telegram.allowed_users.contains(&from.id) {
                "yes"
            } else {
                "no"
            }
        );
    }
    if seen == 0 {
        println!(
            "no pending messages: send any message to @{} in Telegram, then run `tgknock whoami` again",
            me.username.as_deref().unwrap_or("your bot")
        );
    } else {
        println!("put the ids to allow in TGKNOCK_ALLOWED_USERS (comma-separated)");
    }
    Ok(0)
}

pub(super) fn knock(c: KnockCmd) -> Result<i32> {
    let ports: Vec<u16> = match &c.ports {
        Some(list) => Knock::parse_ports(list).map_err(|e| Error::usage("--ports", e))?,
        None => match Config::load(c.config.as_deref())?.knock {
            Some(k) => k.ports,
            None => {
                return Err(Error::Usage {
                    argument: None,
                    problem: "no sequence: give --ports 7101,7102,7103 or set TGKNOCK_KNOCK".into(),
                });
            }
        },
    };
    if c.delay > 10_000 {
        return Err(Error::usage("--delay", "must be between 0 and 10 seconds"));
    }
    let addrs: Vec<std::net::SocketAddr> = {
        use std::net::ToSocketAddrs;
        (c.host.as_str(), 1)
            .to_socket_addrs()
            .map_err(|e| Error::usage("HOST", format!("cannot resolve {}: {e}", c.host)))?
            .collect()
    };
    let addr = addrs
        .first()
        .ok_or_else(|| Error::usage("HOST", format!("{} has no address", c.host)))?
        .ip();
    for (i, port) in ports.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(c.delay));
        }
        // One SYN is the knock; the board drops it, so a short timeout is the norm.
        let target = std::net::SocketAddr::new(addr, *port);
        let _ =
            std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_millis(200));
        println!("knocked {target}");
    }
    println!("sequence sent to {addr}; connect within the knock's open time");
    Ok(0)
}
