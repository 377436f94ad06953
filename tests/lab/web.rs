//! The victim's web server: nginx (Debian's nginx-light) in the victim's namespace, with a
//! private configuration under the lab's temp dir — its own pid and lock files, temp paths
//! and prefix, errors to its stderr, no access log, nothing read from /etc/nginx — answering
//! every request with 200 and the body `ok` (HTTP/1.1, keep-alive for clients that ask). It
//! runs in the foreground (`daemon off`) as a `Proc` of the lab: dropping the guard, or the
//! lab's namespace, stops the master and its workers.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{next_id, tool_works, Netns, Proc};

/// Where Debian installs it; root's PATH usually has /usr/sbin, a test runner's may not.
const NGINX_PATHS: [&str; 2] = ["nginx", "/usr/sbin/nginx"];

/// Connections per worker: slowhttptest's 1,000 held ones, wrk's 400 and the users', with
/// room to spare (each worker has its own).
const WORKER_CONNECTIONS: u32 = 4096;

/// How long nginx may take to bind its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The nginx binary, if one runs here.
pub fn binary() -> Option<&'static str> {
    NGINX_PATHS.into_iter().find(|p| tool_works(p, "-v"))
}

/// Starts nginx in `victim` listening on `listen` (an nginx `listen` parameter, e.g.
/// `[::]:80 ipv6only=off` or `10.250.0.2:8081`), its files in a fresh directory under `dir`.
/// Returns once its sockets are bound (the master writes its pid file after binding them);
/// panics with nginx's stderr if it exits or does not get there in 10 s.
pub fn start(victim: &Netns, dir: &Path, listen: &str) -> Proc {
    let nginx = binary().expect("lab: nginx is not installed (tests/deps.sh --test)");
    let prefix = dir.join(format!("nginx-{}", next_id()));
    std::fs::create_dir_all(&prefix)
        .unwrap_or_else(|e| panic!("lab: create {}: {e}", prefix.display()));
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, config(&prefix, listen))
        .unwrap_or_else(|e| panic!("lab: write {}: {e}", conf.display()));
    let (prefix_s, conf_s) = (utf8(&prefix), utf8(&conf));
    let mut p = victim.spawn(&[nginx, "-p", prefix_s, "-c", conf_s, "-e", "stderr"]);
    let pid_file = prefix.join("nginx.pid");
    let deadline = Instant::now() + START_TIMEOUT;
    while !pid_file.exists() {
        if !p.running() || Instant::now() >= deadline {
            let err = p.stderr();
            p.terminate();
            panic!("lab: nginx did not start (`{}`):\n{err}", p.cmd());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// The configuration: every path under `prefix`, one server on `listen`.
fn config(prefix: &Path, listen: &str) -> String {
    let p = utf8(prefix);
    format!(
        "daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile {files};
pid {p}/nginx.pid;
lock_file {p}/nginx.lock;
error_log stderr warn;
events {{
    worker_connections {WORKER_CONNECTIONS};
}}
http {{
    access_log off;
    server_tokens off;
    default_type text/plain;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen {listen};
        location / {{
            return 200 ok;
        }}
    }}
}}
",
        files = WORKER_CONNECTIONS * 2 + 64
    )
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("lab: a UTF-8 temp path")
}
