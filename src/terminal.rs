//! The terminal of `ftagent top`: keys read one at a time without echo (restored however the
//! view ends), the window's height, and the alternate screen redrawn with plain ANSI escapes.

use std::io::{self, Write};
use std::time::Duration;

use crate::sys;

/// Writes `text` to standard output at once. Its error is the caller's to judge: a reader that
/// went away (`ftagent status | head`) shows as `BrokenPipe`, which `print!` would turn into
/// a panic.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Whether `fd` is a terminal.
pub fn is_tty(fd: i32) -> bool {
    sys::isatty(fd)
}

/// Lines in the terminal on stdout (24 when unknown).
pub fn rows() -> usize {
    match sys::window_rows(io::stdout()) {
        Some(rows) if rows > 0 => usize::from(rows),
        _ => 24,
    }
}

/// The live view's screen: stdin without line buffering, echo or signals (so Ctrl-C arrives
/// as a key and the terminal is always put back), drawing on the alternate screen. Dropping
/// it restores everything.
pub struct LiveScreen {
    saved: libc::termios,
}

const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
const HOME_CLEAR: &str = "\x1b[H\x1b[2J";

impl LiveScreen {
    /// Needs a terminal on stdin.
    pub fn enter() -> io::Result<LiveScreen> {
        let mut t = sys::tcgetattr(io::stdin())?;
        let saved = t;
        t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
        t.c_cc[libc::VMIN] = 0;
        t.c_cc[libc::VTIME] = 0;
        sys::tcsetattr(io::stdin(), &t)?;
        let mut out = io::stdout().lock();
        out.write_all(ENTER.as_bytes())?;
        out.flush()?;
        Ok(LiveScreen { saved })
    }

    /// Replaces the screen's content with `text`.
    pub fn draw(&self, text: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(HOME_CLEAR.as_bytes())?;
        // Output processing is left on: \n still returns the cursor to the left.
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    /// Waits up to `timeout` for a key; true when it asks to quit (q, Q, Ctrl-C, Ctrl-D).
    pub fn quit_requested(&self, timeout: Duration) -> bool {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        if !sys::poll_readable(libc::STDIN_FILENO, ms) {
            return false;
        }
        let mut keys = [0u8; 16];
        let n = sys::read(io::stdin(), &mut keys).unwrap_or(0);
        n > 0
            && keys[..n]
                .iter()
                .any(|k| matches!(k, b'q' | b'Q' | 0x03 | 0x04))
    }
}

impl Drop for LiveScreen {
    fn drop(&mut self) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(LEAVE.as_bytes());
        let _ = out.flush();
        // Puts back the settings read in `enter`.
        let _ = sys::tcsetattr(io::stdin(), &self.saved);
    }
}
