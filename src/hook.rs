//! Hook mode: `certctl deploy --hook` run by an ACME client after a renewal deploys only the
//! inventory's certificates that ARE the renewed certificate, to the targets that use them.
//!
//! What each client passes (as their documentation gives it):
//! - certbot `--deploy-hook`: `RENEWED_LINEAGE` (the live directory, e.g.
//!   `/etc/letsencrypt/live/example.com`, holding `cert.pem`, `chain.pem`, `fullchain.pem`,
//!   `privkey.pem`) and `RENEWED_DOMAINS` (space-separated);
//! - acme.sh `--reloadcmd` (and `--renew-hook`): `CERT_PATH`, `CERT_KEY_PATH`, `CA_CERT_PATH`,
//!   `CERT_FULLCHAIN_PATH` (and `Le_Domain`, the main domain, where acme.sh sets it);
//! - lego `--deploy-hook` / `--run-hook`: `LEGO_CERT_PATH`, `LEGO_CERT_KEY_PATH`,
//!   `LEGO_CERT_DOMAIN`.
//!
//! A certificate matches when its leaf (read from its `cert` file or `cert_env`; a
//! `cert_command` is not run for this) is the renewed leaf. A certificate NAMED like the
//! renewal (the lineage, `Le_Domain`, `LEGO_CERT_DOMAIN`) whose leaf is another one is an error:
//! its inventory entry does not read the files the client just renewed, and deploying it would
//! silently deploy the old certificate. No match at all is not an error (certbot runs the hook
//! for every renewed lineage, including ones certctl does not deploy): exit 0 with a note.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::inventory::Inventory;
use crate::material::{Fingerprint, parse_certs};
use crate::source::Source;

/// Which ACME client called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Certbot,
    AcmeSh,
    Lego,
}

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Client::Certbot => "certbot",
            Client::AcmeSh => "acme.sh",
            Client::Lego => "lego",
        }
    }

    /// The variable whose presence says this client called.
    fn marker(self) -> &'static str {
        match self {
            Client::Certbot => "RENEWED_LINEAGE",
            Client::AcmeSh => "CERT_PATH",
            Client::Lego => "LEGO_CERT_PATH",
        }
    }

    /// Parses the `--hook` value: `auto` (or empty) is `None`.
    pub fn parse(value: &str) -> Result<Option<Client>, String> {
        match value {
            "" | "auto" => Ok(None),
            "certbot" => Ok(Some(Client::Certbot)),
            "acme.sh" | "acmesh" | "acme-sh" => Ok(Some(Client::AcmeSh)),
            "lego" => Ok(Some(Client::Lego)),
            other => Err(format!(
                "--hook `{other}`: expected auto, certbot, acme.sh or lego"
            )),
        }
    }
}

/// What the client says it renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    pub client: Client,
    /// The lineage name, `Le_Domain` or `LEGO_CERT_DOMAIN`.
    pub name: Option<String>,
    pub domains: Vec<String>,
    /// The file whose first certificate is the renewed leaf.
    pub cert_file: PathBuf,
    /// The variable `cert_file` came from, for messages.
    pub from: String,
}

/// The hook variable present in `env`, if any (for a hint when `--hook` was not given).
pub fn detected(env: &dyn Fn(&str) -> Option<String>) -> Option<&'static str> {
    [Client::Certbot, Client::Lego, Client::AcmeSh]
        .into_iter()
        .map(Client::marker)
        .find(|v| env(v).is_some_and(|s| !s.is_empty()))
}

/// Reads the renewal from the environment. `wanted` `None` detects the client (certbot, then
/// lego, then acme.sh).
pub fn renewal(
    wanted: Option<Client>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Renewal, String> {
    let get = |v: &str| env(v).filter(|s| !s.trim().is_empty());
    let client = match wanted {
        Some(c) => c,
        None => [Client::Certbot, Client::Lego, Client::AcmeSh]
            .into_iter()
            .find(|c| get(c.marker()).is_some())
            .ok_or(
                "--hook: none of RENEWED_LINEAGE (certbot), LEGO_CERT_PATH (lego) or CERT_PATH \
                 (acme.sh) is set; run certctl from the ACME client's deploy hook",
            )?,
    };
    let need =
        |v: &str| get(v).ok_or_else(|| format!("--hook {}: `{v}` is not set", client.name()));
    Ok(match client {
        Client::Certbot => {
            let lineage = PathBuf::from(need("RENEWED_LINEAGE")?);
            Renewal {
                client,
                name: lineage
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned()),
                domains: words(get("RENEWED_DOMAINS")),
                cert_file: lineage.join("cert.pem"),
                from: "RENEWED_LINEAGE".into(),
            }
        }
        Client::AcmeSh => {
            let cert = PathBuf::from(need("CERT_PATH")?);
            // acme.sh names the leaf DOMAIN.cer inside the domain's directory.
            let name = get("Le_Domain")
                .or_else(|| cert.file_stem().map(|s| s.to_string_lossy().into_owned()));
            Renewal {
                client,
                domains: name.iter().cloned().collect(),
                name,
                cert_file: cert,
                from: "CERT_PATH".into(),
            }
        }
        Client::Lego => {
            let domain = get("LEGO_CERT_DOMAIN");
            Renewal {
                client,
                domains: domain.iter().cloned().collect(),
                name: domain,
                cert_file: PathBuf::from(need("LEGO_CERT_PATH")?),
                from: "LEGO_CERT_PATH".into(),
            }
        }
    })
}

fn words(v: Option<String>) -> Vec<String> {
    v.map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Which certificates to deploy, and what to tell the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub certificates: BTreeSet<String>,
    pub renewed: Option<Fingerprint>,
    pub notes: Vec<String>,
}

/// Matches `renewal` against the inventory's certificates (see the module documentation).
pub fn select(inventory: &Inventory, renewal: &Renewal) -> Result<Selection, String> {
    let client = renewal.client.name();
    let shown = renewal.cert_file.display();
    let bytes = crate::source::read_file(&renewal.cert_file)
        .map_err(|e| format!("--hook {client}: {shown} ({}): {e}", renewal.from))?;
    let renewed = parse_certs(&bytes)
        .map_err(|e| format!("--hook {client}: {shown}: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("--hook {client}: {shown} holds no certificate"))?;
    let mut selection = Selection {
        renewed: Some(renewed.fingerprint),
        ..Selection::default()
    };
    let mut errors = Vec::new();
    let named = |n: &str| {
        renewal
            .name
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(n))
    };
    for (name, spec) in &inventory.certificates {
        let leaf = match &spec.cert {
            Source::File(path) => leaf_of(path),
            Source::Env(_) | Source::Fetched(..) => spec
                .cert
                .read(spec.command_timeout)
                .ok()
                .and_then(|b| parse_certs(&b).ok())
                .and_then(|c| c.into_iter().next().map(|c| c.fingerprint)),
            Source::Command(_) => None,
        };
        match leaf {
            Some(fp) if fp == renewed.fingerprint => {
                selection.certificates.insert(name.clone());
            }
            Some(fp) if named(name) => errors.push(format!(
                "--hook {client}: certificate `{name}` is named like the renewal, but its `cert` \
                 ({}) is another certificate ({fp}) than the one {client} renewed ({}, {shown}); \
                 point `cert`, `chain` and `key` at the renewed files",
                spec.cert.describe("cert"),
                renewed.fingerprint
            )),
            None if named(name) && matches!(spec.cert, Source::Command(_)) => {
                selection.notes.push(format!(
                    "certificate `{name}` is read by a command: selected by its name"
                ));
                selection.certificates.insert(name.clone());
            }
            None if named(name) => errors.push(format!(
                "--hook {client}: certificate `{name}` is named like the renewal, but its `cert` \
                 ({}) cannot be read",
                spec.cert.describe("cert")
            )),
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    Ok(selection)
}

fn leaf_of(path: &Path) -> Option<Fingerprint> {
    let bytes = crate::source::read_file(path).ok()?;
    parse_certs(&bytes)
        .ok()?
        .into_iter()
        .next()
        .map(|c| c.fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn each_client_is_read_from_its_own_variables() {
        let r = renewal(
            None,
            &env(&[
                ("RENEWED_LINEAGE", "/etc/letsencrypt/live/example.com"),
                ("RENEWED_DOMAINS", "example.com www.example.com"),
            ]),
        )
        .unwrap();
        assert_eq!(r.client, Client::Certbot);
        assert_eq!(r.name.as_deref(), Some("example.com"));
        assert_eq!(r.domains, ["example.com", "www.example.com"]);
        assert_eq!(
            r.cert_file,
            Path::new("/etc/letsencrypt/live/example.com/cert.pem")
        );

        let r = renewal(
            None,
            &env(&[
                (
                    "CERT_PATH",
                    "/root/.acme.sh/example.com_ecc/example.com.cer",
                ),
                (
                    "CERT_KEY_PATH",
                    "/root/.acme.sh/example.com_ecc/example.com.key",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(r.client, Client::AcmeSh);
        assert_eq!(r.name.as_deref(), Some("example.com"));

        let r = renewal(
            Some(Client::Lego),
            &env(&[
                ("LEGO_CERT_PATH", "/l/certificates/example.com.crt"),
                ("LEGO_CERT_DOMAIN", "example.com"),
            ]),
        )
        .unwrap();
        assert_eq!(r.client, Client::Lego);
        assert_eq!(r.name.as_deref(), Some("example.com"));

        assert!(
            renewal(None, &env(&[]))
                .unwrap_err()
                .contains("RENEWED_LINEAGE")
        );
        assert!(
            renewal(Some(Client::Lego), &env(&[]))
                .unwrap_err()
                .contains("LEGO_CERT_PATH")
        );
        assert_eq!(
            detected(&env(&[("LEGO_CERT_PATH", "x")])),
            Some("LEGO_CERT_PATH")
        );
        assert!(Client::parse("acme.sh").unwrap() == Some(Client::AcmeSh));
        assert!(Client::parse("caddy").is_err());
    }
}
