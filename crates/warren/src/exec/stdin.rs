//! This terminal's stdin for the command: read on a plain thread and handed over as text,
//! since the protocol's `input` message carries a JSON string.

use std::io::Read;

use tokio::sync::mpsc;
use warren_wire::Utf8Splitter;

/// Local stdin, as the reader thread hands it over.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Input {
    Data(String),
    Eof,
}

/// Reads stdin on a plain thread: a blocked read must not keep the runtime from shutting
/// down.
pub(super) fn spawn_stdin_reader(tty: bool) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(8);
    // Keystrokes should go out at once; piped input in bigger pieces.
    let len = if tty { 4096 } else { 32 * 1024 };
    std::thread::spawn(move || read_input(std::io::stdin().lock(), len, &tx));
    rx
}

/// Reads `reader` to its end in reads of up to `len` bytes. A character split across two
/// reads is held until its last byte arrives; bytes that are not UTF-8 become U+FFFD.
fn read_input(mut reader: impl Read, len: usize, tx: &mpsc::Sender<Input>) {
    let mut buf = vec![0u8; len];
    let mut text = Utf8Splitter::default();
    let mut offset = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = &buf[..n];
                if let Some((_, data)) = text.push(offset, chunk)
                    && tx.blocking_send(Input::Data(data)).is_err()
                {
                    return;
                }
                offset += chunk.len() as u64;
            }
        }
    }
    if let Some((_, data)) = text.finish() {
        let _ = tx.blocking_send(Input::Data(data));
    }
    let _ = tx.blocking_send(Input::Eof);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte per read, the worst case for splitting.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.split_first() {
                Some((b, rest)) if !buf.is_empty() => {
                    buf[0] = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn read_all(bytes: &'static [u8], len: usize) -> Vec<Input> {
        let (tx, mut rx) = mpsc::channel(8);
        let reader = std::thread::spawn(move || read_input(Trickle(bytes), len, &tx));
        let mut got = Vec::new();
        while let Some(i) = rx.blocking_recv() {
            got.push(i);
        }
        reader.join().unwrap();
        got
    }

    fn text(inputs: &[Input]) -> String {
        inputs
            .iter()
            .map(|i| match i {
                Input::Data(d) => d.as_str(),
                Input::Eof => "<EOF>",
            })
            .collect()
    }

    #[test]
    fn characters_split_across_reads_arrive_whole() {
        let got = read_all("aé€😀".as_bytes(), 4096);
        // One message per complete character, never a partial one.
        assert_eq!(
            got,
            [
                Input::Data("a".into()),
                Input::Data("é".into()),
                Input::Data("€".into()),
                Input::Data("😀".into()),
                Input::Eof,
            ]
        );
    }

    #[test]
    fn bad_and_truncated_bytes_become_replacement_characters() {
        let got = read_all(b"x\xffy\xe2\x82", 4096);
        assert_eq!(text(&got), "x\u{fffd}y\u{fffd}<EOF>");
    }
}
