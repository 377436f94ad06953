//! The control protocol between operator commands and the running daemon: one JSON request
//! line, one JSON response line, over a root-only Unix socket. While the daemon owns our table,
//! changes to it (ban, unban, flush) must go through the daemon's netlink socket.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest request the daemon reads.
pub const MAX_REQUEST: usize = 4096;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Ban an address or prefix for `timeout_ms`.
    Ban {
        cidr: String,
        timeout_ms: u64,
    },
    Unban {
        cidr: String,
    },
    /// Remove our table and stop the daemon.
    Flush,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Response {
        Response {
            ok: true,
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            message: message.into(),
        }
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
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = serde_json::to_string(request).map_err(io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream)
        .take(MAX_REQUEST as u64)
        .read_line(&mut reply)?;
    let response = serde_json::from_str(reply.trim_end())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("daemon reply: {e}")))?;
    Ok(Some(response))
}

use std::io::Read as _;

/// Parses one request line as the daemon receives it.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
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
    fn bad_requests_are_named() {
        let err = parse_request(br#"{"op":"reboot"}"#).unwrap_err();
        assert!(
            err.starts_with("bad request: unknown variant `reboot`"),
            "{err}"
        );
        assert!(parse_request(b"\xff").is_err());
    }
}
