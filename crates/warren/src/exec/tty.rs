//! This process's terminal: its size, and raw mode while keystrokes go to a remote PTY.

use std::io::IsTerminal;

use anyhow::{Context, Result};

/// Rows and columns of this terminal, if stdout or stdin is one.
pub(super) fn terminal_size() -> Option<(u16, u16)> {
    use std::os::fd::AsFd;
    let size = |fd: std::os::fd::BorrowedFd<'_>| {
        rustix::termios::tcgetwinsize(fd)
            .ok()
            .map(|w| (w.ws_row, w.ws_col))
    };
    let out = std::io::stdout();
    let inp = std::io::stdin();
    (out.is_terminal().then(|| size(out.as_fd())).flatten())
        .or_else(|| inp.is_terminal().then(|| size(inp.as_fd())).flatten())
}

/// The terminal in raw mode for as long as this lives.
pub(super) struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawMode")
    }
}

impl RawMode {
    /// Switches stdin's terminal to raw mode; `None` when stdin is not a terminal.
    pub(super) fn enable() -> Result<Option<Self>> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("cannot put the terminal in raw mode")?;
        Ok(Some(Self { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}
