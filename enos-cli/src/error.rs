//! [`CliError`]: every way a command ends other than success, each with its exit code.

use std::time::Duration;

use enos_transport_blocking::proto::{DisconnectCause, RequestError, SubmitError, INTEGRATION_DEVICE_KEY};
use enos_transport_blocking::Error;
use serde_json::{json, Value};

/// The exit codes, as `enos --help` and the crate docs list them.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// The cloud answered with an error code (and, for `replay`, refused some rows), or
    /// does not have what was asked (a file, a firmware version), or what it sent failed
    /// its check (a firmware's digest or size).
    pub const REFUSED: u8 = 1;
    /// A usage error: a bad argument, a missing or invalid setting, bad input (JSON,
    /// hex, a CSV or JSON lines row).
    pub const USAGE: u8 = 2;
    /// No connection: refused credentials, an unreachable broker, a TLS failure, a
    /// connection lost for good.
    pub const CONNECT: u8 = 3;
    /// Timed out: no connection or no reply within the timeout.
    pub const TIMED_OUT: u8 = 4;
    /// A local I/O error: a file that cannot be read or written, a handler program that
    /// cannot be started.
    pub const IO: u8 = 5;
    /// Interrupted (Ctrl-C or SIGTERM) before the work was done, for the commands that
    /// finish cleanly (`replay`, `integration post`); `replay --resume` goes on from there.
    pub const INTERRUPTED: u8 = 130;
}

/// A setting none of the three sources gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What it is, in words ("the broker URL").
    pub what: String,
    /// How each source names it: flag, environment variable, profile key.
    pub ways: Vec<(&'static str, &'static str, &'static str)>,
    /// The profile file looked at, and the profile in it, when there was one.
    pub profile: Option<String>,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "missing setting: {}; give it ", self.what)?;
        for (i, (flag, env, key)) in self.ways.iter().enumerate() {
            if i > 0 {
                f.write_str(", or ")?;
            }
            write!(f, "with {flag}, {env} in the environment, or `{key}` in a profile")?;
        }
        match &self.profile {
            Some(p) => write!(f, " ({p})"),
            None => f.write_str(
                " (--profile NAME or ENOS_PROFILE picks one from $ENOS_CONFIG, else $XDG_CONFIG_HOME/enos/profiles.toml, else ~/.config/enos/profiles.toml)",
            ),
        }
    }
}

/// Why a command failed. Messages never hold a secret: settings that are secrets are
/// named, never shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// An argument or setting that cannot work.
    #[error("{0}")]
    Usage(String),
    /// A setting none of the sources gave.
    #[error("{0}")]
    Missing(Missing),
    /// Input that does not parse: where, and why.
    #[error("{place}: {reason}")]
    Input {
        /// The argument or `FILE:LINE`.
        place: String,
        /// What is wrong.
        reason: String,
    },
    /// The cloud answered with an error code.
    #[error("cloud refused with code {code}: {message}")]
    Refused {
        /// The reply's code.
        code: i32,
        /// The reply's message.
        message: String,
    },
    /// The cloud answered something unreadable.
    #[error("the cloud's reply did not parse: {0}")]
    BadReply(String),
    /// The cloud does not have what was asked: a stored file, a firmware version.
    #[error("{0}")]
    NotFound(String),
    /// What the cloud sent failed its check (a firmware's digest or size); nothing was
    /// kept.
    #[error("{0}")]
    CheckFailed(String),
    /// No connection.
    #[error("could not connect to {url} as {device}: {reason}{hint}")]
    Connect {
        /// The broker URL.
        url: String,
        /// The device's keys.
        device: String,
        /// Why.
        reason: String,
        /// What to check, with a leading separator (or empty).
        hint: String,
    },
    /// A request or connection that did not end in time.
    #[error("{0}")]
    TimedOut(String),
    /// The connection ended and a request could not be completed.
    #[error("connection lost: {0}")]
    Lost(String),
    /// Stopped by Ctrl-C or SIGTERM before the work was done: what was left undone.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A local file or program.
    #[error("{what}: {reason}")]
    Io {
        /// The file or program, and what was done with it.
        what: String,
        /// The error.
        reason: String,
    },
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Missing(_) | CliError::Input { .. } => exit::USAGE,
            CliError::Refused { .. } | CliError::BadReply(_) | CliError::NotFound(_) | CliError::CheckFailed(_) => {
                exit::REFUSED
            }
            CliError::Connect { .. } | CliError::Lost(_) => exit::CONNECT,
            CliError::TimedOut(_) => exit::TIMED_OUT,
            CliError::Io { .. } => exit::IO,
            CliError::Interrupted(_) => exit::INTERRUPTED,
        }
    }

    /// A short name of the kind, for `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Usage(_) => "usage",
            CliError::Missing(_) => "missing_setting",
            CliError::Input { .. } => "bad_input",
            CliError::Refused { .. } => "refused",
            CliError::BadReply(_) => "bad_reply",
            CliError::NotFound(_) => "not_found",
            CliError::CheckFailed(_) => "check_failed",
            CliError::Connect { .. } => "connect",
            CliError::TimedOut(_) => "timed_out",
            CliError::Lost(_) => "connection_lost",
            CliError::Io { .. } => "io",
            CliError::Interrupted(_) => "interrupted",
        }
    }

    /// The error as one JSON document (`--json`).
    pub fn to_json(&self) -> Value {
        let mut e = json!({"kind": self.kind(), "message": self.to_string(), "exit": self.exit_code()});
        if let CliError::Refused { code, message } = self {
            e["code"] = json!(code);
            e["cloudMessage"] = json!(message);
        }
        json!({ "error": e })
    }

    /// Input at `place` that does not parse.
    pub fn input(place: impl Into<String>, reason: impl Into<String>) -> Self {
        CliError::Input { place: place.into(), reason: reason.into() }
    }

    /// A local I/O failure on `what`.
    pub fn io(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        CliError::Io { what: what.into(), reason: e.to_string() }
    }

    /// The error of a request (after the connection came up).
    pub fn from_request(e: Error) -> Self {
        match e {
            Error::Request(RequestError::Rejected { code, message }) => CliError::Refused { code, message },
            Error::Request(RequestError::TimedOut(d)) => CliError::TimedOut(format!("no reply within {}", secs(d))),
            Error::Request(RequestError::BadReply(why)) => CliError::BadReply(why),
            Error::Request(RequestError::HttpStatus(s)) => {
                CliError::Refused { code: i32::from(s), message: format!("HTTP status {s}") }
            }
            Error::Request(e @ RequestError::SubscribeRefused(_)) => {
                CliError::Refused { code: 0, message: e.to_string() }
            }
            Error::Request(e) => CliError::Lost(e.to_string()),
            Error::Submit(SubmitError::Encode(e)) => CliError::input("request", e.to_string()),
            Error::Submit(e @ SubmitError::InvalidTarget) => CliError::Usage(e.to_string()),
            Error::Submit(SubmitError::NeedsHttp) => CliError::Usage(NEEDS_HTTP.into()),
            Error::Submit(e) => CliError::Lost(e.to_string()),
            Error::Options(e) => CliError::Usage(e.to_string()),
            Error::ConnectTimeout(d) => CliError::TimedOut(format!("no connection within {}", secs(d))),
            Error::Connect(cause) => CliError::Lost(cause.to_string()),
            Error::Closed => CliError::Lost("the client closed".into()),
            Error::Write { what, reason } => CliError::Io { what, reason },
            e => CliError::Lost(e.to_string()),
        }
    }

    /// The error of a request for a stored file (or a firmware's file): HTTP status 404
    /// is [`CliError::NotFound`], saying what the cloud does not have (`missing`: "file
    /// URI ..."); the rest as [`CliError::from_request`].
    pub fn from_file_request(e: Error, missing: impl FnOnce() -> String) -> Self {
        match e {
            Error::Request(RequestError::HttpStatus(404)) => {
                CliError::NotFound(format!("the cloud has no {} (HTTP status 404)", missing()))
            }
            e => CliError::from_request(e),
        }
    }

    /// The error of `connect()` for `device` at `url`, with what to check.
    pub fn from_connect(e: Error, url: &str, device: &str, credentials: &str) -> Self {
        let (reason, hint) = match e {
            Error::Connect(DisconnectCause::Refused(r)) => {
                let hint = if r.is_authentication() {
                    // The integration channel signs in as its product.
                    let keys = if device.ends_with(INTEGRATION_DEVICE_KEY) { "product key" } else { "device keys" };
                    format!("; check the {keys} and the {credentials}")
                } else {
                    String::new()
                };
                (r.to_string(), hint)
            }
            Error::Connect(DisconnectCause::Transport(t)) => {
                let hint = match &t {
                    enos_transport_blocking::proto::CloseCause::Tls(_) => {
                        "; check the CA (--ca), the server name and the client certificate".to_owned()
                    }
                    _ => "; check the URL and that the broker runs".to_owned(),
                };
                (t.to_string(), hint)
            }
            Error::Connect(DisconnectCause::ConnectTimeout(d)) | Error::ConnectTimeout(d) => {
                return CliError::TimedOut(format!("no connection to {url} as {device} within {}", secs(d)));
            }
            Error::Connect(cause) => (cause.to_string(), String::new()),
            Error::Options(e) => return CliError::Usage(e.to_string()),
            other => (other.to_string(), String::new()),
        };
        CliError::Connect { url: url.to_owned(), device: device.to_owned(), reason, hint }
    }
}

/// What a file operation on an MQTT connection is told.
pub const NEEDS_HTTP: &str = "stored files go over the HTTP transport only: give the cloud's device HTTP endpoint as an http:// or https:// URL (--url, ENOS_URL or `url` in a profile)";

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use enos_transport_blocking::proto::ConnectRefusal;

    #[test]
    fn each_kind_has_its_exit_code() {
        let refused =
            CliError::from_request(Error::Request(RequestError::Rejected { code: 1204, message: "m".into() }));
        assert_eq!(refused.exit_code(), 1);
        assert_eq!(refused.to_json()["error"]["code"], 1204);
        let timeout = CliError::from_request(Error::Request(RequestError::TimedOut(Duration::from_secs(3))));
        assert_eq!((timeout.exit_code(), timeout.to_string().as_str()), (4, "no reply within 3 s"));
        let auth = CliError::from_connect(
            Error::Connect(DisconnectCause::Refused(ConnectRefusal::NotAuthorized)),
            "tcp://h:1",
            "pk/dk",
            "device secret",
        );
        assert_eq!(auth.exit_code(), 3);
        assert!(auth.to_string().contains("check the device keys and the device secret"), "{auth}");
        assert_eq!(CliError::from_connect(Error::ConnectTimeout(Duration::from_secs(1)), "u", "d", "c").exit_code(), 4);
        assert_eq!(CliError::input("x", "y").exit_code(), 2);
        assert_eq!(CliError::io("x", "y").exit_code(), 5);
        let mqtt = CliError::from_request(Error::Submit(SubmitError::NeedsHttp));
        assert_eq!(mqtt.exit_code(), 2);
        assert!(mqtt.to_string().contains("http:// or https://"), "{mqtt}");
        assert_eq!(CliError::NotFound("x".into()).exit_code(), 1);
        assert_eq!(CliError::CheckFailed("x".into()).to_json()["error"]["kind"], "check_failed");
    }

    #[test]
    fn a_missing_setting_names_the_three_ways() {
        let m = Missing { what: "the broker URL".into(), ways: vec![("--url", "ENOS_URL", "url")], profile: None };
        let text = CliError::Missing(m).to_string();
        for part in ["--url", "ENOS_URL", "`url`", "profile"] {
            assert!(text.contains(part), "{text}");
        }
    }
}
