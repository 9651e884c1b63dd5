//! Plain CDR (XCDR1, little endian) as used by ROS 2, with the 4-byte encapsulation header.
//!
//! Implemented as a serde data format, so every message type is a plain `#[derive(Serialize,
//! Deserialize)]` struct. Mapping:
//! - structs and fixed-size arrays (`[T; N]`, serde tuples): fields in order, no length;
//! - sequences (`Vec<T>`): `u32` count, then the elements;
//! - byte sequences (`#[serde(with = "serde_bytes")]`): `u32` count, then the bytes (one memcpy);
//! - strings: `u32` length including the NUL, the bytes, the NUL;
//! - primitives aligned to their size, relative to the first byte after the header.
//!
//! Decoding untrusted input never panics and never allocates more than the input could hold:
//! every length is checked against the bytes that remain before anything is reserved.

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{self, Serialize};

use crate::error::{Error, Result};

/// The encapsulation header of plain little-endian CDR.
pub const HEADER_LE: [u8; 4] = [0x00, 0x01, 0x00, 0x00];

/// Encodes `msg` into `out`, replacing its contents. Reusing `out` makes encoding allocation-free
/// once it has grown to the message size.
pub fn encode_into<T: Serialize + ?Sized>(msg: &T, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    out.extend_from_slice(&HEADER_LE);
    let mut ser = Serializer {
        out,
        origin: HEADER_LE.len(),
    };
    msg.serialize(&mut ser)
}

/// Encodes `msg` into a new vector.
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Decodes a message (header included). Up to 3 trailing padding bytes are accepted, as some
/// DDS implementations pad messages to a multiple of 4.
pub fn decode<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T> {
    let Some((header, body)) = bytes.split_first_chunk::<4>() else {
        return Err(Error::NoHeader(bytes.len()));
    };
    if header[0] != 0x00 || header[1] != 0x01 {
        return Err(Error::BadHeader(*header));
    }
    let mut de = Deserializer {
        input: body,
        pos: 0,
    };
    let value = T::deserialize(&mut de)?;
    let trailing = body.len() - de.pos;
    if trailing > 3 {
        return Err(Error::TrailingBytes(trailing));
    }
    Ok(value)
}

struct Serializer<'a> {
    out: &'a mut Vec<u8>,
    origin: usize,
}

impl Serializer<'_> {
    #[inline]
    fn align(&mut self, n: usize) {
        let pos = self.out.len() - self.origin;
        let pad = (n - pos % n) % n;
        for _ in 0..pad {
            self.out.push(0);
        }
    }

    #[inline]
    fn put_len(&mut self, len: usize) -> Result<()> {
        let len =
            u32::try_from(len).map_err(|_| Error::Unsupported("sequence longer than 2^32-1"))?;
        self.align(4);
        self.out.extend_from_slice(&len.to_le_bytes());
        Ok(())
    }
}

macro_rules! ser_prim {
    ($fn:ident, $t:ty) => {
        #[inline]
        fn $fn(self, v: $t) -> Result<()> {
            self.align(std::mem::size_of::<$t>());
            self.out.extend_from_slice(&v.to_le_bytes());
            Ok(())
        }
    };
}

impl ser::Serializer for &mut Serializer<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out.push(u8::from(v));
        Ok(())
    }
    ser_prim!(serialize_i8, i8);
    ser_prim!(serialize_i16, i16);
    ser_prim!(serialize_i32, i32);
    ser_prim!(serialize_i64, i64);
    ser_prim!(serialize_u8, u8);
    ser_prim!(serialize_u16, u16);
    ser_prim!(serialize_u32, u32);
    ser_prim!(serialize_u64, u64);
    ser_prim!(serialize_f32, f32);
    ser_prim!(serialize_f64, f64);

    fn serialize_char(self, _v: char) -> Result<()> {
        Err(Error::Unsupported(
            "char is not a ROS 2 field type; use u8 or string",
        ))
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        self.put_len(v.len() + 1)?;
        self.out.extend_from_slice(v.as_bytes());
        self.out.push(0);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.put_len(v.len())?;
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<()> {
        Err(Error::Unsupported("Option is not a ROS 2 field type"))
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _v: &T) -> Result<()> {
        Err(Error::Unsupported("Option is not a ROS 2 field type"))
    }
    fn serialize_unit(self) -> Result<()> {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        // An empty ROS 2 message carries one dummy byte.
        self.out.push(0);
        Ok(())
    }
    fn serialize_unit_variant(self, _n: &'static str, _i: u32, _v: &'static str) -> Result<()> {
        Err(Error::Unsupported("enums are not ROS 2 field types"))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _n: &'static str,
        v: &T,
    ) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _value: &T,
    ) -> Result<()> {
        Err(Error::Unsupported("enums are not ROS 2 field types"))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        let len = len.ok_or(Error::Unsupported("sequence of unknown length"))?;
        self.put_len(len)?;
        Ok(self)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _n: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(Error::Unsupported("enums are not ROS 2 field types"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap> {
        Err(Error::Unsupported("maps are not ROS 2 field types"))
    }
    fn serialize_struct(self, _n: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(Error::Unsupported("enums are not ROS 2 field types"))
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

impl ser::SerializeSeq for &mut Serializer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<()> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}
impl ser::SerializeTuple for &mut Serializer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<()> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}
impl ser::SerializeTupleStruct for &mut Serializer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<()> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}
impl ser::SerializeStruct for &mut Serializer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _k: &'static str, v: &T) -> Result<()> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}

struct Deserializer<'de> {
    input: &'de [u8],
    pos: usize,
}

impl<'de> Deserializer<'de> {
    #[inline]
    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        let Some(slice) = self.input.get(self.pos..self.pos.saturating_add(n)) else {
            return Err(Error::Eof {
                at: self.pos + 4,
                needed: n - self.remaining(),
            });
        };
        self.pos += n;
        Ok(slice)
    }

    #[inline]
    fn align(&mut self, n: usize) -> Result<()> {
        let pad = (n - self.pos % n) % n;
        self.take(pad).map(|_| ())
    }

    #[inline]
    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.align(N)?;
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Reads a `u32` length and checks that at least `len * min_elem` bytes remain.
    fn read_len(&mut self, min_elem: usize) -> Result<usize> {
        let at = self.pos + 4;
        let len = u32::from_le_bytes(self.take_array::<4>()?) as usize;
        if len.saturating_mul(min_elem) > self.remaining() {
            return Err(Error::LengthTooLarge {
                at,
                len,
                remaining: self.remaining(),
            });
        }
        Ok(len)
    }

    fn read_str(&mut self) -> Result<&'de str> {
        let at = self.pos + 4;
        let len = self.read_len(1)?;
        if len == 0 {
            // Some writers send a zero length for the empty string.
            return Ok("");
        }
        let bytes = self.take(len)?;
        let Some((&0, text)) = bytes.split_last() else {
            return Err(Error::StringNotTerminated { at });
        };
        std::str::from_utf8(text).map_err(|_| Error::StringNotUtf8 { at })
    }
}

macro_rules! de_prim {
    ($fn:ident, $visit:ident, $t:ty) => {
        #[inline]
        fn $fn<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            let v = <$t>::from_le_bytes(self.take_array::<{ std::mem::size_of::<$t>() }>()?);
            visitor.$visit(v)
        }
    };
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value> {
        Err(Error::Unsupported(
            "CDR is not self-describing; a typed target is needed",
        ))
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let at = self.pos + 4;
        match self.take(1)? {
            [0] => visitor.visit_bool(false),
            [1] => visitor.visit_bool(true),
            [value, ..] => Err(Error::BadBool { at, value: *value }),
            [] => Err(Error::Eof { at, needed: 1 }),
        }
    }
    de_prim!(deserialize_i8, visit_i8, i8);
    de_prim!(deserialize_i16, visit_i16, i16);
    de_prim!(deserialize_i32, visit_i32, i32);
    de_prim!(deserialize_i64, visit_i64, i64);
    de_prim!(deserialize_u8, visit_u8, u8);
    de_prim!(deserialize_u16, visit_u16, u16);
    de_prim!(deserialize_u32, visit_u32, u32);
    de_prim!(deserialize_u64, visit_u64, u64);
    de_prim!(deserialize_f32, visit_f32, f32);
    de_prim!(deserialize_f64, visit_f64, f64);

    fn deserialize_char<V: Visitor<'de>>(self, _v: V) -> Result<V::Value> {
        Err(Error::Unsupported("char is not a ROS 2 field type"))
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.read_str()?)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.read_len(1)?;
        visitor.visit_borrowed_bytes(self.take(len)?)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }
    fn deserialize_option<V: Visitor<'de>>(self, _v: V) -> Result<V::Value> {
        Err(Error::Unsupported("Option is not a ROS 2 field type"))
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.take(1)?;
        visitor.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        // Every element of every ROS 2 type takes at least one byte.
        let len = self.read_len(1)?;
        visitor.visit_seq(Counted {
            de: self,
            left: len,
        })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Counted {
            de: self,
            left: len,
        })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_seq(Counted {
            de: self,
            left: len,
        })
    }
    fn deserialize_map<V: Visitor<'de>>(self, _v: V) -> Result<V::Value> {
        Err(Error::Unsupported("maps are not ROS 2 field types"))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_seq(Counted {
            de: self,
            left: fields.len(),
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _n: &'static str,
        _variants: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value> {
        Err(Error::Unsupported("enums are not ROS 2 field types"))
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, _v: V) -> Result<V::Value> {
        Err(Error::Unsupported("identifiers are not encoded in CDR"))
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value> {
        Err(Error::Unsupported("CDR fields cannot be skipped"))
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

struct Counted<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Counted<'_, 'de> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        // Never hint more elements than bytes remain, so `Vec` preallocation stays bounded.
        Some(self.left.min(self.de.remaining()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Mixed {
        a: u8,
        b: f64,
        s: String,
        v: Vec<u16>,
        fixed: [i32; 2],
        flag: bool,
    }

    #[test]
    fn alignment_is_relative_to_body_and_strings_carry_nul() {
        let m = Mixed {
            a: 7,
            b: 1.5,
            s: "hi".into(),
            v: vec![1, 2],
            fixed: [-1, 3],
            flag: true,
        };
        let bytes = encode(&m).unwrap();
        let mut expect = vec![0, 1, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0];
        expect.extend_from_slice(&1.5f64.to_le_bytes());
        expect.extend_from_slice(&[3, 0, 0, 0, b'h', b'i', 0, 0]);
        expect.extend_from_slice(&[2, 0, 0, 0, 1, 0, 2, 0]);
        expect.extend_from_slice(&(-1i32).to_le_bytes());
        expect.extend_from_slice(&3i32.to_le_bytes());
        expect.push(1);
        assert_eq!(bytes, expect);
        assert_eq!(decode::<Mixed>(&bytes).unwrap(), m);
    }

    #[test]
    fn huge_sequence_length_is_rejected_before_allocating() {
        let mut bytes = HEADER_LE.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = decode::<Vec<f64>>(&bytes).unwrap_err();
        assert!(matches!(err, Error::LengthTooLarge { .. }), "{err}");
    }

    #[test]
    fn big_endian_and_short_input_are_errors() {
        assert_eq!(
            decode::<u8>(&[0, 0, 0, 0, 1]),
            Err(Error::BadHeader([0, 0, 0, 0]))
        );
        assert_eq!(decode::<u8>(&[0, 1]), Err(Error::NoHeader(2)));
        assert!(matches!(
            decode::<u64>(&[0, 1, 0, 0, 1, 2]),
            Err(Error::Eof { .. })
        ));
    }

    #[test]
    fn unterminated_and_non_utf8_strings_are_errors() {
        let bytes = [0, 1, 0, 0, 2, 0, 0, 0, b'a', b'b'];
        assert!(matches!(
            decode::<String>(&bytes),
            Err(Error::StringNotTerminated { .. })
        ));
        let bytes = [0, 1, 0, 0, 2, 0, 0, 0, 0xff, 0];
        assert!(matches!(
            decode::<String>(&bytes),
            Err(Error::StringNotUtf8 { .. })
        ));
    }
}
