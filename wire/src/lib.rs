//! The packed batch encoding of the `rulehost:rule` world's `packed` interface (0.1.3):
//! a batch of events and a list of findings each cross the wasm boundary as one byte
//! string, copied in one go, instead of being lowered field by field. `wit/rule.wit`
//! documents the layout; this crate holds its primitives and tags, so the host and the
//! SDK cannot disagree on them.
//!
//! Integers are little-endian. A string is its byte length (`u32`) and its UTF-8 bytes.
//! Every tag is the index of the case in the WIT type it encodes.

use std::fmt;

/// Bytes of an event's fixed head: timestamp, pid, tid, ppid, uid, the container's
/// presence and handle, and the body's tag. One bounds check reads all of it.
pub const EVENT_HEAD_BYTES: usize = 8 + 4 * 4 + 1 + 8 + 1;

/// Little-endian integers at fixed offsets of a fixed-size record already read whole
/// ([`Reader::array`]): the offsets are constants, so no check is left at run time.
pub mod at {
    #[inline]
    pub fn u16<const N: usize>(bytes: &[u8; N], at: usize) -> u16 {
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    #[inline]
    pub fn u32<const N: usize>(bytes: &[u8; N], at: usize) -> u32 {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    #[inline]
    pub fn u64<const N: usize>(bytes: &[u8; N], at: usize) -> u64 {
        (u64::from(u32(bytes, at + 4)) << 32) | u64::from(u32(bytes, at))
    }
}

/// `event-body` cases.
pub mod body {
    pub const PROCESS_EXEC: u8 = 0;
    pub const SOCKET_CONNECT: u8 = 1;
}

/// `socket-address` cases.
pub mod address {
    pub const IPV4: u8 = 0;
    pub const IPV6: u8 = 1;
    pub const UNIX: u8 = 2;
    pub const OTHER: u8 = 3;
}

/// `ip-address` cases.
pub mod ip {
    pub const IPV4: u8 = 0;
    pub const IPV6: u8 = 1;
}

/// `value` cases.
pub mod value {
    pub const TEXT: u8 = 0;
    pub const SIGNED: u8 = 1;
    pub const UNSIGNED: u8 = 2;
    pub const BOOLEAN: u8 = 3;
    pub const IP: u8 = 4;
    pub const CONTAINER_ID: u8 = 5;
    pub const COMM: u8 = 6;
}

/// Appends the encoding's primitives to a byte buffer: a growing `Vec<u8>`, or space
/// already made for a whole record (the SDK's finding writer).
pub trait Put {
    /// Raw bytes, as they are.
    fn put_bytes(&mut self, bytes: &[u8]);

    #[inline]
    fn put_u8(&mut self, value: u8) {
        self.put_bytes(&[value]);
    }

    #[inline]
    fn put_u16(&mut self, value: u16) {
        self.put_bytes(&value.to_le_bytes());
    }

    #[inline]
    fn put_u32(&mut self, value: u32) {
        self.put_bytes(&value.to_le_bytes());
    }

    #[inline]
    fn put_u64(&mut self, value: u64) {
        self.put_bytes(&value.to_le_bytes());
    }

    /// A string: its length as `u32`, then its bytes. Longer than `u32::MAX` bytes is
    /// cut there (no rule or event carries one; the reader never reads past the buffer).
    #[inline]
    fn put_str(&mut self, text: &str) {
        let bytes = &text.as_bytes()[..text.len().min(u32::MAX as usize)];
        self.put_u32(bytes.len() as u32);
        self.put_bytes(bytes);
    }
}

impl Put for Vec<u8> {
    #[inline]
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    #[inline]
    fn put_u8(&mut self, value: u8) {
        self.push(value);
    }
}

/// Why bytes are not a valid encoding, and where: the reader's whole error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// Offset of the first byte that could not be read.
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed packed bytes at offset {}: {}",
            self.at, self.what
        )
    }
}

impl std::error::Error for Malformed {}

/// A string's bytes as read, with where they start, before the UTF-8 check.
#[derive(Debug, Clone, Copy)]
pub struct Text<'a> {
    pub at: usize,
    pub bytes: &'a [u8],
}

impl<'a> Text<'a> {
    /// The string; not UTF-8 is malformed.
    #[inline]
    pub fn to_str(self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes).map_err(|_| Malformed {
            at: self.at,
            what: "a string that is not UTF-8",
        })
    }
}

/// Reads the encoding's primitives from untrusted bytes: every read is bounds-checked
/// and fails with [`Malformed`], never panics.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// Bytes not read yet.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// A [`Malformed`] at the current offset.
    #[inline]
    pub fn error(&self, what: &'static str) -> Malformed {
        Malformed { at: self.at, what }
    }

    /// The next `N` bytes, where they are: fields are read from the encoding itself, not
    /// from a copy (in wasm, reading a fresh copy back stalls on store forwarding).
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<&'a [u8; N], Malformed> {
        let bytes = self.take(N)?;
        Ok(bytes.try_into().expect("take returned N bytes"))
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    pub fn u16(&mut self) -> Result<u16, Malformed> {
        self.array().map(|bytes| u16::from_le_bytes(*bytes))
    }

    #[inline]
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        self.array().map(|bytes| u32::from_le_bytes(*bytes))
    }

    #[inline]
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        self.array().map(|bytes| u64::from_le_bytes(*bytes))
    }

    /// A boolean: 0 or 1, anything else is malformed.
    #[inline]
    pub fn bool(&mut self) -> Result<bool, Malformed> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed {
                at: self.at - 1,
                what: "a boolean that is neither 0 nor 1",
            }),
        }
    }

    /// A string, borrowed from the bytes; not UTF-8 is malformed.
    #[inline]
    pub fn str(&mut self) -> Result<&'a str, Malformed> {
        self.text()?.to_str()
    }

    /// A string not checked yet: a reader that already knows a valid string with
    /// these bytes (a field name it has seen) skips the UTF-8 check.
    #[inline]
    pub fn text(&mut self) -> Result<Text<'a>, Malformed> {
        let len = self.u32()? as usize;
        let at = self.at;
        let bytes = self.take(len)?;
        Ok(Text { at, bytes })
    }

    /// A count of items each at least `min_bytes` long: more than the bytes left could
    /// hold is malformed, so a hostile count never makes the caller reserve memory.
    #[inline]
    pub fn count(&mut self, min_bytes: usize) -> Result<usize, Malformed> {
        let start = self.at;
        let count = self.u32()? as usize;
        if count.saturating_mul(min_bytes.max(1)) > self.remaining() {
            return Err(Malformed {
                at: start,
                what: "a count larger than the bytes that follow",
            });
        }
        Ok(count)
    }

    /// Fails unless every byte was read.
    #[inline]
    pub fn finish(&self) -> Result<(), Malformed> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.error("bytes after the end"))
        }
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        if len > self.remaining() {
            return Err(self.error("ends early"));
        }
        let bytes = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut bytes = Vec::new();
        bytes.put_u8(7);
        bytes.put_u16(0xbeef);
        bytes.put_u32(0xdead_beef);
        bytes.put_u64(u64::MAX - 1);
        bytes.put_str("κόσμε");
        bytes.put_u8(1);
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u8(), Ok(7));
        assert_eq!(reader.u16(), Ok(0xbeef));
        assert_eq!(reader.u32(), Ok(0xdead_beef));
        assert_eq!(reader.u64(), Ok(u64::MAX - 1));
        assert_eq!(reader.str(), Ok("κόσμε"));
        assert_eq!(reader.bool(), Ok(true));
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn short_and_hostile_input_is_an_error_naming_the_offset() {
        let mut reader = Reader::new(&[1, 2, 3]);
        assert_eq!(reader.u32().unwrap_err().at, 0);
        let mut huge = Vec::new();
        huge.put_u32(u32::MAX);
        assert_eq!(Reader::new(&huge).str().unwrap_err().what, "ends early");
        assert_eq!(Reader::new(&huge).count(1).unwrap_err().at, 0);
        let mut bad = Vec::new();
        bad.put_u32(2);
        bad.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(Reader::new(&bad).str().unwrap_err().at, 4);
        assert_eq!(Reader::new(&[2]).bool().unwrap_err().at, 0);
        let reader = Reader::new(&[0]);
        assert_eq!(reader.finish().unwrap_err().what, "bytes after the end");
    }
}
