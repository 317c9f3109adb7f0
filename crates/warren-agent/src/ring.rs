//! A bounded byte ring addressed by absolute stream offsets.
//!
//! Offsets count every byte the stream ever produced, so a client can resume from the offset it
//! last saw even after older bytes were dropped. The backing buffer grows with the output and
//! never beyond the capacity, so a command that prints a line costs a line, not the full ring.

/// A byte ring that keeps the newest `cap` bytes of a stream.
#[derive(Debug)]
pub(crate) struct Ring {
    buf: Vec<u8>,
    cap: usize,
    /// Offset one past the newest byte.
    end: u64,
}

impl Ring {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap: cap.max(1),
            end: 0,
        }
    }

    /// Offset of the oldest byte held.
    pub(crate) fn start(&self) -> u64 {
        self.end - self.buf.len() as u64
    }

    /// Offset one past the newest byte.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    fn slot(&self, offset: u64) -> usize {
        // The remainder is below `cap`, which is a usize.
        usize::try_from(offset % self.cap as u64).unwrap_or(0)
    }

    /// Appends bytes, dropping the oldest ones past the capacity.
    pub(crate) fn push(&mut self, mut data: &[u8]) {
        if data.len() > self.cap {
            let skip = data.len() - self.cap;
            self.end += skip as u64;
            data = &data[skip..];
            // Everything held is older than what we keep of `data`; realign so slots stay
            // `offset % cap` once the buffer is full.
            self.buf.clear();
            self.buf.resize(self.cap, 0);
        }
        while !data.is_empty() {
            if self.buf.len() < self.cap {
                // Still growing: the buffer is contiguous from offset 0 (or from a realignment,
                // where it is already full), so appending keeps `slot(offset)` valid.
                let take = data.len().min(self.cap - self.buf.len());
                self.buf.extend_from_slice(&data[..take]);
                self.end += take as u64;
                data = &data[take..];
            } else {
                let at = self.slot(self.end);
                let take = data.len().min(self.cap - at);
                self.buf[at..at + take].copy_from_slice(&data[..take]);
                self.end += take as u64;
                data = &data[take..];
            }
        }
    }

    /// Copies up to `max` bytes starting at `offset` (clamped into the held range).
    /// Returns the offset actually used and the bytes.
    pub(crate) fn read(&self, offset: u64, max: usize) -> (u64, Vec<u8>) {
        let from = offset.clamp(self.start(), self.end);
        let avail = usize::try_from(self.end - from).unwrap_or(usize::MAX);
        let mut want = avail.min(max);
        let mut out = Vec::with_capacity(want);
        let mut at = from;
        while want > 0 {
            let slot = self.slot(at);
            let take = want.min(self.cap - slot).min(self.buf.len() - slot);
            out.extend_from_slice(&self.buf[slot..slot + take]);
            at += take as u64;
            want -= take;
        }
        (from, out)
    }

    /// Gives back memory of a ring that will not grow any more.
    pub(crate) fn shrink(&mut self) {
        self.buf.shrink_to_fit();
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::Ring;

    #[test]
    fn grows_then_wraps_keeping_offsets() {
        let mut r = Ring::new(8);
        r.push(b"abcde");
        assert_eq!((r.start(), r.end()), (0, 5));
        assert_eq!(r.read(1, 3), (1, b"bcd".to_vec()));
        r.push(b"fghij");
        assert_eq!((r.start(), r.end()), (2, 10));
        assert_eq!(r.read(0, 100), (2, b"cdefghij".to_vec()));
        assert_eq!(r.read(7, 100), (7, b"hij".to_vec()));
        assert_eq!(r.read(50, 100), (10, Vec::new()));
        r.push(b"0123456789abc");
        assert_eq!((r.start(), r.end()), (15, 23));
        assert_eq!(r.read(0, 100), (15, b"56789abc".to_vec()));
        r.push(b"XY");
        assert_eq!(r.read(0, 100), (17, b"789abcXY".to_vec()));
    }

    #[test]
    fn byte_for_byte_against_a_model() {
        let mut r = Ring::new(13);
        let mut all = Vec::new();
        let mut x: u32 = 7;
        for round in 0..500u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = (x >> 16) as usize % 20;
            let chunk: Vec<u8> = (0..n).map(|i| (round as usize + i) as u8).collect();
            r.push(&chunk);
            all.extend_from_slice(&chunk);
            let start = all.len().saturating_sub(13);
            assert_eq!(r.start(), start as u64);
            let (from, got) = r.read(0, 1000);
            assert_eq!(from, start as u64);
            assert_eq!(got, all[start..]);
        }
    }
}
