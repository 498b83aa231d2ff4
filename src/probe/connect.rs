//! One probe: dial, optional STARTTLS, handshake, within one timeout; and what the errors
//! mean to an operator.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::client::client_config;
use super::served::served_from;
use super::starttls::{protocol_name, start_tls};
use super::{Offer, ProbeError, ProbeSpec, Served, StartTls};

/// Which step a probe is in, to say what stalled when it times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    StartTls(StartTls),
    Handshake,
}

/// [`probe_once`] of a spec's endpoint, with its [`Offer`], within `timeout`.
pub async fn probe_once_for(spec: &ProbeSpec, timeout: Duration) -> Result<Served, ProbeError> {
    probe_once_offering(&spec.address, &spec.sni, spec.starttls, spec.offer, timeout).await
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
    probe_once_offering(address, sni, starttls, Offer::default(), timeout).await
}

/// [`probe_once`] with a ClientHello that offers only what `offer` allows, so that a server
/// holding several certificates for the name shows the one of that kind (or refuses the
/// handshake: the error then says what was offered).
pub async fn probe_once_offering(
    address: &str,
    sni: &str,
    starttls: StartTls,
    offer: Offer,
    timeout: Duration,
) -> Result<Served, ProbeError> {
    let failed = |message: String| ProbeError::Failed {
        address: address.to_string(),
        message,
    };
    let mut step = Step::Connect;
    let outcome = tokio::time::timeout(
        timeout,
        probe_steps(address, sni, starttls, offer, &mut step),
    )
    .await;
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
    offer: Offer,
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
    let connector = TlsConnector::from(client_config(send_sni, offer)?);
    let tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| match handshake_error(&e) {
            message if offer.is_restricted() => format!("{message} (the probe offered {offer})"),
            message => message,
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
