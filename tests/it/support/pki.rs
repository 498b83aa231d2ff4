//! Test-time PKI: a root CA, one or more intermediates, and leaves issued for given names,
//! validity and key type, written as files the way operators have them (leaf `.crt`, chain
//! `.pem`, full chain, PKCS#8 `.key` at 0600), plus the broken variants tests need (PKCS#1 /
//! SEC1 keys, encrypted keys, DER, truncated files, a key of another certificate).
//!
//! rcgen signs (EC and Ed25519 keys are generated in-process). ring cannot generate RSA keys,
//! so the one RSA key a test process needs comes from the openssl CLI, once. Fingerprints are
//! cross-checked with `openssl x509 -fingerprint -sha256`, independent of certctl's code.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Which key a leaf gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    EcP256,
    EcP384,
    Rsa2048,
    Ed25519,
    /// RSA of any size, made by the openssl CLI (a new key per leaf; 8192 bits take ~10-60 s).
    /// ring loads only 2048 to 4096 bits, so rcgen signs the leaf for the public key alone.
    Rsa(u32),
}

impl KeyType {
    fn generate(self) -> KeyPair {
        match self {
            KeyType::EcP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            KeyType::EcP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
            // ring writes Ed25519 keys as PKCS#8 v2, which OpenSSL 3.0 (and so nginx) cannot
            // read: let openssl make them, as operators' tools do.
            KeyType::Ed25519 => {
                let pem = openssl_ok(&["genpkey", "-algorithm", "ed25519"]);
                KeyPair::from_pkcs8_pem_and_sign_algo(
                    std::str::from_utf8(&pem).unwrap(),
                    &rcgen::PKCS_ED25519,
                )
                .unwrap()
            }
            KeyType::Rsa2048 => {
                KeyPair::from_pkcs8_pem_and_sign_algo(rsa_key_pem(), &rcgen::PKCS_RSA_SHA256)
                    .unwrap()
            }
            KeyType::Rsa(bits) => panic!("RSA-{bits} is issued through OpensslRsa"),
        }
    }
}

/// An RSA key pair from the openssl CLI: the PKCS#8 PEM, and the public key as rcgen signs it.
struct OpensslRsa {
    pkcs8_pem: String,
    /// PKCS#1 `RSAPublicKey` DER: the SubjectPublicKeyInfo's bit string.
    public_pkcs1: Vec<u8>,
}

impl OpensslRsa {
    fn generate(bits: u32) -> Self {
        let bits = format!("rsa_keygen_bits:{bits}");
        let pem = openssl_ok(&["genpkey", "-algorithm", "RSA", "-pkeyopt", &bits]);
        let public = openssl_with_input(&["rsa", "-RSAPublicKey_out", "-outform", "DER"], &pem);
        OpensslRsa {
            pkcs8_pem: String::from_utf8(pem).unwrap(),
            public_pkcs1: public,
        }
    }
}

impl rcgen::PublicKeyData for OpensslRsa {
    fn der_bytes(&self) -> &[u8] {
        &self.public_pkcs1
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

/// One RSA-2048 PKCS#8 key per test process (openssl takes ~0.5 s to make one).
pub fn rsa_key_pem() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        let out = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .stderr(Stdio::null())
            .output()
            .expect("run openssl genpkey");
        assert!(out.status.success(), "openssl genpkey failed");
        String::from_utf8(out.stdout).unwrap()
    })
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct LeafOpts {
    /// DNS names and IP addresses (as text) for subjectAltName; the first is also the CN.
    pub names: Vec<String>,
    pub key: KeyType,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Override the CN (e.g. a leaf with no SANs, only a CN).
    pub cn: Option<String>,
    /// Issue a CA certificate (CA:TRUE, keyCertSign) for the names instead of a leaf.
    pub ca: bool,
}

impl LeafOpts {
    /// EC P-256, valid from yesterday for 90 days.
    pub fn new(names: &[&str]) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafOpts {
            names: names.iter().map(|n| n.to_string()).collect(),
            key: KeyType::EcP256,
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(90),
            cn: None,
            ca: false,
        }
    }

    /// A CA certificate (basicConstraints CA:TRUE, keyUsage keyCertSign) for the names.
    pub fn ca(mut self) -> Self {
        self.ca = true;
        self
    }

    pub fn key(mut self, key: KeyType) -> Self {
        self.key = key;
        self
    }

    /// Valid from `from` to `to` seconds relative to now (negative = in the past).
    pub fn valid_secs(mut self, from: i64, to: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now + Duration::seconds(from);
        self.not_after = now + Duration::seconds(to);
        self
    }

    pub fn cn(mut self, cn: &str) -> Self {
        self.cn = Some(cn.to_string());
        self
    }
}

/// A CA that can issue.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: Vec<u8>,
}

/// Root → intermediate(s) in a directory; issues leaves into the same directory.
pub struct Pki {
    dir: PathBuf,
    root: Authority,
    /// From the root down: `intermediates[0]` is signed by the root, the last one signs leaves.
    intermediates: Vec<Authority>,
}

/// An issued leaf and its files.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub name: String,
    pub key_type: KeyType,
    /// Leaf alone.
    pub cert: PathBuf,
    /// Intermediates, the one that issued the leaf first.
    pub chain: PathBuf,
    /// Leaf then intermediates.
    pub fullchain: PathBuf,
    /// PKCS#8 private key, mode 0600.
    pub key: PathBuf,
    pub der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
    dir: PathBuf,
}

fn ca_params(cn: &str, path_len: Option<u8>) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(2);
    params.not_after = now + Duration::days(3650);
    params
}

impl Pki {
    /// Root CA and one intermediate, written as `root.crt` and `intermediate.crt` in `dir`.
    pub fn new(dir: &Path) -> Pki {
        Pki::with_intermediates(dir, 1)
    }

    /// Root CA and `depth` intermediates (`intermediate-1.crt` … below the root; with one, just
    /// `intermediate.crt`).
    pub fn with_intermediates(dir: &Path, depth: usize) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params("certctl test root", None);
        let cert = params.self_signed(&root_key).unwrap();
        let root = Authority {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, root_key),
        };
        write(&dir.join("root.crt"), root.pem.as_bytes(), 0o644);

        let mut intermediates: Vec<Authority> = Vec::new();
        for level in 1..=depth {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let params = ca_params(
                &format!("certctl test intermediate {level}"),
                Some((depth - level) as u8),
            );
            let parent = intermediates.last().unwrap_or(&root);
            let cert = params.signed_by(&key, &parent.issuer).unwrap();
            let authority = Authority {
                pem: cert.pem(),
                der: cert.der().to_vec(),
                issuer: Issuer::new(params, key),
            };
            let file = if depth == 1 {
                "intermediate.crt".to_string()
            } else {
                format!("intermediate-{level}.crt")
            };
            write(&dir.join(file), authority.pem.as_bytes(), 0o644);
            intermediates.push(authority);
        }
        Pki {
            dir: dir.to_path_buf(),
            root,
            intermediates,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root CA certificate file (for `openssl s_client -CAfile`).
    pub fn root_crt(&self) -> PathBuf {
        self.dir.join("root.crt")
    }

    /// DER of the intermediates, the one that issues leaves first (the served chain order).
    pub fn chain_ders(&self) -> Vec<Vec<u8>> {
        self.intermediates
            .iter()
            .rev()
            .map(|a| a.der.clone())
            .collect()
    }

    /// PEM of the intermediates, the one that issues leaves first.
    pub fn chain_pem(&self) -> String {
        self.intermediates
            .iter()
            .rev()
            .map(|a| a.pem.as_str())
            .collect()
    }

    /// An EC P-256 leaf for `names`, valid now.
    pub fn leaf(&self, name: &str, names: &[&str]) -> Leaf {
        self.issue(name, LeafOpts::new(names))
    }

    /// Issues a leaf signed by the lowest intermediate and writes `NAME.crt`, `NAME.chain.pem`,
    /// `NAME.fullchain.pem` and `NAME.key` (PKCS#8, 0600).
    pub fn issue(&self, name: &str, opts: LeafOpts) -> Leaf {
        let mut params = CertificateParams::new(opts.names.clone()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        let cn = opts
            .cn
            .clone()
            .or_else(|| opts.names.first().cloned())
            .unwrap_or_else(|| name.to_string());
        params.distinguished_name.push(DnType::CommonName, cn);
        params.not_before = opts.not_before;
        params.not_after = opts.not_after;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        if opts.ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages.push(KeyUsagePurpose::KeyCertSign);
        }
        let issuer = &self.intermediates.last().unwrap_or(&self.root).issuer;
        let (cert, key_pem) = match opts.key {
            KeyType::Rsa(bits) => {
                let key = OpensslRsa::generate(bits);
                (params.signed_by(&key, issuer).unwrap(), key.pkcs8_pem)
            }
            other => {
                let key = other.generate();
                (params.signed_by(&key, issuer).unwrap(), key.serialize_pem())
            }
        };

        let cert_pem = cert.pem();
        let leaf = Leaf {
            name: name.to_string(),
            key_type: opts.key,
            cert: self.dir.join(format!("{name}.crt")),
            chain: self.dir.join(format!("{name}.chain.pem")),
            fullchain: self.dir.join(format!("{name}.fullchain.pem")),
            key: self.dir.join(format!("{name}.key")),
            der: cert.der().to_vec(),
            cert_pem,
            key_pem,
            dir: self.dir.clone(),
        };
        write(&leaf.cert, leaf.cert_pem.as_bytes(), 0o644);
        write(&leaf.chain, self.chain_pem().as_bytes(), 0o644);
        write(
            &leaf.fullchain,
            format!("{}{}", leaf.cert_pem, self.chain_pem()).as_bytes(),
            0o644,
        );
        write(&leaf.key, leaf.key_pem.as_bytes(), 0o600);
        leaf
    }

    /// A self-signed leaf (no chain), for tests that need an unrelated issuer.
    pub fn self_signed(&self, name: &str, names: &[&str]) -> Leaf {
        let key = KeyType::EcP256.generate();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(name));
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(90);
        let cert = params.self_signed(&key).unwrap();
        let leaf = Leaf {
            name: name.to_string(),
            key_type: KeyType::EcP256,
            cert: self.dir.join(format!("{name}.crt")),
            chain: self.dir.join(format!("{name}.chain.pem")),
            fullchain: self.dir.join(format!("{name}.fullchain.pem")),
            key: self.dir.join(format!("{name}.key")),
            der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            dir: self.dir.clone(),
        };
        write(&leaf.cert, leaf.cert_pem.as_bytes(), 0o644);
        write(&leaf.chain, b"", 0o644);
        write(&leaf.fullchain, leaf.cert_pem.as_bytes(), 0o644);
        write(&leaf.key, leaf.key_pem.as_bytes(), 0o600);
        leaf
    }

    /// A certificate with the intermediate's exact name but another key (signed by the root):
    /// names chain up, signatures do not. Written as `impostor.crt`.
    pub fn impostor_intermediate(&self) -> PathBuf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let depth = self.intermediates.len();
        let params = ca_params(&format!("certctl test intermediate {depth}"), Some(0));
        let parent = if depth >= 2 {
            &self.intermediates[depth - 2]
        } else {
            &self.root
        };
        let cert = params.signed_by(&key, &parent.issuer).unwrap();
        let path = self.dir.join("impostor.crt");
        write(&path, cert.pem().as_bytes(), 0o644);
        path
    }

    /// Another EC P-256 key (PKCS#8) that matches no certificate: `wrong.key`.
    pub fn wrong_key(&self) -> PathBuf {
        let path = self.dir.join("wrong.key");
        write(
            &path,
            KeyType::EcP256.generate().serialize_pem().as_bytes(),
            0o600,
        );
        path
    }

    /// An RSA-2048 key (PKCS#8): `rsa.key`.
    pub fn rsa_key(&self) -> PathBuf {
        let path = self.dir.join("rsa.key");
        write(&path, rsa_key_pem().as_bytes(), 0o600);
        path
    }

    /// The first `bytes` bytes of `src`, as `SRC.trunc` (mode 0600: it may be a key).
    pub fn truncated(&self, src: &Path, bytes: usize) -> PathBuf {
        let data = std::fs::read(src).unwrap();
        let path = with_suffix(src, "trunc");
        write(&path, &data[..bytes.min(data.len())], 0o600);
        path
    }

    /// Writes `content` to `dir/name` (mode 0600).
    pub fn write_file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        write(&path, content, 0o600);
        path
    }
}

impl Leaf {
    /// SHA-256 fingerprint as printed by `openssl x509 -fingerprint -sha256` (`AB:CD:…`).
    pub fn openssl_fingerprint(&self) -> String {
        openssl_fingerprint(&self.cert)
    }

    /// The key in OpenSSL's traditional format: PKCS#1 (`RSA PRIVATE KEY`) for RSA, SEC1
    /// (`EC PRIVATE KEY`) for EC, PKCS#8 still for Ed25519. `NAME.trad.key`.
    pub fn traditional_key(&self) -> PathBuf {
        let path = self.dir.join(format!("{}.trad.key", self.name));
        if self.key_type == KeyType::Ed25519 {
            // Ed25519 has no traditional format: PKCS#8 is all there is.
            write(&path, self.key_pem.as_bytes(), 0o600);
            return path;
        }
        openssl_ok(&[
            "pkey",
            "-in",
            path_str(&self.key),
            "-traditional",
            "-out",
            path_str(&path),
        ]);
        path
    }

    /// The key encrypted with a passphrase (`ENCRYPTED PRIVATE KEY`): `NAME.enc.key`.
    pub fn encrypted_key(&self) -> PathBuf {
        let path = self.dir.join(format!("{}.enc.key", self.name));
        openssl_ok(&[
            "pkey",
            "-in",
            path_str(&self.key),
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            path_str(&path),
        ]);
        path
    }

    /// The key as traditional PEM with `Proc-Type: 4,ENCRYPTED`: `NAME.enc-trad.key`.
    pub fn encrypted_traditional_key(&self) -> PathBuf {
        let path = self.dir.join(format!("{}.enc-trad.key", self.name));
        openssl_ok(&[
            "pkey",
            "-in",
            path_str(&self.key),
            "-traditional",
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            path_str(&path),
        ]);
        path
    }

    /// The certificate as DER: `NAME.der`.
    pub fn der_file(&self) -> PathBuf {
        let path = self.dir.join(format!("{}.der", self.name));
        write(&path, &self.der, 0o644);
        path
    }
}

/// `openssl x509 -noout -fingerprint -sha256` of the first certificate in `path`.
pub fn openssl_fingerprint(path: &Path) -> String {
    let out = openssl_ok(&[
        "x509",
        "-in",
        path_str(path),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    let text = String::from_utf8(out).unwrap();
    text.trim().rsplit('=').next().unwrap().to_string()
}

/// Runs openssl with `args`; panics with its stderr on failure; returns stdout.
pub fn openssl_ok(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs openssl with `args` and `input` on stdin; panics on failure; returns stdout.
fn openssl_with_input(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Writes a file with `mode` from the start (never briefly world-readable).
fn write(path: &Path, content: &[u8], mode: u32) {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap();
    file.write_all(content).unwrap();
}
