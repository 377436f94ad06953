//! The control protocol between operator commands and the running daemon: one JSON request
//! line, one JSON response line, over a root-only Unix socket. While the daemon owns our table,
//! changes to it (ban, unban, lift, flush) must go through the daemon's netlink socket; `status`
//! reads the daemon's state.

use std::io::{self, BufRead, BufReader, Read as _, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::status::Status;

/// Longest request the daemon reads: room for a `ban --file` of 200k+ addresses and
/// prefixes (full sets of both families).
pub(crate) const MAX_REQUEST: usize = 16 << 20;
/// Longest reply a client reads (a status reply caps its lists well below this).
pub(crate) const MAX_REPLY: usize = 1 << 20;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// More time to wait for the reply per ban of a `ban_many` request.
const PER_BAN: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Ban an address or prefix for `timeout_ms`.
    Ban {
        cidr: String,
        timeout_ms: u64,
    },
    /// Ban every address and prefix of `cidrs` for `timeout_ms`, in one transaction.
    BanMany {
        cidrs: Vec<String>,
        timeout_ms: u64,
    },
    Unban {
        cidr: String,
    },
    /// Take `measure` (an action name such as `limit_port`, or a banned address; None: all)
    /// of an open incident out, and keep it out for the rest of the incident.
    Lift {
        incident: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        measure: Option<String>,
    },
    /// Remove our table and stop the daemon. (Empty braces: serde then refuses unknown
    /// fields here too.)
    Flush {},
    /// The daemon's state (`ftagent status`, `ftagent top`).
    Status {},
}

impl Request {
    /// How long a client waits for the reply: longer for a request of many bans.
    fn reply_timeout(&self) -> Duration {
        match self {
            Request::BanMany { cidrs, .. } => {
                CLIENT_TIMEOUT
                    + PER_BAN.saturating_mul(u32::try_from(cidrs.len()).unwrap_or(u32::MAX))
            }
            _ => CLIENT_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    /// The caller may not use the socket (not root).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
    /// The reply to a status request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<Status>>,
}

impl Response {
    pub(crate) fn ok(message: impl Into<String>) -> Response {
        Response {
            ok: true,
            message: message.into(),
            denied: false,
            status: None,
        }
    }

    pub(crate) fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            ..Response::ok(message)
        }
    }

    pub(crate) fn denied(message: impl Into<String>) -> Response {
        Response {
            denied: true,
            ..Response::error(message)
        }
    }

    pub(crate) fn status(status: Status) -> Response {
        Response {
            status: Some(Box::new(status)),
            ..Response::ok("status")
        }
    }

    /// The reply as sent: one JSON line.
    pub(crate) fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|e| {
            format!("{{\"ok\":false,\"message\":\"reply not encodable: {e}\"}}").into_bytes()
        });
        line.push(b'\n');
        line
    }
}

/// Sends a request to the daemon. Returns None when no daemon listens on `path`.
pub fn call(path: &Path, request: &Request) -> io::Result<Option<Response>> {
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(request.reply_timeout()))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = serde_json::to_string(request).map_err(io::Error::other)?;
    line.push('\n');
    // A daemon that refuses the caller replies and closes without reading: the write may then
    // fail (EPIPE) while the reply is already waiting, so a failed write still reads it.
    let written = stream.write_all(line.as_bytes());
    let mut reply = String::new();
    let read = BufReader::new(stream)
        .take(MAX_REPLY as u64)
        .read_line(&mut reply);
    match (written, read) {
        (_, Ok(n)) if n > 0 => {}
        (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
        (Ok(()), Ok(_)) => {}
    }
    let response = serde_json::from_str(reply.trim_end())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("daemon reply: {e}")))?;
    Ok(Some(response))
}

/// Parses one request line as the daemon receives it.
pub(crate) fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err("bad request: empty; send one JSON object such as {\"op\":\"status\"}".into());
    }
    serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = Request::Ban {
            cidr: "10.250.0.1".into(),
            timeout_ms: 3000,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"op":"ban","cidr":"10.250.0.1","timeout_ms":3000}"#
        );
        assert_eq!(parse_request(text.as_bytes()), Ok(r));
    }

    #[test]
    fn a_lift_names_its_incident_and_maybe_a_measure() {
        let all = Request::Lift {
            incident: "1796601694658-1".into(),
            measure: None,
        };
        let text = serde_json::to_string(&all).unwrap();
        assert_eq!(text, r#"{"op":"lift","incident":"1796601694658-1"}"#);
        assert_eq!(parse_request(text.as_bytes()), Ok(all));
        let one = br#"{"op":"lift","incident":"1-1","measure":"limit_port"}"#;
        assert_eq!(
            parse_request(one),
            Ok(Request::Lift {
                incident: "1-1".into(),
                measure: Some("limit_port".into())
            })
        );
    }

    #[test]
    fn many_bans_are_one_request_with_time_for_its_reply() {
        let cidrs: Vec<String> = (0..65_536).map(|i| format!("2001:db8::{i:x}")).collect();
        let r = Request::BanMany {
            cidrs,
            timeout_ms: 60_000,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.starts_with(r#"{"op":"ban_many","cidrs":["2001:db8::0","#));
        assert!(text.len() < MAX_REQUEST, "{} bytes", text.len());
        assert_eq!(parse_request(text.as_bytes()), Ok(r.clone()));
        assert!(r.reply_timeout() > CLIENT_TIMEOUT + Duration::from_secs(60));
        assert_eq!(Request::Status {}.reply_timeout(), CLIENT_TIMEOUT);
    }

    #[test]
    fn bad_requests_are_named() {
        let err = parse_request(br#"{"op":"reboot"}"#).unwrap_err();
        assert!(
            err.starts_with("bad request: unknown variant `reboot`"),
            "{err}"
        );
        assert!(parse_request(b"\xff").is_err());
        assert!(parse_request(b"  ").unwrap_err().contains("empty"));
        assert_eq!(parse_request(br#"{"op":"status"}"#), Ok(Request::Status {}));
        assert!(parse_request(br#"{"op":"status","x":1}"#).is_err());
        assert!(parse_request(br#"{"op":"flush","x":1}"#).is_err());
        assert_eq!(parse_request(br#"{"op":"flush"}"#), Ok(Request::Flush {}));
    }

    #[test]
    fn replies_are_one_line() {
        let line = Response::denied("no").to_line();
        assert_eq!(line, b"{\"ok\":false,\"message\":\"no\",\"denied\":true}\n");
        let back: Response = serde_json::from_slice(&line).unwrap();
        assert!(back.denied && back.status.is_none());
    }
}
