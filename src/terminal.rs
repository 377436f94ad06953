//! The terminal of `ftagent top`: keys read one at a time without echo (restored however the
//! view ends), the window's height, and the alternate screen redrawn with plain ANSI escapes.

use std::io::{self, Write};
use std::time::Duration;

/// Whether `fd` is a terminal.
pub fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Lines in the terminal on stdout (24 when unknown).
pub fn rows() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize; on failure it is left zeroed.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    if rc == 0 && size.ws_row > 0 {
        usize::from(size.ws_row)
    } else {
        24
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
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios we own.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let saved = t;
        t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
        t.c_cc[libc::VMIN] = 0;
        t.c_cc[libc::VTIME] = 0;
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) } != 0 {
            return Err(io::Error::last_os_error());
        }
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
        let mut fd = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll on one pollfd we own.
        if unsafe { libc::poll(&mut fd, 1, ms) } <= 0 {
            return false;
        }
        let mut keys = [0u8; 16];
        // SAFETY: read into a buffer we own, within its length.
        let n = unsafe { libc::read(libc::STDIN_FILENO, keys.as_mut_ptr().cast(), keys.len()) };
        n > 0
            && keys[..n as usize]
                .iter()
                .any(|k| matches!(k, b'q' | b'Q' | 0x03 | 0x04))
    }
}

impl Drop for LiveScreen {
    fn drop(&mut self) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(LEAVE.as_bytes());
        let _ = out.flush();
        // SAFETY: puts back the settings read in `enter`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}
