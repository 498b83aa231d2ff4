//! PEM, both ways: a line scanner that splits text into blocks with a precise message for
//! every malformed input (truncated, binary DER, a BEGIN without END, corrupt base64), and the
//! canonical writer (64 columns, `\n`, a trailing newline) every uploaded file goes through.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

/// One `-----BEGIN X-----` … `-----END X-----` block.
pub(super) struct PemBlock {
    pub(super) label: String,
    /// 1-based line of the BEGIN line.
    pub(super) line: usize,
    /// RFC 1421 `Proc-Type: 4,ENCRYPTED` header (OpenSSL's traditional encrypted keys).
    pub(super) encrypted: bool,
    /// The base64 text, whitespace removed. Zeroized: it may be a key.
    body: Zeroizing<String>,
}

impl PemBlock {
    /// The DER bytes; `index` is the block's 1-based position, for messages.
    pub(super) fn decode(&self, index: usize) -> Result<Zeroizing<Vec<u8>>, String> {
        let der = BASE64.decode(self.body.as_bytes()).map_err(|e| {
            format!(
                "PEM block {index} (`-----BEGIN {}-----` at line {}) is corrupt: invalid base64 ({e})",
                self.label, self.line
            )
        })?;
        Ok(Zeroizing::new(der))
    }
}

/// Splits PEM text into blocks. Text outside blocks (comments, `Bag Attributes`) is ignored.
/// An empty result means "no PEM here"; callers say what they expected.
pub(super) fn scan_pem(bytes: &[u8]) -> Result<Vec<PemBlock>, String> {
    if looks_binary(bytes) {
        return Err(if bytes.first() == Some(&0x30) {
            "is binary DER, not PEM".to_string()
        } else {
            "is binary, not a PEM text file".to_string()
        });
    }
    let mut blocks = Vec::new();
    let mut open: Option<PemBlock> = None;
    for (n, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = n + 1;
        let line = raw.trim_ascii();
        if let Some(rest) = line.strip_prefix(b"-----BEGIN ") {
            let label = rest
                .strip_suffix(b"-----")
                .ok_or_else(|| format!("line {line_no}: malformed PEM BEGIN line"))?;
            let label = String::from_utf8_lossy(label).into_owned();
            if let Some(previous) = &open {
                return Err(format!(
                    "truncated PEM: `-----BEGIN {}-----` at line {} has no END line before the next BEGIN at line {line_no}",
                    previous.label, previous.line
                ));
            }
            open = Some(PemBlock {
                label,
                line: line_no,
                encrypted: false,
                body: Zeroizing::new(String::new()),
            });
        } else if let Some(rest) = line.strip_prefix(b"-----END ") {
            let label = rest.strip_suffix(b"-----").unwrap_or(rest);
            let block = open
                .take()
                .ok_or_else(|| format!("line {line_no}: PEM END line without a BEGIN line"))?;
            if label != block.label.as_bytes() {
                return Err(format!(
                    "line {line_no}: `-----END {}-----` does not close `-----BEGIN {}-----` (line {})",
                    String::from_utf8_lossy(label),
                    block.label,
                    block.line
                ));
            }
            blocks.push(block);
        } else if let Some(block) = open.as_mut() {
            if line.contains(&b':') {
                // RFC 1421 headers: `Proc-Type: 4,ENCRYPTED`, `DEK-Info: …`.
                if line.starts_with(b"Proc-Type:") && line.windows(9).any(|w| w == b"ENCRYPTED") {
                    block.encrypted = true;
                }
                continue;
            }
            let text = std::str::from_utf8(line).map_err(|_| {
                format!(
                    "line {line_no}: PEM block `{}` holds non-text bytes",
                    block.label
                )
            })?;
            block
                .body
                .extend(text.chars().filter(|c| !c.is_ascii_whitespace()));
        }
    }
    if let Some(block) = open {
        return Err(format!(
            "truncated PEM: `-----BEGIN {}-----` at line {} has no `-----END {}-----` line",
            block.label, block.line, block.label
        ));
    }
    Ok(blocks)
}

/// NUL or control bytes other than whitespace: DER, PKCS#12, or some other binary file.
pub(super) fn looks_binary(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .take(4096)
        .any(|b| *b == 0 || (*b < 0x20 && !b.is_ascii_whitespace()) || *b == 0x7f)
}

/// Writes `der` as PEM: 64-column base64, `\n` line ends, a trailing newline.
pub(super) fn encode_pem(label: &str, der: &[u8], out: &mut Vec<u8>) {
    let b64 = Zeroizing::new(BASE64.encode(der));
    let lines = b64.len().div_ceil(64);
    out.reserve(b64.len() + lines + 2 * (label.len() + 17));
    out.extend_from_slice(b"-----BEGIN ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.extend_from_slice(chunk);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
}

pub(super) fn is_key_label(label: &str) -> bool {
    label.ends_with("PRIVATE KEY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_encoding_is_canonical() {
        let der: Vec<u8> = (0..=255u8).collect();
        let mut out = Vec::new();
        encode_pem("CERTIFICATE", &der, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text.ends_with("-----END CERTIFICATE-----\n"));
        let body: Vec<&str> = text
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("-----"))
            .collect();
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == 64));
        assert!(body.last().unwrap().len() <= 64);
        let blocks = scan_pem(&out).unwrap();
        assert_eq!(&*blocks[0].decode(1).unwrap(), &der);
    }

    #[test]
    fn scanner_reports_truncation_binary_and_headers() {
        let err = scan_pem(b"-----BEGIN CERTIFICATE-----\nMIIB\n")
            .err()
            .unwrap();
        assert!(
            err.contains("truncated PEM") && err.contains("line 1"),
            "{err}"
        );
        let err = scan_pem(b"-----BEGIN PRIVATE KEY-----\nAA\n-----BEGIN CERTIFICATE-----\n")
            .err()
            .unwrap();
        assert!(
            err.contains("truncated PEM") && err.contains("line 3"),
            "{err}"
        );
        let err = scan_pem(&[0x30, 0x82, 0x01, 0x0a, 0x02]).err().unwrap();
        assert!(err.contains("binary DER"), "{err}");
        let err = scan_pem(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END PRIVATE KEY-----\n")
            .err()
            .unwrap();
        assert!(err.contains("does not close"), "{err}");
        let blocks = scan_pem(
            b"junk\r\n-----BEGIN RSA PRIVATE KEY-----\r\nProc-Type: 4,ENCRYPTED\r\nDEK-Info: AES-128-CBC,00\r\n\r\nAAAA\r\n-----END RSA PRIVATE KEY-----\r\n",
        )
        .unwrap();
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].encrypted);
        assert_eq!(blocks[0].body.as_str(), "AAAA");
        let err = scan_pem(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
            .unwrap()[0]
            .decode(1)
            .err()
            .unwrap();
        assert!(err.contains("invalid base64"), "{err}");
    }
}
