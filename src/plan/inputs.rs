//! The private inputs written into a target's scratch directory (0600) before preview: the
//! material in one role, a secret read on the controller, or a file the engine builds from the
//! material — a Kubernetes `kubernetes.io/tls` Secret manifest, or a PKCS#12 (PFX) file with
//! its random password beside it. Each input's path becomes `{input.NAME}`.

use std::collections::BTreeMap;

use super::dirs::Dirs;
use super::{InputContent, PlannedInput};
use crate::connector::{self, ConnectorDef, InputDef};
use crate::inventory::Target;
use crate::material::Material;
use crate::secret::Secret;

/// Every input of the connector, in order (a PKCS#12 file's password first), with
/// `input.NAME` (and `input.NAME.password`) added to `values`.
pub(super) fn plan_inputs(
    def: &ConnectorDef,
    target: &Target,
    params: &BTreeMap<String, String>,
    material: &Material,
    dirs: &Dirs,
    values: &mut BTreeMap<String, String>,
) -> Result<Vec<PlannedInput>, String> {
    let mut inputs = Vec::new();
    for input in &def.inputs {
        let path = format!("{}/{}", dirs.scratch, input.name);
        values.insert(format!("input.{}", input.name), path.clone());
        let content = match (&input.role, &input.from) {
            _ if input.pkcs12 => {
                let (pfx, password) = pkcs12(input, material)?;
                let pw_path = format!("{path}.password");
                values.insert(format!("input.{}.password", input.name), pw_path.clone());
                inputs.push(PlannedInput {
                    path: pw_path,
                    content: InputContent::Secret(password),
                    cert: 0,
                });
                InputContent::Secret(pfx)
            }
            _ if input.kubernetes_tls_secret.is_some() => {
                InputContent::Secret(kubernetes_input(input, target, material, values)?)
            }
            (Some(role), _) => InputContent::Material(*role),
            (None, Some(param)) => {
                InputContent::Secret(secret_from_env(param, params, &input.name)?)
            }
            (None, None) => return Err(format!("input `{}` has no content", input.name)),
        };
        // `cert` is set by the caller, which knows which certificate this is.
        inputs.push(PlannedInput {
            path,
            content,
            cert: 0,
        });
    }
    Ok(inputs)
}

/// A PKCS#12 file of the material under a fresh random password: (file, password).
fn pkcs12(input: &InputDef, material: &Material) -> Result<(Secret, Secret), String> {
    let password =
        crate::pkcs12::random_password().map_err(|e| format!("input `{}`: {e}", input.name))?;
    let pfx = crate::pkcs12::from_material(material, &password, None)
        .map_err(|e| format!("input `{}`: {e}", input.name))?;
    Ok((pfx, password))
}

/// The Kubernetes Secret manifest of an input, its name and namespace rendered.
fn kubernetes_input(
    input: &InputDef,
    target: &Target,
    material: &Material,
    values: &BTreeMap<String, String>,
) -> Result<Secret, String> {
    let k = input.kubernetes_tls_secret.as_ref().expect("checked");
    let name = connector::render(&k.name, values)
        .map_err(|e| format!("input `{}` name: {e}", input.name))?;
    let namespace = connector::render(&k.namespace, values)
        .map_err(|e| format!("input `{}` namespace: {e}", input.name))?;
    kubernetes_tls_secret(&name, &namespace, &target.name, material)
}

/// A `kubernetes.io/tls` Secret as JSON (which kubectl reads as YAML): `tls.crt` = leaf +
/// chain, `tls.key`; labelled managed-by certctl, annotated with the target and the leaf's
/// fingerprint and expiry. Names are checked as Kubernetes checks them (DNS-1123), so a bad
/// one is an error here, before anything connects.
fn kubernetes_tls_secret(
    name: &str,
    namespace: &str,
    target: &str,
    material: &Material,
) -> Result<Secret, String> {
    use base64::Engine as _;
    for (what, value, max) in [("name", name, 253), ("namespace", namespace, 63)] {
        let ok = !value.is_empty()
            && value.len() <= max
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && value
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && value
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "Kubernetes Secret {what} `{value}` is not a valid name (lower-case letters, \
                 digits, `-` and `.`, starting and ending with a letter or digit, at most {max} characters)"
            ));
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let crt = b64.encode(material.fullchain_pem());
    let key = zeroize::Zeroizing::new(b64.encode(material.key_pem().expose()));
    let head = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/managed-by": "certctl" },
            "annotations": {
                "certctl.io/target": target,
                "certctl.io/fingerprint": material.leaf.fingerprint.to_string(),
                "certctl.io/not-after": crate::report::format_unix(material.leaf.not_after),
            },
        },
        "data": { "tls.crt": crt, "tls.key": "" },
    });
    // The key goes in last, straight into a zeroized buffer (never through a serde_json
    // value, which is not zeroized on drop).
    let text = serde_json::to_string_pretty(&head).map_err(|e| e.to_string())?;
    let marker = "\"tls.key\": \"\"";
    let at = text.find(marker).ok_or("rendering the Secret manifest")?;
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(text.len() + key.len()));
    out.extend_from_slice(&text.as_bytes()[..at]);
    out.extend_from_slice(b"\"tls.key\": \"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\"");
    out.extend_from_slice(&text.as_bytes()[at + marker.len()..]);
    out.push(b'\n');
    Ok(Secret::new(std::mem::take(&mut *out)))
}

/// Reads a secret input on the controller: `param`'s value names an environment variable.
fn secret_from_env(
    param: &str,
    params: &BTreeMap<String, String>,
    input: &str,
) -> Result<Secret, String> {
    let var = params
        .get(param)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("param `{param}` must name an environment variable"))?;
    match std::env::var_os(var) {
        Some(value) if !value.is_empty() => {
            use std::os::unix::ffi::OsStringExt as _;
            Ok(Secret::new(value.into_vec()))
        }
        _ => Err(format!(
            "environment variable `{var}` (param `{param}`, for input `{input}`) is not set or \
             empty on the controller"
        )),
    }
}
