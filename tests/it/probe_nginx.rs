//! The TLS probe against a real nginx (tests/it/support/nginx.rs), cross-checked with
//! `openssl s_client`; plus in-process fakes, named as such, for what nginx cannot do on
//! demand: a port that accepts and never speaks, a TLS endpoint that alternates certificates on
//! every connection, and scripted STARTTLS dialogues (smtp, imap, pop3).

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use certctl::material::Expected;
use certctl::material::{Fingerprint, KeySource, Material, MaterialSpec};
use certctl::probe::{Offer, ProbeError, ProbeSpec, Schedule, StartTls, probe_once, verify};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use support::nginx::{Nginx, Site};
use support::pki::{Leaf, Pki};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Generous: the machine is shared and may be slow; nothing here asserts on time.
const TIMEOUT: Duration = Duration::from_secs(10);

fn material(leaf: &Leaf) -> Material {
    Material::load(&MaterialSpec::new(
        leaf.name.clone(),
        leaf.cert.clone(),
        Some(leaf.chain.clone().into()),
        KeySource::File(leaf.key.clone()),
    ))
    .unwrap()
}

fn spec(address: &str, sni: &str, attempts: u32, consecutive: u32) -> ProbeSpec {
    ProbeSpec {
        address: address.to_string(),
        sni: sni.to_string(),
        starttls: StartTls::None,
        schedule: Schedule {
            attempts,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(50),
        },
        timeout: TIMEOUT,
        consecutive,
        offer: Offer::default(),
    }
}

fn fp(text: &str) -> Fingerprint {
    Fingerprint::parse(text).unwrap_or_else(|| panic!("not a fingerprint: {text:?}"))
}

#[tokio::test]
async fn probe_sees_the_leaf_and_chain_openssl_sees() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let leaf = pki.leaf("a", &["a.test", "localhost", "127.0.0.1"]);
    let nginx = Nginx::start("a.test", &leaf.fullchain, &leaf.key);

    let served = probe_once(&nginx.addr.to_string(), "a.test", StartTls::None, TIMEOUT)
        .await
        .unwrap();
    let openssl = nginx
        .served_fingerprint(Some("a.test"))
        .expect("openssl sees a certificate");
    assert_eq!(served.leaf.to_string(), openssl);
    assert_eq!(served.leaf.to_string(), leaf.openssl_fingerprint());
    let chain: Vec<Fingerprint> = pki
        .chain_ders()
        .iter()
        .map(|d| Fingerprint::of_der(d))
        .collect();
    assert_eq!(served.chain, chain);
    assert!(
        nginx.chain_verifies(Some("a.test"), &pki.root_crt()),
        "openssl: nginx must send the intermediate"
    );

    let m = material(&leaf);
    assert_eq!(served.subject, m.leaf.subject);
    assert_eq!(served.not_after, m.leaf.not_after);
    assert_eq!(served.leaf, m.expected().leaf);
    assert_eq!(served.chain, m.expected().chain);
}

#[tokio::test]
async fn sni_is_separate_from_the_dialled_address() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["b.test"]);
    let nginx = Nginx::start_sites(&[
        Site::new("a.test", &a.fullchain, &a.key).default_server(),
        Site::new("b.test", &b.fullchain, &b.key),
    ]);
    let addr = nginx.addr.to_string();
    let served = |sni: &'static str| {
        let addr = addr.clone();
        async move {
            probe_once(&addr, sni, StartTls::None, TIMEOUT)
                .await
                .unwrap()
                .leaf
        }
    };
    assert_eq!(served("b.test").await, fp(&b.openssl_fingerprint()));
    assert_eq!(
        nginx.served_fingerprint(Some("b.test")),
        Some(b.openssl_fingerprint())
    );
    assert_eq!(served("a.test").await, fp(&a.openssl_fingerprint()));
    // No SNI (empty, or an IP) and an unknown name get the default_server.
    for sni in ["", "127.0.0.1", "unknown.test"] {
        assert_eq!(
            served(sni).await,
            fp(&a.openssl_fingerprint()),
            "sni {sni:?}"
        );
    }
    assert_eq!(
        nginx.served_fingerprint(None),
        Some(a.openssl_fingerprint())
    );
}

#[tokio::test]
async fn verify_passes_on_the_right_certificate_and_fails_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let served = pki.leaf("a", &["a.test"]);
    let other = pki.leaf("b", &["b.test"]);
    let nginx = Nginx::start("a.test", &served.fullchain, &served.key);
    let addr = nginx.addr.to_string();
    let cancel = CancellationToken::new();

    let pass = verify(
        &spec(&addr, "a.test", 5, 2),
        &material(&served).expected(),
        &cancel,
    )
    .await;
    assert!(pass.passed && !pass.cancelled, "{pass:?}");
    assert_eq!(pass.attempts.len(), 2);
    assert_eq!(
        pass.last_served.as_ref().unwrap().leaf,
        fp(&served.openssl_fingerprint())
    );

    let wrong = material(&other).expected();
    let fail = verify(&spec(&addr, "a.test", 3, 1), &wrong, &cancel).await;
    assert!(!fail.passed && !fail.cancelled);
    assert_eq!(fail.attempts.len(), 3);
    let detail = format!(
        "served leaf {} (expected {})",
        served.openssl_fingerprint(),
        other.openssl_fingerprint()
    );
    for attempt in &fail.attempts {
        assert_eq!(attempt.detail.as_deref(), Some(detail.as_str()));
        assert_eq!(attempt.served, Some(fp(&served.openssl_fingerprint())));
    }
    assert!(
        fail.attempts
            .windows(2)
            .all(|w| w[1].at_ms >= w[0].at_ms + 50),
        "{:?}",
        fail.attempts
    );

    // Right leaf, but we expected no intermediate: the chain counts too.
    let leaf_only = Expected {
        leaf: fp(&served.openssl_fingerprint()),
        chain: vec![],
    };
    let chain = verify(&spec(&addr, "a.test", 1, 1), &leaf_only, &cancel).await;
    assert!(!chain.passed);
    assert_eq!(
        chain.attempts[0].detail.as_deref(),
        Some("chain differs: served 1 intermediate, expected 0")
    );
}

#[tokio::test]
async fn a_server_without_a_usable_key_fails_the_handshake() {
    // EC certificate with an RSA key: nginx starts (nginx -t passes), every handshake fails.
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let leaf = pki.leaf("a", &["a.test"]);
    let nginx = Nginx::start("a.test", &leaf.fullchain, &pki.rsa_key());
    assert_eq!(
        nginx.served_fingerprint(Some("a.test")),
        None,
        "openssl agrees: no certificate"
    );
    let err = probe_once(&nginx.addr.to_string(), "a.test", StartTls::None, TIMEOUT)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProbeError::Failed { .. }), "{text}");
    assert!(text.contains("TLS handshake"), "{text}");
}

#[tokio::test]
async fn nothing_listening_and_plain_text_ports_are_clear_failures() {
    let addr = support::free_addr().to_string();
    let err = probe_once(&addr, "a.test", StartTls::None, TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("{addr}: connect: ")) && err.contains("refused"),
        "{err}"
    );

    // A fake plain-text server (an HTTP port by mistake).
    let listener = TcpListener::bind(support::free_addr()).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let err = probe_once(&addr, "a.test", StartTls::None, TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TLS handshake") && err.contains("did not answer with TLS"),
        "{err}"
    );
}

#[tokio::test]
async fn a_fake_port_that_never_speaks_times_out() {
    let listener = TcpListener::bind(support::free_addr()).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let timeout = Duration::from_millis(300);
    let err = probe_once(&addr, "a.test", StartTls::None, timeout)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "{addr}: connected, but the TLS handshake timed out after 300ms (is this a TLS port?)"
        )
    );
    let err = probe_once(&addr, "a.test", StartTls::Smtp, timeout)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("{addr}: connected, but the SMTP STARTTLS exchange timed out after 300ms")
    );
    held.abort();
}

fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf.fullchain)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    Arc::new(config)
}

/// A fake TLS endpoint that serves `leaves[n % len]` on its n-th connection: what a
/// load-balanced pool with one stale backend looks like.
async fn fake_alternating_server(leaves: &[&Leaf]) -> SocketAddr {
    let acceptors: Vec<TlsAcceptor> = leaves
        .iter()
        .map(|l| TlsAcceptor::from(server_config(l)))
        .collect();
    let listener = TcpListener::bind(support::free_addr()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = AtomicUsize::new(0);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor =
                acceptors[next.fetch_add(1, Ordering::Relaxed) % acceptors.len()].clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_fake_flapping_endpoint_is_caught_by_consecutive() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let new = pki.leaf("new", &["a.test"]);
    let old = pki.leaf("old", &["a.test"]);
    let expected = material(&new).expected();
    let cancel = CancellationToken::new();

    let addr = fake_alternating_server(&[&new, &old]).await.to_string();
    let strict = verify(&spec(&addr, "a.test", 4, 2), &expected, &cancel).await;
    assert!(!strict.passed, "{strict:?}");
    let seen: Vec<Fingerprint> = strict.attempts.iter().map(|a| a.served.unwrap()).collect();
    let (n, o) = (
        fp(&new.openssl_fingerprint()),
        fp(&old.openssl_fingerprint()),
    );
    // Four scheduled probes, each match followed by a (free) confirming one 100 ms later.
    assert_eq!(seen, [n, o, n, o, n, o, n, o]);
    assert_eq!(
        strict
            .attempts
            .iter()
            .map(|a| a.matched)
            .collect::<Vec<_>>(),
        [true, false, true, false, true, false, true, false]
    );

    // One match is enough with consecutive = 1: the flap goes unnoticed.
    let addr = fake_alternating_server(&[&new, &old]).await.to_string();
    let lax = verify(&spec(&addr, "a.test", 4, 1), &expected, &cancel).await;
    assert!(lax.passed);
    assert_eq!(lax.attempts.len(), 1);
}

/// One line of a fake plain-text dialogue before TLS.
enum Say {
    /// Send these bytes.
    Send(&'static str),
    /// Read one line; it must start with this.
    Expect(&'static str),
}

/// A fake STARTTLS server: plays `script`, then (if `tls`) runs the TLS handshake.
async fn fake_starttls_server(script: Vec<Say>, tls: Option<&Leaf>) -> String {
    let acceptor = tls.map(|l| TlsAcceptor::from(server_config(l)));
    let listener = TcpListener::bind(support::free_addr()).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = BufReader::new(stream);
        for step in script {
            match step {
                Say::Send(text) => conn.get_mut().write_all(text.as_bytes()).await.unwrap(),
                Say::Expect(prefix) => {
                    let mut line = String::new();
                    conn.read_line(&mut line).await.unwrap();
                    assert!(
                        line.starts_with(prefix),
                        "fake server expected {prefix:?}, got {line:?}"
                    );
                }
            }
        }
        match acceptor {
            Some(acceptor) => {
                let _ = acceptor.accept(conn.into_inner()).await;
            }
            // Keep the connection open until the client gives up.
            None => {
                let mut rest = String::new();
                let _ = conn.read_line(&mut rest).await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn starttls_dialogues_reach_the_certificate() {
    use Say::{Expect, Send};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let leaf = pki.leaf("mail", &["mail.test"]);
    let want = fp(&leaf.openssl_fingerprint());

    let smtp = vec![
        Send("220-mail.test ESMTP fake\r\n220 second greeting line\r\n"),
        Expect("EHLO certctl.invalid"),
        Send("250-mail.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"),
        Expect("STARTTLS"),
        Send("220 2.0.0 Ready to start TLS\r\n"),
    ];
    let imap = vec![
        Send("* OK [CAPABILITY IMAP4rev1 STARTTLS] fake ready\r\n"),
        Expect("a1 STARTTLS"),
        Send("* NOTE something untagged\r\na1 OK Begin TLS negotiation now\r\n"),
    ];
    let pop3 = vec![
        Send("+OK fake POP3 ready\r\n"),
        Expect("STLS"),
        Send("+OK Begin TLS\r\n"),
    ];
    for (mode, script) in [
        (StartTls::Smtp, smtp),
        (StartTls::Imap, imap),
        (StartTls::Pop3, pop3),
    ] {
        let addr = fake_starttls_server(script, Some(&leaf)).await;
        let served = probe_once(&addr, "mail.test", mode, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(served.leaf, want, "{mode:?}");
        assert_eq!(served.chain.len(), 1);
    }
}

#[tokio::test]
async fn starttls_refusals_quote_the_server_sanitised() {
    use Say::{Expect, Send};
    let cases: Vec<(StartTls, Vec<Say>, &str)> = vec![
        (
            StartTls::Smtp,
            vec![Send("554 5.3.2 go away\x1b[31m\r\n")],
            "SMTP greeting was `554 5.3.2 go away?[31m`, expected 220",
        ),
        (
            StartTls::Smtp,
            vec![
                Send("220 hi\r\n"),
                Expect("EHLO"),
                Send("250-mail.test\r\n250 SIZE 1000\r\n"),
            ],
            "the SMTP server does not offer STARTTLS (EHLO reply: `250-mail.test | 250 SIZE 1000`)",
        ),
        (
            StartTls::Smtp,
            vec![
                Send("220 hi\r\n"),
                Expect("EHLO"),
                Send("250 STARTTLS\r\n"),
                Expect("STARTTLS"),
                Send("454 4.7.0 TLS not available\r\n"),
            ],
            "SMTP reply to STARTTLS was `454 4.7.0 TLS not available`, expected 220",
        ),
        (
            StartTls::Smtp,
            vec![
                Send("220 hi\r\n"),
                Expect("EHLO"),
                Send("250 STARTTLS\r\n"),
                Expect("STARTTLS"),
                Send("220 go\r\nINJECTED\r\n"),
            ],
            "the SMTP server sent unexpected data after its STARTTLS reply",
        ),
        (
            StartTls::Imap,
            vec![Send("* BYE too busy\r\n")],
            "IMAP greeting was `* BYE too busy`, expected `* OK`",
        ),
        (
            StartTls::Imap,
            vec![
                Send("* OK hi\r\n"),
                Expect("a1 STARTTLS"),
                Send("a1 NO not now\r\n"),
            ],
            "IMAP server refused STARTTLS: `a1 NO not now`",
        ),
        (
            StartTls::Pop3,
            vec![
                Send("+OK hi\r\n"),
                Expect("STLS"),
                Send("-ERR no TLS here\r\n"),
            ],
            "POP3 server refused STLS: `-ERR no TLS here`",
        ),
        (
            StartTls::Pop3,
            vec![],
            "the POP3 server closed the connection",
        ),
    ];
    for (mode, script, message) in cases {
        let closes = script.is_empty();
        let addr = if closes {
            // A fake that accepts and closes at once.
            let listener = TcpListener::bind(support::free_addr()).await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            tokio::spawn(async move {
                let _ = listener.accept().await;
            });
            addr
        } else {
            fake_starttls_server(script, None).await
        };
        let err = probe_once(&addr, "mail.test", mode, TIMEOUT)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(err, format!("{addr}: {message}"), "{mode:?}");
    }
}
