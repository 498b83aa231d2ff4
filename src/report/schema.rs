//! The JSON Schema of `--output json` (version [`super::SCHEMA_VERSION`]), kept next to the
//! types it describes and checked against them by a test.

/// JSON Schema (draft 2020-12) of the report written by `--output json`, version 2.
///
/// Compatible additions (a new optional field) keep the version; removing or renaming a field,
/// or changing a value's meaning, bumps [`super::SCHEMA_VERSION`].
pub const JSON_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": "urn:certctl:report:2",
  "title": "certctl run report, version 2",
  "description": "One document per run of `certctl deploy|verify|rollback|status --output json` (and `certctl report merge`), written to stdout; also when the input is invalid (exit 2: no targets, `problems` says why).",
  "type": "object",
  "additionalProperties": false,
  "required": ["version", "command", "dry_run", "started_at", "duration_ms", "summary", "targets"],
  "properties": {
    "version": { "description": "Schema version.", "type": "integer", "enum": [2] },
    "command": { "description": "The subcommand that ran, e.g. deploy or verify.", "type": "string" },
    "dry_run": { "description": "True for deploy --dry-run: nothing live was changed.", "type": "boolean" },
    "started_at": { "description": "Start of the run, RFC 3339, UTC.", "type": "string", "format": "date-time" },
    "duration_ms": { "description": "Wall time of the whole run.", "type": "integer", "minimum": 0 },
    "summary": { "$ref": "#/$defs/summary" },
    "targets": { "type": "array", "items": { "$ref": "#/$defs/target" } },
    "problems": {
      "description": "Invalid input the run stopped at before touching any target (exit 2): each problem once, with the targets it affects (empty: the whole run). Empty when the run went ahead. Absent from reports written before it was added.",
      "type": "array",
      "items": { "$ref": "#/$defs/problem" }
    }
  },
  "$defs": {
    "status": {
      "description": "A target's final state. ok, mismatch and expiring are produced by verify only.",
      "type": "string",
      "enum": ["deployed", "unchanged", "reloaded", "would-change", "would-fail", "failed",
               "rolled-back", "rollback-failed", "skipped", "unreachable", "ok", "mismatch", "expiring"]
    },
    "fingerprint": {
      "description": "SHA-256 of the certificate's DER, upper-case hex pairs joined by colons.",
      "type": "string",
      "pattern": "^[0-9A-F]{2}(:[0-9A-F]{2}){31}$"
    },
    "fingerprint_or_null": {
      "type": ["string", "null"],
      "pattern": "^[0-9A-F]{2}(:[0-9A-F]{2}){31}$"
    },
    "summary": {
      "description": "Number of targets in total and with each status; every status is always present.",
      "type": "object",
      "additionalProperties": false,
      "required": ["total", "deployed", "unchanged", "reloaded", "would-change", "would-fail", "failed",
                   "rolled-back", "rollback-failed", "skipped", "unreachable", "ok", "mismatch", "expiring"],
      "properties": {
        "total": { "type": "integer", "minimum": 0 },
        "deployed": { "type": "integer", "minimum": 0 },
        "unchanged": { "type": "integer", "minimum": 0 },
        "reloaded": { "type": "integer", "minimum": 0 },
        "would-change": { "type": "integer", "minimum": 0 },
        "would-fail": { "type": "integer", "minimum": 0 },
        "failed": { "type": "integer", "minimum": 0 },
        "rolled-back": { "type": "integer", "minimum": 0 },
        "rollback-failed": { "type": "integer", "minimum": 0 },
        "skipped": { "type": "integer", "minimum": 0 },
        "unreachable": { "type": "integer", "minimum": 0 },
        "ok": { "type": "integer", "minimum": 0 },
        "mismatch": { "type": "integer", "minimum": 0 },
        "expiring": { "type": "integer", "minimum": 0 }
      }
    },
    "target": {
      "type": "object",
      "additionalProperties": false,
      "required": ["name", "host", "connector", "status", "old_fingerprint", "new_fingerprint",
                   "served_fingerprint", "files", "steps", "probes", "certificates", "duration_ms",
                   "error"],
      "properties": {
        "name": { "description": "Target name from the inventory.", "type": "string" },
        "host": { "description": "SSH host as given in the inventory.", "type": "string" },
        "connector": { "description": "Connector name, e.g. nginx.", "type": "string" },
        "status": { "$ref": "#/$defs/status" },
        "old_fingerprint": { "description": "Leaf found in the live files (else the one served) before the run.", "$ref": "#/$defs/fingerprint_or_null" },
        "new_fingerprint": { "description": "Leaf being deployed (verify: expected).", "$ref": "#/$defs/fingerprint_or_null" },
        "served_fingerprint": { "description": "Leaf the endpoint served at the last successful probe.", "$ref": "#/$defs/fingerprint_or_null" },
        "files": { "type": "array", "items": { "$ref": "#/$defs/file" } },
        "steps": { "type": "array", "items": { "$ref": "#/$defs/step" } },
        "probes": { "description": "The first certificate's probes: of the final verification, then of the rollback's.", "type": "array", "items": { "$ref": "#/$defs/attempt" } },
        "certificates": { "description": "Every certificate of the target, in the inventory's order; the target's fingerprints and probes are the first one's.", "type": "array", "minItems": 1, "items": { "$ref": "#/$defs/certificate" } },
        "duration_ms": { "type": "integer", "minimum": 0 },
        "error": { "description": "What went wrong and the state the target was left in (sanitised).", "type": ["string", "null"] },
        "served_not_after": { "description": "Not-after (RFC 3339) of the leaf last served: verify and status from the probe; deploy when the served leaf is the deployed one; else null.", "type": ["string", "null"], "format": "date-time" },
        "served_days_left": { "description": "Whole days from the run to served_not_after, negative once expired; null when that is null.", "type": ["integer", "null"] },
        "facts": { "description": "status only (else null): what the target said about itself.", "$ref": "#/$defs/facts" }
      }
    },
    "certificate": {
      "type": "object",
      "additionalProperties": false,
      "required": ["certificate", "address", "sni", "old_fingerprint", "new_fingerprint",
                   "served_fingerprint", "probes"],
      "properties": {
        "certificate": { "description": "Its name in the inventory's certificates.", "type": "string" },
        "address": { "description": "Where it is probed (host:port); null without a TLS endpoint.", "type": ["string", "null"] },
        "sni": { "description": "The SNI its probe sends; null without a TLS endpoint.", "type": ["string", "null"] },
        "old_fingerprint": { "description": "Leaf found in its live files (else the one served) before the run.", "$ref": "#/$defs/fingerprint_or_null" },
        "new_fingerprint": { "description": "Leaf being deployed (verify: expected).", "$ref": "#/$defs/fingerprint_or_null" },
        "served_fingerprint": { "description": "Leaf its endpoint served at the last successful probe.", "$ref": "#/$defs/fingerprint_or_null" },
        "probes": { "description": "Probes of the final verification, then of the rollback's.", "type": "array", "items": { "$ref": "#/$defs/attempt" } }
      }
    },
    "facts": {
      "type": ["object", "null"],
      "additionalProperties": false,
      "required": ["os", "arch", "hostname", "server_version"],
      "properties": {
        "os": { "description": "Kernel name and release (uname -sr), e.g. Linux 6.1.0-28-amd64.", "type": ["string", "null"] },
        "arch": { "description": "Machine hardware name (uname -m), e.g. x86_64.", "type": ["string", "null"] },
        "hostname": { "type": ["string", "null"] },
        "server_version": { "description": "First line of the connector's version command, e.g. nginx version: nginx/1.22.1.", "type": ["string", "null"] }
      }
    },
    "problem": {
      "type": "object",
      "additionalProperties": false,
      "required": ["message", "targets"],
      "properties": {
        "message": { "type": "string" },
        "targets": { "description": "Names of the targets this problem stops; empty for the whole run.", "type": "array", "items": { "type": "string" } }
      }
    },
    "file": {
      "type": "object",
      "additionalProperties": false,
      "required": ["role", "path", "action", "via_symlink", "in_place", "repair", "old_sha256", "new_sha256",
                   "mode", "owner", "group", "old_fingerprint", "new_fingerprint", "subject", "sans", "not_after", "chain_length"],
      "properties": {
        "role": { "description": "Content role: cert, chain, fullchain, key, bundle, pkcs12, …", "type": "string" },
        "path": { "description": "Live path on the target.", "type": "string" },
        "action": { "description": "deploy: create, replace, repair or unchanged; status: current, differs or missing.", "type": "string", "enum": ["create", "replace", "repair", "unchanged", "current", "differs", "missing"] },
        "via_symlink": { "description": "The live path is a symlink that is followed: the file it resolves to, which is the one written (the link stays as it is); null otherwise.", "type": ["string", "null"] },
        "in_place": { "description": "The live file is written into its own inode (after the backup) instead of renamed over, and why: `bind-mounted into PATH (PID N, NAME)` (a container bind-mounts the single file and would never see a renamed one), or `in_place: always`; null otherwise.", "type": ["string", "null"] },
        "repair": { "description": "action repair: what is wrong with the live file now (missing, not a loadable certificate, does not match the key, …); null otherwise.", "type": ["string", "null"] },
        "old_sha256": { "description": "SHA-256 of the live file, lower-case hex; null when absent.", "type": ["string", "null"] },
        "new_sha256": { "type": "string" },
        "mode": { "description": "Octal, e.g. 0640.", "type": "string" },
        "owner": { "description": "Numeric uid as text.", "type": ["string", "null"] },
        "group": { "description": "Numeric gid as text.", "type": ["string", "null"] },
        "old_fingerprint": { "$ref": "#/$defs/fingerprint_or_null" },
        "new_fingerprint": { "$ref": "#/$defs/fingerprint_or_null" },
        "subject": { "type": ["string", "null"] },
        "sans": { "type": "array", "items": { "type": "string" } },
        "not_after": { "description": "RFC 3339.", "type": ["string", "null"], "format": "date-time" },
        "chain_length": { "description": "Intermediates in the file, for roles that carry a chain.", "type": ["integer", "null"], "minimum": 0 }
      }
    },
    "step": {
      "type": "object",
      "additionalProperties": false,
      "required": ["step", "status", "duration_ms", "detail"],
      "properties": {
        "step": {
          "type": "string",
          "enum": ["connect", "lock", "recover", "inspect", "stage", "preview", "backup", "swap", "test",
                   "reload", "verify", "rollback", "cleanup"]
        },
        "status": { "type": "string", "enum": ["ok", "failed", "skipped"] },
        "duration_ms": { "type": "integer", "minimum": 0 },
        "detail": { "description": "Sanitised remote output or what changed.", "type": ["string", "null"] }
      }
    },
    "attempt": {
      "type": "object",
      "additionalProperties": false,
      "required": ["at_ms", "duration_ms", "served", "matched", "detail"],
      "properties": {
        "at_ms": { "description": "Milliseconds since the verification started.", "type": "integer", "minimum": 0 },
        "duration_ms": { "type": "integer", "minimum": 0 },
        "served": { "$ref": "#/$defs/fingerprint_or_null" },
        "matched": { "type": "boolean" },
        "detail": { "type": ["string", "null"] }
      }
    }
  }
}
"##;

/// JSON Schema of `certctl check --output json` (its own document, version 1): every selected
/// target as certctl resolved it offline, and the problems (exit 2) and warnings found.
pub const CHECK_JSON_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": "urn:certctl:check:1",
  "title": "certctl check report, version 1",
  "type": "object",
  "additionalProperties": false,
  "required": ["version", "command", "ok", "targets", "problems", "warnings"],
  "properties": {
    "version": { "type": "integer", "enum": [1] },
    "command": { "type": "string", "enum": ["check"] },
    "ok": { "description": "True when nothing stops a run (exit 0); false with exit 2.", "type": "boolean" },
    "targets": { "description": "Selected targets (or those named on the command line); empty when the input is invalid.", "type": "array", "items": { "$ref": "#/$defs/target" } },
    "problems": { "description": "What makes the input invalid, each once with the targets it affects.", "type": "array", "items": { "$ref": "#/$defs/problem" } },
    "warnings": { "description": "What a run may trip over (a host in no known_hosts file, a key file from the ssh config that does not exist).", "type": "array", "items": { "$ref": "#/$defs/problem" } }
  },
  "$defs": {
    "problem": {
      "type": "object",
      "additionalProperties": false,
      "required": ["message", "targets"],
      "properties": {
        "message": { "type": "string" },
        "targets": { "type": "array", "items": { "type": "string" } }
      }
    },
    "target": {
      "type": "object",
      "additionalProperties": false,
      "required": ["name", "connector", "certificate", "connection", "files", "leaf", "verify",
                   "certificates"],
      "properties": {
        "name": { "type": "string" },
        "connector": { "type": "string" },
        "certificate": { "type": "string" },
        "connection": {
          "description": "What certctl will connect with, as `ssh -G` shows it: inventory, then ssh config, then defaults.",
          "type": "object",
          "additionalProperties": false,
          "required": ["address", "port", "user", "identity_files", "identities_only", "known_hosts", "jump", "become"],
          "properties": {
            "address": { "type": "string" },
            "port": { "type": "integer", "minimum": 1 },
            "user": { "type": "string" },
            "identity_files": { "description": "Offered after the agent; empty: the agent, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa.", "type": "array", "items": { "type": "string" } },
            "identities_only": { "type": "boolean" },
            "known_hosts": { "description": "The first vouches for the host and records new keys; the others are read too.", "type": "array", "items": { "type": "string" } },
            "jump": { "description": "user@host:port per hop, first hop first.", "type": "array", "items": { "type": "string" } },
            "become": { "type": ["string", "null"], "enum": ["sudo", null] }
          }
        },
        "files": {
          "type": "array",
          "items": {
            "type": "object",
            "additionalProperties": false,
            "required": ["role", "path", "mode", "default_mode"],
            "properties": {
              "role": { "type": "string" },
              "path": { "type": "string" },
              "mode": { "description": "The mode param when set; else a replaced file keeps its own.", "type": ["string", "null"] },
              "default_mode": { "description": "Mode of a file created by the deploy.", "type": "string" }
            }
          }
        },
        "leaf": { "description": "The first certificate's leaf.", "$ref": "#/$defs/leaf" },
        "verify": { "description": "The first certificate's probe.", "$ref": "#/$defs/verify" },
        "certificates": {
          "description": "Every certificate of the target in the inventory's order (one for `certificate:`); `certificate`, `leaf` and `verify` above are the first one's.",
          "type": "array",
          "minItems": 1,
          "items": {
            "type": "object",
            "additionalProperties": false,
            "required": ["certificate", "leaf", "verify"],
            "properties": {
              "certificate": { "type": "string" },
              "leaf": { "$ref": "#/$defs/leaf" },
              "verify": { "$ref": "#/$defs/verify" }
            }
          }
        }
      }
    },
    "leaf": {
      "type": "object",
      "additionalProperties": false,
      "required": ["fingerprint", "subject", "not_after"],
      "properties": {
        "fingerprint": { "type": "string" },
        "subject": { "type": "string" },
        "not_after": { "type": "string", "format": "date-time" }
      }
    },
    "verify": {
      "description": "The TLS endpoint probed; null when there is none.",
      "type": ["object", "null"],
      "additionalProperties": false,
      "properties": {
        "address": { "type": "string" },
        "sni": { "type": "string" },
        "starttls": { "type": "string", "enum": ["none", "smtp", "imap", "pop3"] }
      }
    }
  }
}
"##;

/// Checks a `check --output json` document against [`CHECK_JSON_SCHEMA`].
pub fn validate_check(document: &serde_json::Value) -> Result<(), String> {
    let schema: serde_json::Value = serde_json::from_str(CHECK_JSON_SCHEMA)
        .map_err(|e| format!("the schema does not parse: {e}"))?;
    check::validate(&schema, &schema, document, "$")
}

/// Checks a JSON report (as parsed from `--output json`) against [`JSON_SCHEMA`].
pub fn validate_report(report: &serde_json::Value) -> Result<(), String> {
    let schema: serde_json::Value =
        serde_json::from_str(JSON_SCHEMA).map_err(|e| format!("the schema does not parse: {e}"))?;
    check::validate(&schema, &schema, report, "$")
}

pub(crate) mod check {
    //! A deliberately tiny structural validator: `$ref` (local), `type`, `enum`, `required`,
    //! `properties`, `additionalProperties: false`, `items`. Enough to catch a field added to
    //! the Rust types but not to the schema, or the other way round.

    use serde_json::Value;

    pub(crate) fn validate(
        root: &Value,
        schema: &Value,
        value: &Value,
        path: &str,
    ) -> Result<(), String> {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let target = reference
                .strip_prefix("#/")
                .map(|p| p.split('/').fold(root, |node, key| &node[key]))
                .filter(|node| !node.is_null())
                .ok_or_else(|| format!("{path}: unresolved $ref {reference}"))?;
            validate(root, target, value, path)?;
        }
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{path}: bad type keyword")),
            };
            if !allowed.iter().any(|t| type_matches(t, value)) {
                return Err(format!("{path}: {value} is not {allowed:?}"));
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            return Err(format!("{path}: {value} not in enum"));
        }
        if let Some(object) = value.as_object() {
            for key in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = key.as_str().unwrap_or_default();
                if !object.contains_key(key) {
                    return Err(format!("{path}: missing required {key}"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, field) in object {
                match properties.and_then(|p| p.get(key)) {
                    Some(sub) => validate(root, sub, field, &format!("{path}.{key}"))?,
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{path}: {key} is not in the schema"));
                    }
                    None => {}
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                validate(root, items, item, &format!("{path}[{i}]"))?;
            }
        }
        Ok(())
    }

    fn type_matches(name: &str, value: &Value) -> bool {
        match name {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        }
    }
}
