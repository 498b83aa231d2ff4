//! The DER this writer needs, by hand: definite lengths, single-byte tags, and a reader for
//! the one place a certificate is parsed (its public-key algorithm). The structures are fixed
//! and small; [`tlv`] sizes every buffer up front, so no reallocation leaves a copy of key
//! material behind.

// DER tags.
pub(super) const INTEGER: u8 = 0x02;
pub(super) const OCTET_STRING: u8 = 0x04;
pub(super) const NULL: u8 = 0x05;
pub(super) const OID: u8 = 0x06;
pub(super) const BMP_STRING: u8 = 0x1e;
pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const SET: u8 = 0x31;
pub(super) const EXPLICIT_0: u8 = 0xa0;
pub(super) const IMPLICIT_0_PRIMITIVE: u8 = 0x80;

/// Reads one DER element: (tag, content, rest). Single-byte tags and definite lengths only.
pub(super) fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, tail) = rest.split_at(n);
        rest = tail;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

pub(super) fn algorithm_identifier(oid: &[u8], null_params: bool) -> Vec<u8> {
    let mut content = tlv(OID, oid);
    if null_params {
        content.extend_from_slice(&[NULL, 0]);
    }
    tlv(SEQUENCE, &content)
}

/// A non-negative DER INTEGER.
pub(super) fn integer(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(3);
    let mut content = bytes[start..].to_vec();
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    tlv(INTEGER, &content)
}

pub(super) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_len(content.len()) + content.len());
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// Tag plus length bytes for a content of `len` bytes.
pub(super) fn header_len(len: usize) -> usize {
    match len {
        0..0x80 => 2,
        0x80..0x100 => 3,
        0x100..0x1_0000 => 4,
        0x1_0000..0x100_0000 => 5,
        _ => 6,
    }
}

pub(super) fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = (len as u32).to_be_bytes();
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(3);
    out.push(0x80 | (4 - start) as u8);
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_and_integers() {
        assert_eq!(tlv(OCTET_STRING, &[]), vec![4, 0]);
        assert_eq!(tlv(OCTET_STRING, &[0; 0x80])[..3], [4, 0x81, 0x80]);
        assert_eq!(tlv(OCTET_STRING, &[0; 0x100])[..4], [4, 0x82, 1, 0]);
        for len in [0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000] {
            assert_eq!(tlv(4, &vec![0; len]).len(), header_len(len) + len, "{len}");
        }
        assert_eq!(integer(0), vec![2, 1, 0]);
        assert_eq!(integer(3), vec![2, 1, 3]);
        assert_eq!(integer(128), vec![2, 2, 0, 128]);
        assert_eq!(integer(2048), vec![2, 2, 8, 0]);
        let (tag, content, rest) = read_tlv(&[0x30, 0x81, 0x01, 0xaa, 0xbb]).unwrap();
        assert_eq!((tag, content, rest), (0x30, &[0xaa][..], &[0xbb][..]));
        assert_eq!(read_tlv(&[0x30, 0x05, 0x00]), None);
    }
}
