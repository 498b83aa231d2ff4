//! What a file or input will contain: the material in each role, built on the controller,
//! and its SHA-256. Pure.

use sha2::{Digest, Sha256};

use crate::connector::Role;
use crate::material::Material;
use crate::plan::PlannedFile;
use crate::secret::Secret;

/// Largest certificate file read back from a target.
pub(super) const CERT_READ_LIMIT: usize = 1 << 20;

/// A file's new content: public certificates, or a secret.
pub(super) enum FileBytes {
    Public(Vec<u8>),
    Secret(Secret),
}

impl FileBytes {
    pub fn bytes(&self) -> &[u8] {
        match self {
            FileBytes::Public(b) => b,
            FileBytes::Secret(s) => s.expose(),
        }
    }
}

/// The material in one role. A keystore has no content of ours: the target's tools build it.
pub(super) fn material_bytes(material: &Material, role: Role) -> FileBytes {
    match role {
        Role::Cert => FileBytes::Public(material.cert_pem()),
        Role::Chain => FileBytes::Public(material.chain_pem()),
        Role::Fullchain => FileBytes::Public(material.fullchain_pem()),
        Role::Key => FileBytes::Secret(material.key_pem().clone()),
        Role::Bundle => FileBytes::Secret(material.bundle_pem()),
        Role::Rendered | Role::Keystore => FileBytes::Public(Vec::new()),
    }
}

pub(super) fn content_for(material: &Material, planned: &PlannedFile) -> FileBytes {
    match planned.role {
        Role::Rendered => {
            FileBytes::Public(planned.rendered.clone().unwrap_or_default().into_bytes())
        }
        role => material_bytes(material, role),
    }
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The new content's SHA-256 (empty for a keystore, whose bytes the target builds).
pub(super) fn new_sha256(material: &Material, planned: &PlannedFile) -> String {
    if planned.role.is_built_by_engine() {
        sha256_hex(content_for(material, planned).bytes())
    } else {
        String::new()
    }
}
