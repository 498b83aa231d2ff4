//! The TLS probe: what certificate does the live endpoint serve? And the doubling backoff
//! that asks until the expected certificate is served `consecutive` times in a row.
//!
//! Owns: dialing, STARTTLS (smtp/imap/pop3), the rustls handshake with a verifier that accepts
//! any certificate but still checks the handshake signature, the schedule. Does not own what to
//! do on failure (that is [`crate::deploy`]).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::material::{CertInfo, Expected, Fingerprint, sanitize_one_line};

/// Whether (and how) to upgrade a plain connection to TLS before the handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    #[default]
    None,
    Smtp,
    Imap,
    Pop3,
}

/// How to probe one endpoint and how long to keep trying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// `host:port` or `[v6]:port` to dial.
    pub address: String,
    /// Server name sent in the ClientHello (SNI); an IP literal sends none.
    pub sni: String,
    pub starttls: StartTls,
    pub schedule: Schedule,
    /// Connect + STARTTLS + handshake, per probe.
    pub timeout: Duration,
    /// Matching probes in a row needed to pass.
    pub consecutive: u32,
}

/// Probes in total, and the waits between them: backoff, 2×, 4×… each capped at `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

/// What one handshake saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Served {
    pub leaf: Fingerprint,
    /// The certificates after the leaf, in the order served.
    pub chain: Vec<Fingerprint>,
    /// Subject of the served leaf, for messages.
    pub subject: String,
    /// Not-after of the served leaf, seconds since the Unix epoch.
    pub not_after: i64,
    /// Not-before of the served leaf, seconds since the Unix epoch (the policy gate's
    /// "older" check).
    pub not_before: i64,
    /// DNS names and IP addresses of the served leaf (the policy gate's "same names").
    pub sans: Vec<String>,
}

/// One probe in a verification, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// Milliseconds since the verification started.
    pub at_ms: u64,
    pub duration_ms: u64,
    /// Served leaf fingerprint, if the handshake completed.
    pub served: Option<Fingerprint>,
    pub matched: bool,
    /// Why it did not match (wrong leaf, wrong chain, handshake error…).
    pub detail: Option<String>,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub passed: bool,
    pub cancelled: bool,
    pub attempts: Vec<Attempt>,
    /// What the last successful handshake served.
    pub last_served: Option<Served>,
}

/// Why one probe saw no certificate.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The TCP connect did not finish in time. A server that accepts the connection and then
    /// stalls (STARTTLS or handshake) is a [`ProbeError::Failed`] saying which step stalled.
    #[error("{address}: connect timed out after {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("{address}: {message}")]
    Failed { address: String, message: String },
}

impl Schedule {
    /// The waits before probes 2..=attempts: `backoff`, doubling, each capped at `max_backoff`.
    /// Defaults 3 / 1s / 16s give `[1s, 2s]`; `max_backoff == backoff` gives linear waits.
    pub fn waits(&self) -> Vec<Duration> {
        let mut waits = Vec::new();
        let mut next = self.backoff;
        for _ in 1..self.attempts {
            waits.push(next.min(self.max_backoff));
            next = next.saturating_mul(2);
        }
        waits
    }

    /// The longest a verification on this schedule can take with `timeout` per probe: every
    /// wait, every probe timing out, and one more probe for the quick rechecks (they start
    /// inside the first wait, so only the last of them can run past it).
    pub fn worst_case(&self, timeout: Duration) -> Duration {
        let attempts = self.attempts.max(1);
        let mut waits = Duration::ZERO;
        let mut next = self.backoff;
        for done in 1..attempts {
            if next >= self.max_backoff {
                // Every later wait is the cap: no need to walk a huge `attempts` one by one.
                let rest = self.max_backoff.saturating_mul(attempts - done);
                waits = waits.saturating_add(rest);
                break;
            }
            waits = waits.saturating_add(next);
            next = next.saturating_mul(2);
        }
        waits.saturating_add(timeout.saturating_mul(attempts.saturating_add(1)))
    }

    /// [`Schedule::worst_case`] when `consecutive` asks for more than one match: each
    /// scheduled probe may then be followed by one confirming it ([`CONFIRM_GAP`] later).
    pub fn worst_case_confirmed(&self, timeout: Duration, consecutive: u32) -> Duration {
        let base = self.worst_case(timeout);
        if consecutive <= 1 {
            return base;
        }
        let confirm = timeout.saturating_add(CONFIRM_GAP);
        base.saturating_add(confirm.saturating_mul(self.attempts.max(1)))
    }
}

impl ProbeSpec {
    /// When [`verify`] gives up however its probes go: the schedule's worst case, never more
    /// than [`crate::limits::MAX_VERIFY_DURATION`]. The engine may cap a target's verify by it.
    pub fn deadline(&self) -> Duration {
        self.schedule
            .worst_case_confirmed(self.timeout, self.consecutive)
            .min(crate::limits::MAX_VERIFY_DURATION)
    }
}

/// The first gap of the quick rechecks: when the first probe sees another certificate, it is
/// rechecked after 50 ms, then 100 ms, 200 ms… gaps, as long as they fit inside the first
/// `backoff` wait. These rechecks are extra: the schedule's probes (`attempts` of them, at
/// 0, `backoff`, 3×`backoff`…) run as before. An nginx reload returns before the new workers
/// serve (5–30 ms later here), so the first probe after it usually sees the old certificate.
pub const QUICK_RECHECK: Duration = Duration::from_millis(50);

/// The gap before a probe that confirms a match (while `consecutive` asks for more matches in
/// a row): long enough that the server's old workers, which answer for a few milliseconds
/// after a graceful reload, are gone; short enough not to slow a deploy down. Confirming
/// probes are extra, like the quick rechecks: they do not count against `attempts`.
pub const CONFIRM_GAP: Duration = Duration::from_millis(100);

/// Which step a probe is in, to say what stalled when it times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    StartTls(StartTls),
    Handshake,
}

/// [`probe_once`] of a spec's endpoint, within `timeout`.
pub async fn probe_once_for(spec: &ProbeSpec, timeout: Duration) -> Result<Served, ProbeError> {
    probe_once(&spec.address, &spec.sni, spec.starttls, timeout).await
}

/// One probe: dial, optional STARTTLS, handshake; what was served. `timeout` covers all three.
///
/// `sni` empty or an IP literal sends no SNI (the server answers with its default
/// certificate). `address` is anything [`TcpStream::connect`] takes: `host:port`, `[v6]:port`.
pub async fn probe_once(
    address: &str,
    sni: &str,
    starttls: StartTls,
    timeout: Duration,
) -> Result<Served, ProbeError> {
    let failed = |message: String| ProbeError::Failed {
        address: address.to_string(),
        message,
    };
    let mut step = Step::Connect;
    let outcome =
        tokio::time::timeout(timeout, probe_steps(address, sni, starttls, &mut step)).await;
    match outcome {
        Ok(result) => result.map_err(failed),
        Err(_) => match step {
            Step::Connect => Err(ProbeError::Timeout {
                address: address.to_string(),
                timeout,
            }),
            Step::StartTls(mode) => Err(failed(format!(
                "connected, but the {} STARTTLS exchange timed out after {timeout:?}",
                protocol_name(mode)
            ))),
            Step::Handshake => Err(failed(format!(
                "connected, but the TLS handshake timed out after {timeout:?} (is this a TLS port?)"
            ))),
        },
    }
}

async fn probe_steps(
    address: &str,
    sni: &str,
    starttls: StartTls,
    step: &mut Step,
) -> Result<Served, String> {
    let (server_name, send_sni) = server_name(sni)?;
    let mut tcp = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Latency only; a failure here changes nothing we report.
    let _ = tcp.set_nodelay(true);
    if starttls != StartTls::None {
        *step = Step::StartTls(starttls);
        start_tls(&mut tcp, starttls).await?;
    }
    *step = Step::Handshake;
    let connector = TlsConnector::from(client_config(send_sni)?);
    let tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| handshake_error(&e))?;
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("the server sent no certificate")?;
    served_from(certs)
}

/// The `ServerName` rustls needs, and whether to send it as SNI.
fn server_name(sni: &str) -> Result<(ServerName<'static>, bool), String> {
    let sni = sni.trim();
    if sni.is_empty() {
        return Ok((
            ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into()),
            false,
        ));
    }
    if let Ok(ip) = sni
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok((ServerName::IpAddress(ip.into()), false));
    }
    let name = ServerName::try_from(sni.to_string())
        .map_err(|_| format!("`{sni}` is not a valid server name (SNI)"))?;
    Ok((name, true))
}

/// A fresh config per probe, with resumption off: a resumed session carries the certificate
/// of the session it resumes, which after a reload is the OLD one.
fn client_config(send_sni: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { algorithms }))
        .with_no_client_auth();
    config.enable_sni = send_sni;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Accepts any certificate (we compare fingerprints, we do not trust), but still checks the
/// handshake signature, so the server must hold the private key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
            .or_else(|e| large_rsa_signature(message, cert, dss, false).ok_or(e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
            .or_else(|e| large_rsa_signature(message, cert, dss, true).ok_or(e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// ring verifies RSA signatures of keys up to 8192 bits; a server's key of 8193 to 16384 bits
/// is verified by [`crate::large_rsa`] instead. `None` (ring's error stands) otherwise.
fn large_rsa_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    tls13: bool,
) -> Option<HandshakeSignatureValid> {
    crate::large_rsa::verify_handshake(dss.scheme, message, cert, dss.signature(), tls13)
        .ok()
        .map(|()| HandshakeSignatureValid::assertion())
}

fn handshake_error(e: &std::io::Error) -> String {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidMessage(_)) => {
            format!("TLS handshake: {e} (the server did not answer with TLS: plain-text port, or STARTTLS needed?)")
        }
        Some(rustls::Error::AlertReceived(alert)) => format!(
            "TLS handshake: the server refused the handshake (alert {alert:?}); it may have no usable certificate and key for this name"
        ),
        _ if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "TLS handshake: the server closed the connection (not a TLS port, or no certificate for this name?)".to_string()
        }
        _ => format!("TLS handshake: {e}"),
    }
}

fn served_from(certs: &[CertificateDer<'_>]) -> Result<Served, String> {
    let (leaf, chain) = certs
        .split_first()
        .ok_or("the server sent an empty certificate list")?;
    let (subject, not_after, not_before, sans) = match CertInfo::from_der(leaf) {
        Ok(info) => (info.subject, info.not_after, info.not_before, info.sans),
        Err(e) => (format!("(unparseable certificate: {e})"), 0, 0, Vec::new()),
    };
    Ok(Served {
        leaf: Fingerprint::of_der(leaf),
        chain: chain.iter().map(|c| Fingerprint::of_der(c)).collect(),
        subject,
        not_after,
        not_before,
        sans,
    })
}

// ---------------------------------------------------------------------------------------------
// STARTTLS

/// Longest reply line we read, and most lines in one reply: a server that talks more than
/// that is not the server we want to probe.
const MAX_LINE: u64 = 4096;
const MAX_LINES: usize = 100;

fn protocol_name(mode: StartTls) -> &'static str {
    match mode {
        StartTls::None => "TLS",
        StartTls::Smtp => "SMTP",
        StartTls::Imap => "IMAP",
        StartTls::Pop3 => "POP3",
    }
}

/// Speaks the plain-text protocol up to the point where the server expects a ClientHello.
async fn start_tls(tcp: &mut TcpStream, mode: StartTls) -> Result<(), String> {
    let name = protocol_name(mode);
    let mut conn = BufReader::new(tcp);
    match mode {
        StartTls::None => return Ok(()),
        StartTls::Smtp => {
            let greeting = smtp_reply(&mut conn).await?;
            expect_code(&greeting, 220, "greeting")?;
            send(&mut conn, "EHLO certctl.invalid\r\n").await?;
            let ehlo = smtp_reply(&mut conn).await?;
            expect_code(&ehlo, 250, "reply to EHLO")?;
            let offers = ehlo.1.iter().any(|line| {
                line.get(4..)
                    .and_then(|rest| rest.split_whitespace().next())
                    .is_some_and(|w| w.eq_ignore_ascii_case("STARTTLS"))
            });
            if !offers {
                return Err(format!(
                    "the SMTP server does not offer STARTTLS (EHLO reply: `{}`)",
                    quote_lines(&ehlo.1)
                ));
            }
            send(&mut conn, "STARTTLS\r\n").await?;
            let reply = smtp_reply(&mut conn).await?;
            expect_code(&reply, 220, "reply to STARTTLS")?;
        }
        StartTls::Imap => {
            let greeting = read_line(&mut conn, name).await?;
            if !starts_with_ignore_case(&greeting, "* OK") {
                return Err(format!(
                    "IMAP greeting was `{}`, expected `* OK`",
                    quote(&greeting)
                ));
            }
            send(&mut conn, "a1 STARTTLS\r\n").await?;
            let mut seen = 0;
            let reply = loop {
                let line = read_line(&mut conn, name).await?;
                if starts_with_ignore_case(&line, "a1 ") {
                    break line;
                }
                seen += 1;
                if seen >= MAX_LINES {
                    return Err("the IMAP server never answered `a1 STARTTLS`".into());
                }
            };
            if !starts_with_ignore_case(&reply, "a1 OK") {
                return Err(format!("IMAP server refused STARTTLS: `{}`", quote(&reply)));
            }
        }
        StartTls::Pop3 => {
            let greeting = read_line(&mut conn, name).await?;
            if !starts_with_ignore_case(&greeting, "+OK") {
                return Err(format!(
                    "POP3 greeting was `{}`, expected `+OK`",
                    quote(&greeting)
                ));
            }
            send(&mut conn, "STLS\r\n").await?;
            let reply = read_line(&mut conn, name).await?;
            if !starts_with_ignore_case(&reply, "+OK") {
                return Err(format!("POP3 server refused STLS: `{}`", quote(&reply)));
            }
        }
    }
    // Anything already buffered was sent before the handshake, i.e. in plain text after the
    // server's go-ahead: a broken server or an injection attempt (CVE-2011-0411 style).
    if !conn.buffer().is_empty() {
        return Err(format!(
            "the {name} server sent unexpected data after its STARTTLS reply"
        ));
    }
    Ok(())
}

async fn send(conn: &mut BufReader<&mut TcpStream>, line: &str) -> Result<(), String> {
    conn.get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("sending `{}`: {e}", line.trim_end()))
}

/// One line without its line ending.
async fn read_line(conn: &mut BufReader<&mut TcpStream>, protocol: &str) -> Result<String, String> {
    let mut buf = Vec::new();
    let n = (&mut *conn)
        .take(MAX_LINE)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| format!("reading from the {protocol} server: {e}"))?;
    if n == 0 {
        return Err(format!("the {protocol} server closed the connection"));
    }
    if !buf.ends_with(b"\n") && n as u64 >= MAX_LINE {
        return Err(format!(
            "the {protocol} server sent a line longer than {MAX_LINE} bytes"
        ));
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// An SMTP reply: its code and all its lines (`250-…` continuation lines, then `250 …`).
async fn smtp_reply(conn: &mut BufReader<&mut TcpStream>) -> Result<(u16, Vec<String>), String> {
    let mut lines = Vec::new();
    loop {
        let line = read_line(conn, "SMTP").await?;
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|_| line.is_char_boundary(3));
        let Some(code) = code else {
            return Err(format!("unexpected SMTP reply `{}`", quote(&line)));
        };
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line);
        if !more {
            return Ok((code, lines));
        }
        if lines.len() >= MAX_LINES {
            return Err("the SMTP reply never ended".into());
        }
    }
}

fn expect_code(reply: &(u16, Vec<String>), want: u16, what: &str) -> Result<(), String> {
    if reply.0 == want {
        Ok(())
    } else {
        Err(format!(
            "SMTP {what} was `{}`, expected {want}",
            quote_lines(&reply.1)
        ))
    }
}

fn starts_with_ignore_case(line: &str, prefix: &str) -> bool {
    line.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// What a server said, safe to print: no control characters, one line, at most 200 chars.
fn quote(line: &str) -> String {
    sanitize_one_line(line.as_bytes(), 200)
}

fn quote_lines(lines: &[String]) -> String {
    quote(&lines.join(" | "))
}

// ---------------------------------------------------------------------------------------------
// Verification

/// Probes on the schedule until `expected` is served `consecutive` times in a row, the
/// attempts run out, or `cancel` fires (honoured during a wait to retry and during a retry's
/// probe; the first probe and a match's confirmation always run, so a target that goes on
/// after the first Ctrl-C is verified, not rolled back unprobed). When the
/// first probe sees another certificate, quick rechecks ([`QUICK_RECHECK`]) run inside the
/// first wait, in addition to the schedule's `attempts`.
pub async fn verify(
    spec: &ProbeSpec,
    expected: &Expected,
    cancel: &CancellationToken,
) -> Verification {
    verify_with(spec, expected, cancel, |_| {
        probe_once(&spec.address, &spec.sni, spec.starttls, spec.timeout)
    })
    .await
}

/// [`verify`] with the probe passed in (`probe(n)` runs probe number `n`, from 0): the
/// schedule, the streak and cancellation, without a network. Times come from tokio's clock,
/// so callers can test it under paused time.
///
/// Stops early once a pass is impossible (fewer probes left than matches still needed).
pub async fn verify_with<F, Fut>(
    spec: &ProbeSpec,
    expected: &Expected,
    cancel: &CancellationToken,
    probe: F,
) -> Verification
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Served, ProbeError>>,
{
    verify_on(&TokioClock, spec, expected, cancel, probe).await
}

/// Time as the verification loop sees it. Production uses tokio's clock; the unit tests below
/// use a virtual one, because this crate does not enable tokio's `test-util` (paused time).
trait Clock {
    fn now(&self) -> Instant;
    fn sleep(&self, wait: Duration) -> impl Future<Output = ()> + Send;
}

struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, wait: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(wait)
    }
}

async fn verify_on<C, F, Fut>(
    clock: &C,
    spec: &ProbeSpec,
    expected: &Expected,
    cancel: &CancellationToken,
    mut probe: F,
) -> Verification
where
    C: Clock,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Served, ProbeError>>,
{
    let start = clock.now();
    let deadline = spec.deadline();
    let end = start + deadline;
    let attempts = spec.schedule.attempts.max(1);
    let needed = spec.consecutive.max(1);
    let waits = spec.schedule.waits();
    let mut result = Verification {
        passed: false,
        cancelled: false,
        attempts: Vec::new(),
        last_served: None,
    };
    let mut streak = 0u32;
    // Probes run so far: all of them, and those that count against `attempts`.
    let mut number = 0u32;
    let mut counted = 0u32;
    // Quick rechecks inside the first wait: when they started, and the next gap.
    let mut quick: Option<(Instant, Duration)> = None;
    let mut last_probe = Duration::ZERO;

    // Confirming probes are free: a match on the last scheduled probe is still confirmed.
    while counted < attempts || streak > 0 {
        let mut is_quick = false;
        if number > 0 {
            let wait = match quick {
                // A match to confirm: soon, and not counted.
                _ if streak > 0 => {
                    is_quick = true;
                    CONFIRM_GAP
                }
                Some((since, gap)) => {
                    // A recheck fits if it ends (judged by the last probe's length) before the
                    // schedule's second probe is due.
                    let spent = clock.now() - since;
                    let first = waits.first().copied().unwrap_or_default();
                    let last = last_probe;
                    if spent
                        .checked_add(gap)
                        .and_then(|t| t.checked_add(last))
                        .is_some_and(|t| t < first)
                    {
                        is_quick = true;
                        gap
                    } else {
                        quick = None;
                        first.saturating_sub(spent)
                    }
                }
                None => waits
                    .get(counted as usize - 1)
                    .copied()
                    .unwrap_or(spec.schedule.max_backoff),
            };
            let wait = wait.min(end.saturating_duration_since(clock.now()));
            // A match's confirmation is short and always completes; a wait to retry ends at
            // the cancellation.
            let retry = streak == 0;
            tokio::select! {
                biased;
                () = cancel.cancelled(), if retry => {
                    result.cancelled = true;
                    break;
                }
                () = clock.sleep(wait) => {}
            }
            if clock.now() >= end {
                note_deadline(&mut result, deadline);
                break;
            }
        }

        // The first probe and a confirming one run even when the run was cancelled before
        // (a target that goes on after the first Ctrl-C gets its verify); a retry probe ends
        // at the cancellation.
        let cancellable = number > 0 && streak == 0;
        let began = clock.now();
        let mut cut = false;
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled(), if cancellable => None,
            outcome = probe(number) => Some(outcome),
            () = clock.sleep(end.saturating_duration_since(began)) => {
                cut = true;
                Some(Err(ProbeError::Failed {
                    address: spec.address.clone(),
                    message: "no answer yet".into(),
                }))
            }
        };
        number += 1;
        if !is_quick {
            counted += 1;
        }
        last_probe = clock.now() - began;
        let at_ms = millis(began - start);
        let duration_ms = millis(last_probe);
        let attempt = match outcome {
            None => {
                result.attempts.push(Attempt {
                    at_ms,
                    duration_ms,
                    served: None,
                    matched: false,
                    detail: Some("cancelled during the probe".into()),
                });
                result.cancelled = true;
                break;
            }
            Some(Ok(served)) => {
                let mismatch = compare(expected, &served);
                let attempt = Attempt {
                    at_ms,
                    duration_ms,
                    served: Some(served.leaf),
                    matched: mismatch.is_none(),
                    detail: mismatch,
                };
                result.last_served = Some(served);
                attempt
            }
            Some(Err(e)) => Attempt {
                at_ms,
                duration_ms,
                served: None,
                matched: false,
                detail: Some(e.to_string()),
            },
        };
        // Another certificate served: the server is up but may still be switching over (a
        // reload returns before the new workers serve). Recheck soon, inside the first wait.
        let other_served = attempt.served.is_some() && !attempt.matched;
        streak = if attempt.matched { streak + 1 } else { 0 };
        result.attempts.push(attempt);
        if streak >= needed {
            result.passed = true;
            break;
        }
        if cut {
            note_deadline(&mut result, deadline);
            break;
        }
        if streak == 0 && counted >= attempts {
            break;
        }
        if counted == 1 && attempts > 1 {
            quick = match (quick, other_served) {
                (None, true) if !is_quick => Some((clock.now(), QUICK_RECHECK)),
                (Some((since, gap)), true) => Some((since, gap.saturating_mul(2))),
                (Some((since, _)), false) => Some((since, Duration::MAX)),
                (q, _) => q,
            };
        }
    }
    result
}

/// A verification that reached [`ProbeSpec::deadline`]: its last attempt says so.
fn note_deadline(result: &mut Verification, deadline: Duration) {
    let note = format!(
        "stopped at the verify deadline ({})",
        crate::source::format_duration(deadline)
    );
    if let Some(last) = result.attempts.last_mut() {
        last.detail = Some(match last.detail.take() {
            Some(detail) => format!("{detail}; {note}"),
            None => note,
        });
    }
}

/// Why `served` is not what we expect, or `None` when leaf and chain both match.
fn compare(expected: &Expected, served: &Served) -> Option<String> {
    if served.leaf != expected.leaf {
        return Some(format!(
            "served leaf {} (expected {})",
            served.leaf, expected.leaf
        ));
    }
    if served.chain.len() != expected.chain.len() {
        return Some(format!(
            "chain differs: served {}, expected {}",
            intermediates(served.chain.len()),
            expected.chain.len()
        ));
    }
    let (i, (got, want)) = served
        .chain
        .iter()
        .zip(&expected.chain)
        .enumerate()
        .find(|(_, (got, want))| got != want)?;
    Some(format!(
        "chain differs: certificate {} after the leaf is {got} (expected {want})",
        i + 1
    ))
}

fn intermediates(n: usize) -> String {
    if n == 1 {
        "1 intermediate".into()
    } else {
        format!("{n} intermediates")
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Virtual time: `sleep` returns after moving the clock forward (on its second poll), probes move it with
    /// `advance`. Optionally cancels `token` when a sleep reaches `cancel_at`, and then never
    /// returns from that sleep, as a real timer would not before the cancellation wins.
    struct VirtualClock {
        base: Instant,
        offset: Mutex<Duration>,
        cancel_at: Option<(Duration, CancellationToken)>,
    }

    impl VirtualClock {
        fn new() -> Self {
            Self {
                base: Instant::now(),
                offset: Mutex::new(Duration::ZERO),
                cancel_at: None,
            }
        }

        fn cancelling_at(at: Duration, token: &CancellationToken) -> Self {
            Self {
                cancel_at: Some((at, token.clone())),
                ..Self::new()
            }
        }

        fn elapsed(&self) -> Duration {
            *self.offset.lock().unwrap()
        }

        fn advance(&self, by: Duration) {
            *self.offset.lock().unwrap() += by;
        }
    }

    impl Clock for VirtualClock {
        fn now(&self) -> Instant {
            self.base + self.elapsed()
        }

        async fn sleep(&self, wait: Duration) {
            // Not on the first poll: a sleep that loses a race (the deadline against a probe
            // that was cancelled) must not move the clock, as a real timer would not.
            tokio::task::yield_now().await;
            let cancelled = {
                let mut offset = self.offset.lock().unwrap();
                match &self.cancel_at {
                    Some((at, token)) if *offset + wait >= *at => {
                        *offset = *at;
                        token.cancel();
                        true
                    }
                    _ => {
                        *offset += wait;
                        false
                    }
                }
            };
            if cancelled {
                std::future::pending::<()>().await;
            }
            tokio::task::yield_now().await;
        }
    }

    fn fp(b: u8) -> Fingerprint {
        Fingerprint([b; 32])
    }

    fn served(leaf: u8, chain: &[u8]) -> Served {
        Served {
            leaf: fp(leaf),
            chain: chain.iter().map(|b| fp(*b)).collect(),
            subject: "CN=t".into(),
            not_after: 0,
            not_before: 0,
            sans: Vec::new(),
        }
    }

    fn expected() -> Expected {
        Expected {
            leaf: fp(1),
            chain: vec![fp(2)],
        }
    }

    fn spec(attempts: u32, backoff_ms: u64, max_ms: u64, consecutive: u32) -> ProbeSpec {
        ProbeSpec {
            address: "127.0.0.1:1".into(),
            sni: "a.test".into(),
            starttls: StartTls::None,
            schedule: Schedule {
                attempts,
                backoff: Duration::from_millis(backoff_ms),
                max_backoff: Duration::from_millis(max_ms),
            },
            timeout: Duration::from_secs(10),
            consecutive,
        }
    }

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    /// Runs the loop with a scripted probe (`script[n]` = leaf byte served by probe n,
    /// 0 = a handshake error), returning the result and when each probe started.
    async fn run(
        clock: &VirtualClock,
        spec: &ProbeSpec,
        script: &[u8],
        cancel: &CancellationToken,
    ) -> (Verification, Vec<Duration>) {
        let times = Mutex::new(Vec::new());
        let v = verify_on(clock, spec, &expected(), cancel, |n| {
            times.lock().unwrap().push(clock.elapsed());
            let leaf = script[n as usize];
            async move {
                match leaf {
                    0 => Err(ProbeError::Failed {
                        address: "x".into(),
                        message: "refused".into(),
                    }),
                    leaf => Ok(served(leaf, &[2])),
                }
            }
        })
        .await;
        (v, times.into_inner().unwrap())
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let s = |attempts, backoff, max| Schedule {
            attempts,
            backoff: Duration::from_secs(backoff),
            max_backoff: Duration::from_secs(max),
        };
        assert_eq!(s(3, 1, 16).waits(), secs(&[1, 2]));
        assert_eq!(s(7, 1, 16).waits(), secs(&[1, 2, 4, 8, 16, 16]));
        assert_eq!(s(5, 2, 2).waits(), secs(&[2, 2, 2, 2]));
        assert_eq!(s(1, 1, 16).waits(), secs(&[]));
        assert_eq!(s(0, 1, 16).waits(), secs(&[]));
        let huge = Schedule {
            attempts: 80,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::MAX,
        };
        assert_eq!(huge.waits().last(), Some(&Duration::MAX));
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[tokio::test]
    async fn defaults_probe_at_0_then_plus_1_then_plus_2_seconds() {
        // The first probe fails (no certificate): no quick rechecks, the plain schedule.
        let clock = VirtualClock::new();
        let (v, times) = run(
            &clock,
            &spec(3, 1000, 16_000, 1),
            &[0, 9, 9],
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(times, secs(&[0, 1, 3]));
        assert!(!v.passed && !v.cancelled);
        assert_eq!(v.last_served, Some(served(9, &[2])));
        let detail = v.attempts[1].detail.as_deref().unwrap();
        assert_eq!(
            detail,
            format!("served leaf {} (expected {})", fp(9), fp(1))
        );
    }

    #[tokio::test]
    async fn another_certificate_first_is_rechecked_quickly_inside_the_first_wait() {
        // The old certificate is still served right after a reload: rechecks at +50, +100,
        // +200, +400 ms (doubling gaps, inside the first 1 s wait), then the schedule as before.
        let clock = VirtualClock::new();
        let (v, times) = run(
            &clock,
            &spec(3, 1000, 16_000, 1),
            &[9; 7],
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(times, ms(&[0, 50, 150, 350, 750, 1000, 3000]));
        assert!(!v.passed && !v.cancelled);
        assert_eq!(
            v.attempts.iter().map(|a| a.at_ms).collect::<Vec<_>>(),
            [0, 50, 150, 350, 750, 1000, 3000]
        );
        assert_eq!(v.last_served, Some(served(9, &[2])));
        let detail = v.attempts[0].detail.as_deref().unwrap();
        assert_eq!(
            detail,
            format!("served leaf {} (expected {})", fp(9), fp(1))
        );
    }

    #[tokio::test]
    async fn doubling_with_cap_then_pass() {
        // A first probe without a certificate: no quick rechecks.
        let clock = VirtualClock::new();
        let script = [0, 9, 9, 9, 9, 9, 1];
        let (v, times) = run(
            &clock,
            &spec(7, 1000, 16_000, 1),
            &script,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(times, secs(&[0, 1, 3, 7, 15, 31, 47]));
        assert!(v.passed);
        assert_eq!(v.attempts.len(), 7);
        assert!(v.attempts[6].matched && v.attempts[6].detail.is_none());
    }

    #[tokio::test]
    async fn linear_when_cap_equals_backoff() {
        let clock = VirtualClock::new();
        let (v, times) = run(
            &clock,
            &spec(4, 500, 500, 1),
            &[0, 0, 0, 0],
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(times, [0, 500, 1000, 1500].map(Duration::from_millis));
        assert!(!v.passed);
        assert_eq!(v.attempts[3].detail.as_deref(), Some("x: refused"));
        assert_eq!(v.last_served, None);
    }

    #[tokio::test]
    async fn first_match_passes_immediately() {
        let clock = VirtualClock::new();
        let (v, times) = run(
            &clock,
            &spec(3, 1000, 16_000, 1),
            &[1, 9, 9],
            &CancellationToken::new(),
        )
        .await;
        assert!(v.passed);
        assert_eq!(times, secs(&[0]));
    }

    #[tokio::test]
    async fn consecutive_resets_on_mismatch() {
        let clock = VirtualClock::new();
        let (v, _) = run(
            &clock,
            &spec(6, 100, 100, 2),
            &[1, 9, 1, 0, 1, 1],
            &CancellationToken::new(),
        )
        .await;
        assert!(v.passed);
        assert_eq!(
            v.attempts.iter().map(|a| a.matched).collect::<Vec<_>>(),
            [true, false, true, false, true, true]
        );
    }

    #[tokio::test]
    async fn alternating_never_passes_with_two_in_a_row() {
        let clock = VirtualClock::new();
        let (v, _) = run(
            &clock,
            &spec(3, 100, 100, 2),
            &[1, 9, 1, 9, 1, 9],
            &CancellationToken::new(),
        )
        .await;
        assert!(!v.passed);
        // Three scheduled probes, each match followed by one (free) confirming probe.
        assert_eq!(
            v.attempts.iter().map(|a| a.matched).collect::<Vec<_>>(),
            [true, false, true, false, true, false]
        );
    }

    #[tokio::test]
    async fn a_match_is_confirmed_100ms_later_and_the_confirmation_is_free() {
        let clock = VirtualClock::new();
        // The last scheduled probe matches: its confirmation still runs.
        let (v, times) = run(
            &clock,
            &spec(2, 1000, 1000, 2),
            &[0, 1, 1],
            &CancellationToken::new(),
        )
        .await;
        assert!(v.passed);
        assert_eq!(
            times,
            [
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(1) + CONFIRM_GAP
            ]
        );
    }

    #[tokio::test]
    async fn stops_when_the_scheduled_probes_are_spent() {
        let clock = VirtualClock::new();
        let (v, times) = run(
            &clock,
            &spec(2, 1000, 1000, 3),
            &[0, 0],
            &CancellationToken::new(),
        )
        .await;
        assert!(!v.passed);
        assert_eq!(times, secs(&[0, 1]));
    }

    #[tokio::test]
    async fn attempts_record_when_and_how_long() {
        let clock = VirtualClock::new();
        let v = verify_on(
            &clock,
            &spec(2, 1000, 1000, 1),
            &expected(),
            &CancellationToken::new(),
            |_| async {
                clock.advance(Duration::from_millis(250));
                Ok(served(9, &[2]))
            },
        )
        .await;
        let timing: Vec<(u64, u64)> = v
            .attempts
            .iter()
            .map(|a| (a.at_ms, a.duration_ms))
            .collect();
        // Quick rechecks at +50 and +100 ms after each 250 ms probe; the next would not end
        // before the second scheduled probe, which stays at 250 + 1000 ms.
        assert_eq!(timing, [(0, 250), (300, 250), (650, 250), (1250, 250)]);
        assert_eq!(clock.elapsed(), Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn quick_recheck_passes_as_soon_as_the_reload_shows() {
        let clock = VirtualClock::new();
        let (v, times) = run(
            &clock,
            &spec(3, 1000, 16_000, 1),
            &[9, 9, 1],
            &CancellationToken::new(),
        )
        .await;
        assert!(v.passed);
        assert_eq!(times, ms(&[0, 50, 150]));
    }

    #[tokio::test]
    async fn quick_rechecks_stop_on_an_error_and_never_add_to_a_single_attempt() {
        let clock = VirtualClock::new();
        let (v, times) = run(
            &clock,
            &spec(3, 1000, 16_000, 1),
            &[9, 0, 9, 9],
            &CancellationToken::new(),
        )
        .await;
        assert!(!v.passed);
        assert_eq!(times, ms(&[0, 50, 1000, 3000]));

        let clock = VirtualClock::new();
        let (v, times) = run(
            &clock,
            &spec(1, 1000, 16_000, 1),
            &[9],
            &CancellationToken::new(),
        )
        .await;
        assert!(!v.passed);
        assert_eq!(times, ms(&[0]));

        // A backoff shorter than the first gap leaves no room for a recheck.
        let clock = VirtualClock::new();
        let (_, times) = run(
            &clock,
            &spec(3, 50, 50, 1),
            &[9, 9, 9],
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(times, ms(&[0, 50, 100]));
    }

    #[tokio::test]
    async fn cancellation_during_a_wait() {
        let cancel = CancellationToken::new();
        let clock = VirtualClock::cancelling_at(Duration::from_millis(1500), &cancel);
        let (v, times) = run(&clock, &spec(5, 1000, 16_000, 1), &[0; 5], &cancel).await;
        assert!(v.cancelled && !v.passed);
        assert_eq!(times, secs(&[0, 1]));
        assert_eq!(v.attempts.len(), 2);
        assert_eq!(clock.elapsed(), Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn cancellation_during_a_retry_probe() {
        let cancel = CancellationToken::new();
        let clock = VirtualClock::new();
        let v = verify_on(&clock, &spec(3, 1000, 1000, 1), &expected(), &cancel, |n| {
            let (clock, cancel) = (&clock, &cancel);
            async move {
                if n == 0 {
                    return Ok(served(9, &[2]));
                }
                clock.advance(Duration::from_millis(500));
                cancel.cancel();
                std::future::pending::<Result<Served, ProbeError>>().await
            }
        })
        .await;
        assert!(v.cancelled && !v.passed);
        assert_eq!(v.attempts.len(), 2);
        assert_eq!(v.attempts[1].duration_ms, 500);
        assert_eq!(
            v.attempts[1].detail.as_deref(),
            Some("cancelled during the probe")
        );
    }

    /// Cancelled before it began: the first probe still runs, and a match is confirmed; a
    /// mismatch is not retried.
    #[tokio::test]
    async fn already_cancelled_probes_once_and_confirms_a_match_only() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let clock = VirtualClock::new();
        let (v, times) = run(&clock, &spec(3, 1000, 1000, 2), &[1, 1, 1], &cancel).await;
        assert!(v.passed && !v.cancelled, "{v:?}");
        assert_eq!(v.attempts.len(), 2);
        let clock = VirtualClock::new();
        let (v, times2) = run(&clock, &spec(3, 1000, 1000, 2), &[0, 1, 1], &cancel).await;
        assert!(v.cancelled && !v.passed && v.attempts.len() == 1, "{v:?}");
        assert_eq!((times.len(), times2.len()), (2, 1));
    }

    /// The public entry point on tokio's real clock: short waits, so this stays fast; it only
    /// checks outcomes, never elapsed time.
    #[tokio::test]
    async fn verify_with_uses_the_same_loop() {
        let script = [9u8, 1, 1];
        let v = verify_with(
            &spec(3, 1, 1, 2),
            &expected(),
            &CancellationToken::new(),
            |n| {
                let leaf = script[n as usize];
                async move { Ok(served(leaf, &[2])) }
            },
        )
        .await;
        assert!(v.passed);
        assert_eq!(
            v.attempts.iter().map(|a| a.matched).collect::<Vec<_>>(),
            [false, true, true]
        );
    }

    #[test]
    fn chain_differences_are_spelled_out() {
        let want = Expected {
            leaf: fp(1),
            chain: vec![fp(2), fp(3)],
        };
        assert_eq!(compare(&want, &served(1, &[2, 3])), None);
        assert_eq!(
            compare(&want, &served(1, &[2])).unwrap(),
            "chain differs: served 1 intermediate, expected 2"
        );
        assert_eq!(
            compare(&want, &served(1, &[2, 4])).unwrap(),
            format!(
                "chain differs: certificate 2 after the leaf is {} (expected {})",
                fp(4),
                fp(3)
            )
        );
        assert!(
            compare(&want, &served(7, &[2, 3]))
                .unwrap()
                .starts_with("served leaf ")
        );
    }

    /// Deploy runs one task per target: the probe futures must be `Send`.
    #[test]
    fn futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let (spec, want, cancel) = (spec(1, 1, 1, 1), expected(), CancellationToken::new());
        assert_send(&verify(&spec, &want, &cancel));
        assert_send(&probe_once(
            "127.0.0.1:1",
            "a.test",
            StartTls::Smtp,
            Duration::from_secs(1),
        ));
    }

    #[test]
    fn sni_rules() {
        assert!(!server_name("").unwrap().1);
        assert!(!server_name("127.0.0.1").unwrap().1);
        assert!(!server_name("[::1]").unwrap().1);
        assert!(server_name("www.example.com").unwrap().1);
        assert!(
            server_name("bad name")
                .unwrap_err()
                .contains("not a valid server name")
        );
    }

    #[test]
    fn the_deadline_is_the_schedules_worst_case_capped() {
        // Defaults: waits 1 s + 2 s, and 3 probes (+1 for the quick rechecks) of 10 s.
        assert_eq!(spec(3, 1000, 16_000, 1).deadline(), Duration::from_secs(43));
        // 7 probes: waits 1+2+4+8+16+16 s, 8 timeouts of 10 s.
        assert_eq!(
            spec(7, 1000, 16_000, 1).deadline(),
            Duration::from_secs(127)
        );
        // consecutive 2: each probe may be confirmed, 100 ms later, by one more (3 × 10.1 s).
        assert_eq!(
            spec(3, 1000, 16_000, 2).deadline(),
            Duration::from_millis(73_300)
        );
        // Whatever the settings, never past the limit (and no walk of every attempt).
        let huge = spec(u32::MAX, 1000, 600_000, 1);
        assert_eq!(huge.deadline(), crate::limits::MAX_VERIFY_DURATION);
        assert_eq!(
            huge.schedule.worst_case(Duration::ZERO),
            Duration::from_secs(1 + 2 + 4 + 8 + 16 + 32 + 64 + 128 + 256 + 512)
                + Duration::from_secs(600) * (u32::MAX - 11)
        );
    }

    #[tokio::test]
    async fn a_probe_that_never_ends_is_stopped_at_the_deadline() {
        // A probe that ignores its own timeout (or an endpoint that trickles bytes forever):
        // the verification still ends, at the deadline, and says why.
        let clock = VirtualClock::new();
        let spec = spec(3, 1000, 16_000, 1);
        let v = verify_on(
            &clock,
            &spec,
            &expected(),
            &CancellationToken::new(),
            |_| std::future::pending::<Result<Served, ProbeError>>(),
        )
        .await;
        assert!(!v.passed && !v.cancelled);
        assert_eq!(clock.elapsed(), Duration::from_secs(43));
        assert_eq!(v.attempts.len(), 1);
        let detail = v.attempts[0].detail.as_deref().unwrap();
        assert!(
            detail.ends_with("no answer yet; stopped at the verify deadline (43s)"),
            "{detail}"
        );
    }

    #[tokio::test]
    async fn slow_probes_and_waits_stop_at_the_deadline() {
        // Each probe takes 20 s (twice its timeout, as a probe that overran it would): the
        // second wait reaches the deadline, so the verification stops instead of probing again.
        let clock = VirtualClock::new();
        let spec = spec(3, 1000, 16_000, 1);
        let v = verify_on(
            &clock,
            &spec,
            &expected(),
            &CancellationToken::new(),
            |_| {
                clock.advance(Duration::from_secs(20));
                async { Ok(served(9, &[2])) }
            },
        )
        .await;
        assert!(!v.passed);
        assert_eq!(clock.elapsed(), Duration::from_secs(43));
        assert_eq!(v.attempts.len(), 2);
        let detail = v.attempts[1].detail.as_deref().unwrap();
        assert!(
            detail.ends_with("; stopped at the verify deadline (43s)"),
            "{detail}"
        );
    }
}
