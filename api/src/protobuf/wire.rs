//! The protobuf wire format, read-only: varints, fixed-width numbers and
//! length-delimited fields over a byte slice, each step checked so that
//! truncated or malformed input is an error, never a panic.

use super::DecodeError;

/// How a field's value is laid out on the wire (the low three key bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

impl WireType {
    fn from_bits(bits: u64) -> Result<WireType, DecodeError> {
        Ok(match bits {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            5 => WireType::Fixed32,
            // 3 and 4 are proto1 groups, which Kubernetes never writes.
            other => return Err(DecodeError::InvalidWireType(other as u8)),
        })
    }
}

/// A field's raw value, not yet interpreted by the schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

impl Raw<'_> {
    pub fn wire_type(&self) -> WireType {
        match self {
            Raw::Varint(_) => WireType::Varint,
            Raw::Fixed64(_) => WireType::Fixed64,
            Raw::Len(_) => WireType::Len,
            Raw::Fixed32(_) => WireType::Fixed32,
        }
    }
}

/// Reads the fields of one message, in order.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// Whether the whole message has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `(field number, value)`, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Raw<'a>)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = key >> 3;
        if tag == 0 || tag > u64::from(u32::MAX >> 3) {
            return Err(DecodeError::InvalidTag(tag));
        }
        let value = match WireType::from_bits(key & 7)? {
            WireType::Varint => Raw::Varint(self.varint()?),
            WireType::Fixed64 => Raw::Fixed64(self.fixed64()?),
            WireType::Fixed32 => Raw::Fixed32(u32::from_le_bytes(self.take_array()?)),
            WireType::Len => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
                Raw::Len(self.take(len)?)
            }
        };
        Ok(Some((tag as u32, value)))
    }

    /// A base-128 varint of at most ten bytes.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for (i, &byte) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                // The tenth byte may only carry the top bit of a u64.
                if i == 9 && byte > 1 {
                    return Err(DecodeError::VarintOverflow);
                }
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        if self.buf.len() >= 10 {
            Err(DecodeError::VarintOverflow)
        } else {
            Err(DecodeError::Truncated)
        }
    }

    /// A little-endian 64-bit number (a packed `double`).
    pub fn fixed64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_the_edges() {
        assert_eq!(Reader::new(&[0]).varint().unwrap(), 0);
        assert_eq!(Reader::new(&[0x96, 0x01]).varint().unwrap(), 150);
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&max).varint().unwrap(), u64::MAX);
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(
            Reader::new(&over).varint(),
            Err(DecodeError::VarintOverflow)
        );
        assert_eq!(Reader::new(&[0x80]).varint(), Err(DecodeError::Truncated));
    }

    #[test]
    fn fields_are_read_in_order_and_checked() {
        // field 1 varint 150, field 2 "hi", field 3 fixed32 1
        let bytes = [0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x1d, 1, 0, 0, 0];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.next_field().unwrap(), Some((1, Raw::Varint(150))));
        assert_eq!(r.next_field().unwrap(), Some((2, Raw::Len(b"hi"))));
        assert_eq!(r.next_field().unwrap(), Some((3, Raw::Fixed32(1))));
        assert_eq!(r.next_field().unwrap(), None);

        // A length running past the end of the message.
        assert_eq!(
            Reader::new(&[0x12, 0x05, b'h']).next_field(),
            Err(DecodeError::Truncated)
        );
        // Wire type 3 (a group start) and field number 0.
        assert_eq!(
            Reader::new(&[0x0b]).next_field(),
            Err(DecodeError::InvalidWireType(3))
        );
        assert_eq!(
            Reader::new(&[0x00, 0x00]).next_field(),
            Err(DecodeError::InvalidTag(0))
        );
    }
}
