//! A server with an RSA and an ECDSA certificate for the same name (issue 14, part 3): a real
//! nginx, apache and haproxy each hold both and pick by what the client offers. The probe,
//! offering only one key kind's signature schemes (and, on TLS 1.2, cipher suites), must see
//! each certificate in turn, on TLS 1.2 and on TLS 1.3; without a restriction it still sees one
//! of the two. Certificates are issued at test time; each server gets its own loopback address.

use crate::support;

use std::time::Duration;

use certctl::material::{Expected, Fingerprint, KeyKind};
use certctl::probe::{
    Offer, ProbeSpec, Schedule, StartTls, TlsVersion, probe_once, probe_once_offering, verify,
};
use support::apache::Apache;
use support::haproxy::Haproxy;
use support::nginx::{Nginx, Site};
use support::pki::{KeyType, Leaf, LeafOpts, Pki};
use tokio_util::sync::CancellationToken;

/// Generous: the machine is shared and may be slow; nothing here asserts on time.
const TIMEOUT: Duration = Duration::from_secs(10);
const NAME: &str = "dual.test";

/// An RSA and an ECDSA leaf for [`NAME`], from one CA.
struct Pair {
    pki: Pki,
    rsa: Leaf,
    ecdsa: Leaf,
    _dir: tempfile::TempDir,
}

impl Pair {
    fn new() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let rsa = pki.issue("rsa", LeafOpts::new(&[NAME]).key(KeyType::Rsa2048));
        let ecdsa = pki.issue("ecdsa", LeafOpts::new(&[NAME]).key(KeyType::EcP256));
        Pair {
            pki,
            rsa,
            ecdsa,
            _dir: dir,
        }
    }

    fn leaf(&self, kind: KeyKind) -> Fingerprint {
        match kind {
            KeyKind::Rsa => Fingerprint::of_der(&self.rsa.der),
            KeyKind::Ecdsa => Fingerprint::of_der(&self.ecdsa.der),
            KeyKind::Ed25519 => unreachable!("no Ed25519 leaf here"),
        }
    }

    fn chain(&self) -> Vec<Fingerprint> {
        let ders = self.pki.chain_ders();
        ders.iter().map(|d| Fingerprint::of_der(d)).collect()
    }

    /// haproxy's form: leaf, chain and key in one PEM.
    fn bundle(&self, leaf: &Leaf) -> std::path::PathBuf {
        let mut pem = std::fs::read(&leaf.fullchain).unwrap();
        pem.extend_from_slice(leaf.key_pem.as_bytes());
        self.pki
            .write_file(&format!("{}.bundle.pem", leaf.name), &pem)
    }

    /// What an endpoint holding both serves, per offer: each key kind on each TLS version
    /// sees its own leaf (and the chain); no restriction sees one of the two.
    async fn assert_served_by_offer(&self, address: &str) {
        for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
            for kind in [KeyKind::Rsa, KeyKind::Ecdsa] {
                let offer = Offer::key(kind).on(version);
                let served = probe_once_offering(address, NAME, StartTls::None, offer, TIMEOUT)
                    .await
                    .unwrap_or_else(|e| panic!("{address}, {offer}: {e}"));
                assert_eq!(served.leaf, self.leaf(kind), "{address}, {offer}");
                assert_eq!(served.chain, self.chain(), "{address}, {offer}");
            }
            // Only the version restricted: the server's choice, one of the two.
            let offer = Offer::default().on(version);
            let served = probe_once_offering(address, NAME, StartTls::None, offer, TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("{address}, {offer}: {e}"));
            assert!(
                [self.leaf(KeyKind::Rsa), self.leaf(KeyKind::Ecdsa)].contains(&served.leaf),
                "{address}, {offer}: {}",
                served.leaf
            );
        }
        let served = probe_once(address, NAME, StartTls::None, TIMEOUT)
            .await
            .unwrap();
        assert!([self.leaf(KeyKind::Rsa), self.leaf(KeyKind::Ecdsa)].contains(&served.leaf));
    }

    /// [`verify`] honours [`ProbeSpec::offer`]: expecting the RSA leaf passes when the probe
    /// offers RSA only, and fails (the ECDSA leaf served) when it offers ECDSA only.
    async fn assert_verify_uses_the_offer(&self, address: &str) {
        let expected = Expected {
            leaf: self.leaf(KeyKind::Rsa),
            chain: self.chain(),
        };
        let spec = |kind| ProbeSpec {
            address: address.to_string(),
            sni: NAME.to_string(),
            starttls: StartTls::None,
            schedule: Schedule {
                attempts: 1,
                backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(50),
            },
            timeout: TIMEOUT,
            consecutive: 1,
            offer: Offer::key(kind),
        };
        let cancel = CancellationToken::new();
        let v = verify(&spec(KeyKind::Rsa), &expected, &cancel).await;
        assert!(v.passed, "{:?}", v.attempts);
        let v = verify(&spec(KeyKind::Ecdsa), &expected, &cancel).await;
        assert!(!v.passed);
        assert_eq!(v.attempts[0].served, Some(self.leaf(KeyKind::Ecdsa)));
    }
}

#[tokio::test]
async fn nginx_shows_each_certificate_to_the_probe_that_offers_its_kind() {
    let pair = Pair::new();
    let site = Site::new(NAME, &pair.rsa.fullchain, &pair.rsa.key)
        .also(&pair.ecdsa.fullchain, &pair.ecdsa.key)
        .tls13();
    let nginx = Nginx::start_sites(&[site]);
    let address = nginx.addr.to_string();
    pair.assert_served_by_offer(&address).await;
    pair.assert_verify_uses_the_offer(&address).await;
}

#[tokio::test]
async fn apache_shows_each_certificate_to_the_probe_that_offers_its_kind() {
    let pair = Pair::new();
    let apache = Apache::start_with(
        NAME,
        &pair.rsa.cert,
        &pair.rsa.chain,
        &pair.rsa.key,
        &[(&pair.ecdsa.cert, &pair.ecdsa.key)],
    );
    let address = apache.addr.to_string();
    pair.assert_served_by_offer(&address).await;
    pair.assert_verify_uses_the_offer(&address).await;
}

#[tokio::test]
async fn haproxy_shows_each_certificate_to_the_probe_that_offers_its_kind() {
    let pair = Pair::new();
    let (rsa, ecdsa) = (pair.bundle(&pair.rsa), pair.bundle(&pair.ecdsa));
    let haproxy = Haproxy::start_bundles(&[&rsa, &ecdsa]);
    let address = haproxy.addr.to_string();
    pair.assert_served_by_offer(&address).await;
    pair.assert_verify_uses_the_offer(&address).await;
}

/// A server with no certificate of the kind offered refuses the handshake; the probe fails
/// (it does not fall back to what it was not asked for) and says what it offered.
#[tokio::test]
async fn a_kind_the_server_does_not_hold_fails_and_says_what_was_offered() {
    let pair = Pair::new();
    let site = Site::new(NAME, &pair.ecdsa.fullchain, &pair.ecdsa.key).tls13();
    let nginx = Nginx::start_sites(&[site]);
    let address = nginx.addr.to_string();
    for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let offer = Offer::key(KeyKind::Rsa).on(version);
        let err = probe_once_offering(&address, NAME, StartTls::None, offer, TIMEOUT)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("TLS handshake"), "{err}");
        assert!(
            err.contains(&format!(
                "(the probe offered RSA signatures only, {version} only)"
            )),
            "{err}"
        );
    }
    let offer = Offer::key(KeyKind::Ecdsa);
    let served = probe_once_offering(&address, NAME, StartTls::None, offer, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(served.leaf, pair.leaf(KeyKind::Ecdsa));
}
