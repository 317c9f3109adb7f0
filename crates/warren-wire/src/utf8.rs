//! Splitting a byte stream into valid UTF-8 text without losing offsets: the WebSocket protocol
//! carries text, and the client's resume cursor is `offset + len(utf8(data))`, so a character
//! split across two agent chunks is held back until its last byte arrives.

/// Per-stream decoder state.
#[derive(Debug, Default)]
pub struct Utf8Splitter {
    pending: Vec<u8>,
    pending_offset: u64,
}

impl Utf8Splitter {
    /// Feeds bytes that start at `offset`; returns the text that is complete now and the offset
    /// of its first byte, if any.
    pub fn push(&mut self, offset: u64, data: &[u8]) -> Option<(u64, String)> {
        let mut bytes = std::mem::take(&mut self.pending);
        let mut start = self.pending_offset;
        if bytes.is_empty() || start + bytes.len() as u64 != offset {
            // Nothing held, or a gap (the agent's ring dropped bytes): start afresh here.
            bytes.clear();
            start = offset;
        }
        bytes.extend_from_slice(data);
        let mut text = String::new();
        let mut rest: &[u8] = &bytes;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    text.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: wait for its remaining bytes.
                        None => {
                            rest = after;
                            break;
                        }
                        // Bytes that are not UTF-8 at all become U+FFFD.
                        Some(n) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                    }
                }
            }
        }
        let consumed = (bytes.len() - rest.len()) as u64;
        self.pending = rest.to_vec();
        self.pending_offset = start + consumed;
        (!text.is_empty()).then_some((start, text))
    }

    /// Flushes a held partial character at the end of the stream.
    pub fn finish(&mut self) -> Option<(u64, String)> {
        if self.pending.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some((self.pending_offset, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_chunks_is_held_back() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut s = Utf8Splitter::default();
        assert_eq!(s.push(0, b"ab"), Some((0, "ab".into())));
        assert_eq!(s.push(2, &euro[..1]), None);
        assert_eq!(s.push(3, &euro[1..]), Some((2, "€".into())));
        assert_eq!(s.push(5, b"c"), Some((5, "c".into())));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut s = Utf8Splitter::default();
        assert_eq!(s.push(0, b"a\xffb"), Some((0, "a\u{fffd}b".into())));
        assert_eq!(s.push(3, b"\xe2\x82"), None);
        assert_eq!(s.finish(), Some((3, "\u{fffd}".into())));
    }

    #[test]
    fn a_gap_restarts_at_the_new_offset() {
        let mut s = Utf8Splitter::default();
        assert_eq!(s.push(0, b"\xe2"), None);
        assert_eq!(s.push(100, b"x"), Some((100, "x".into())));
    }
}
