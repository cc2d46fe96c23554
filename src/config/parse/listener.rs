//! Listener blocks: the `listener PORT [ADDRESS]` line, the address forms, the settings a
//! block collects (including its TLS keys and, with `per_listener_settings true`, its
//! security keys) and how those security keys are attached to listeners at the end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use super::super::error::{ConfigError, ErrorKind, Warning};
use super::super::tls::TlsSettings;
use super::super::ListenerSecurity;
use super::{tls, Line, Parser, DEFAULT_PORT};

/// The address part of a `listener` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Host {
    /// No address: every interface, IPv4 and IPv6.
    Any,
    /// `localhost`: the loopback address of each family.
    Localhost,
    Ip(IpAddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Domain {
    V4,
    V6,
}

/// One listener as the file describes it.
#[derive(Clone, Debug, Default)]
pub(super) struct ListenerSpec {
    pub(super) port: Option<u16>,
    pub(super) host: Option<Host>,
    /// `None` = unlimited.
    pub(super) max_connections: Option<usize>,
    pub(super) domain: Option<Domain>,
    /// `protocol websockets`.
    pub(super) websockets: bool,
    /// TLS settings (`certfile`, ...), if any TLS key was given for this listener.
    pub(super) tls: Option<TlsSettings>,
    /// Where the first TLS key was, for errors about the settings as a whole.
    pub(super) tls_origin: Option<tls::TlsOrigin>,
    /// Its security keys (used with `per_listener_settings true`).
    pub(super) security: SecuritySpec,
}

/// The security keys one listener block gives (`per_listener_settings true`).
#[derive(Clone, Debug, Default)]
pub(super) struct SecuritySpec {
    pub(super) allow_anonymous: Option<bool>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) acl_file: Option<PathBuf>,
    /// The first security line, for the warning when no listener takes them.
    pub(super) first: Option<(PathBuf, usize, String)>,
}

impl ListenerSpec {
    pub(super) fn addrs(&self) -> Vec<SocketAddr> {
        let port = self.port.unwrap_or(DEFAULT_PORT);
        let (v4, v6): (IpAddr, IpAddr) = match self.host.unwrap_or(Host::Any) {
            Host::Ip(ip) => return vec![SocketAddr::new(ip, port)],
            Host::Any => (Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()),
            Host::Localhost => (Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()),
        };
        match self.domain {
            Some(Domain::V4) => vec![SocketAddr::new(v4, port)],
            Some(Domain::V6) => vec![SocketAddr::new(v6, port)],
            None => vec![SocketAddr::new(v4, port), SocketAddr::new(v6, port)],
        }
    }
}

/// `listener PORT [ADDRESS]`.
pub(super) fn parse_listener(line: &Line<'_>) -> Result<ListenerSpec, ConfigError> {
    let value = line.text()?;
    let mut words = value.split_whitespace();
    let port = words
        .next()
        .ok_or_else(|| line.error(ErrorKind::MissingValue))?;
    let port: u16 = port
        .parse()
        .map_err(|_| line.invalid("PORT [ADDRESS] with a port number 0-65535"))?;
    let host = match words.next() {
        None => Host::Any,
        Some(w) if w.starts_with('#') => Host::Any,
        Some(addr) => parse_host(line, addr)?,
    };
    if words.next().is_some_and(|w| !w.starts_with('#')) {
        return Err(line.invalid("PORT [ADDRESS]"));
    }
    Ok(ListenerSpec {
        port: Some(port),
        host: Some(host),
        ..ListenerSpec::default()
    })
}

pub(super) fn parse_host(line: &Line<'_>, addr: &str) -> Result<Host, ConfigError> {
    if addr.contains('/') {
        return Err(line.error(ErrorKind::Unsupported("unix domain sockets")));
    }
    if addr == "localhost" {
        return Ok(Host::Localhost);
    }
    // Brackets are accepted for IPv6 because people write them out of habit.
    let bare = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    bare.parse::<IpAddr>().map(Host::Ip).map_err(|_| {
        line.error(ErrorKind::InvalidValue {
            value: addr.to_string(),
            expected: "an IPv4 or IPv6 address or localhost (host names are not resolved)",
        })
    })
}

impl Parser {
    /// `per_listener_settings true`: each listener keeps the security keys that follow its
    /// `listener` line; the keys above the first one belong to the default listener (or,
    /// without any listener, to the local-only ones). The global fields are cleared so
    /// nothing can use them by mistake.
    pub(super) fn per_listener_security(&mut self, specs: &[ListenerSpec], any_listener: bool) {
        let pre = std::mem::take(&mut self.pre_security);
        let mut out = Vec::new();
        if !any_listener {
            // Local-only mode: anonymous clients allowed unless a password file is given.
            out.push(ListenerSecurity {
                addrs: self.cfg.listeners.clone(),
                allow_anonymous: pre.allow_anonymous.unwrap_or(pre.password_file.is_none()),
                password_file: pre.password_file,
                acl_file: pre.acl_file,
            });
        } else {
            let has_default = self.has_default_listener;
            if !has_default {
                if let Some((file, line, key)) = &pre.first {
                    self.warnings.push(Warning {
                        file: file.clone(),
                        line: *line,
                        key: key.clone(),
                        message: "per_listener_settings true: security settings above the \
                                  first listener belong to the default listener (port), and \
                                  there is none; ignored"
                            .to_string(),
                    });
                }
            }
            for (i, spec) in specs.iter().enumerate() {
                let sec = if i == 0 && has_default {
                    &pre
                } else {
                    &spec.security
                };
                out.push(ListenerSecurity {
                    addrs: spec.addrs(),
                    // Mosquitto 2.0: false per listener unless set.
                    allow_anonymous: sec.allow_anonymous.unwrap_or(false),
                    password_file: sec.password_file.clone(),
                    acl_file: sec.acl_file.clone(),
                });
            }
        }
        // A bridge's local session belongs to no listener, so no listener's ACL admits
        // it: say so rather than let bridged messages vanish without a word.
        let acl_line = out.iter().find_map(|s| s.acl_file.as_ref());
        if let (Some(acl), Some(bridge)) = (acl_line, self.cfg.bridges.first()) {
            let (file, line) = self.per_listener_line.clone().unwrap_or_default();
            self.warnings.push(Warning {
                file,
                line,
                key: "per_listener_settings".to_string(),
                message: format!(
                    "bridge {} belongs to no listener: with per_listener_settings true and an \
                     acl_file ({}), the ACL denies everything it would publish or receive",
                    bridge.name,
                    acl.display()
                ),
            });
        }
        self.cfg.per_listener_settings = true;
        self.cfg.listener_security = out;
        self.cfg.allow_anonymous = false;
        self.cfg.password_file = None;
        self.cfg.acl_file = None;
    }
}
