//! What each file role holds, as bytes: the leaf, the intermediates, both, the key, and
//! HAProxy's bundle, all canonical PEM re-encoded from DER.

use super::Material;
use super::pem::encode_pem;
use crate::secret::Secret;

impl Material {
    /// Leaf PEM alone.
    pub fn cert_pem(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_pem("CERTIFICATE", &self.leaf.der, &mut out);
        out
    }

    /// Intermediates PEM (possibly empty).
    pub fn chain_pem(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for cert in &self.chain {
            encode_pem("CERTIFICATE", &cert.der, &mut out);
        }
        out
    }

    /// Leaf then intermediates.
    pub fn fullchain_pem(&self) -> Vec<u8> {
        let mut out = self.cert_pem();
        out.extend_from_slice(&self.chain_pem());
        out
    }

    pub fn key_pem(&self) -> &Secret {
        &self.key_pem
    }

    /// Leaf + intermediates + key (HAProxy's bundle).
    pub fn bundle_pem(&self) -> Secret {
        let certs = self.fullchain_pem();
        let key = self.key_pem.expose();
        // One allocation of the final size, so no partial copy of the key is left behind in
        // a freed buffer.
        let mut out = Vec::with_capacity(certs.len() + key.len());
        out.extend_from_slice(&certs);
        out.extend_from_slice(key);
        Secret::new(out)
    }
}
