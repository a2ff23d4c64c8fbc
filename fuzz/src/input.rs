//! How a target reads the fuzzer's bytes.
//!
//! Text targets split them into fields at NUL bytes: neither TOML, nor a header, nor an
//! environment variable holds one, so a seed is readable text with `\0` between its parts
//! (`printf 'a\0b'`). Targets that build a value take numbers and strings off the front with a
//! [`Reader`]; every byte string reads as some value, so no input is wasted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outrigger_core::Header;

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z).
pub const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// The parts of `data` between NUL bytes.
pub fn fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == 0).collect()
}

/// Bytes as text, invalid UTF-8 replaced, as a broker client would hand over a name.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `name=value` as a header whose value keeps its bytes; without `=`, an empty value.
pub fn header(field: &[u8]) -> Header {
    match field.iter().position(|&b| b == b'=') {
        Some(at) => Header::new(
            text(&field[..at]),
            bytes::Bytes::copy_from_slice(&field[at + 1..]),
        ),
        None => Header::new(text(field), bytes::Bytes::new()),
    }
}

/// Takes numbers and strings off the front of the input; past its end, zeros and `""`.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// One byte.
    pub fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// Eight bytes, little-endian; fewer are padded with zeros.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0; 8];
        let taken = self.take(8);
        b[..taken.len()].copy_from_slice(taken);
        u64::from_le_bytes(b)
    }

    /// The low 32 bits of [`u64`](Self::u64).
    pub fn u32(&mut self) -> u32 {
        self.u64() as u32
    }

    /// A string: a length byte, then that many bytes, invalid UTF-8 replaced.
    pub fn string(&mut self) -> String {
        let len = self.byte();
        text(self.take(usize::from(len)))
    }

    /// `Some` of what `f` reads, or `None`, as the next byte's low bit says.
    pub fn option<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        (self.byte() & 1 == 1).then(|| f(self))
    }

    /// A time with millisecond precision that RFC 3339 can write, as every time the sidecar
    /// puts in a header is (the clock, or a time read back from such a header).
    pub fn time(&mut self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.u64() % (MAX_RFC3339_MS + 1))
    }

    /// What is left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}
