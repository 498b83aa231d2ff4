//! The ssh config keywords certctl reads but does not follow: those that cannot change how it
//! connects or what it trusts (read silently), and those that would (a warning naming the
//! file and line, unless the value keeps OpenSSH's default); and the checks of the values of
//! the keywords it does follow.

use super::read::{parse_flag, parse_time};
use crate::ssh::jump::{JumpSpec, parse_port};

/// Keywords read and ignored because they cannot change how certctl connects or what it
/// trusts (interactive use, forwarding, logging, password auth certctl never does).
pub(super) const HARMLESS: &[&str] = &[
    "addkeystoagent",
    "batchmode",
    "challengeresponseauthentication",
    "checkhostip",
    "clearallforwardings",
    "compression",
    "dynamicforward",
    "enableescapecommandline",
    "escapechar",
    "exitonforwardfailure",
    "forkafterauthentication",
    "forwardx11",
    "forwardx11timeout",
    "forwardx11trusted",
    "gatewayports",
    "hashknownhosts",
    "kbdinteractiveauthentication",
    "kbdinteractivedevices",
    "localcommand",
    "localforward",
    "loglevel",
    "logverbose",
    "numberofpasswordprompts",
    "obscurekeystroketiming",
    "passwordauthentication",
    "permitlocalcommand",
    "protocol",
    "remoteforward",
    "requesttty",
    "sessiontype",
    "stdinnull",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "tcpkeepalive",
    "updatehostkeys",
    "usekeychain",
    "visualhostkey",
    "xauthlocation",
];

/// Keywords that would change how `ssh` connects, with the values that keep OpenSSH's
/// default (no warning needed) and why certctl does not follow them.
pub(super) const UNSUPPORTED: &[(&str, &[&str], &str)] = &[
    (
        "addressfamily",
        &["any"],
        "the address family is chosen by the resolver",
    ),
    ("bindaddress", &[], "certctl does not bind a source address"),
    (
        "bindinterface",
        &[],
        "certctl does not bind a source interface",
    ),
    ("canonicaldomains", &[], "host names are not canonicalised"),
    (
        "canonicalizefallbacklocal",
        &["yes"],
        "host names are not canonicalised",
    ),
    (
        "canonicalizehostname",
        &["no"],
        "host names are not canonicalised",
    ),
    (
        "canonicalizemaxdots",
        &["1"],
        "host names are not canonicalised",
    ),
    (
        "canonicalizepermittedcnames",
        &["none"],
        "host names are not canonicalised",
    ),
    (
        "casignaturealgorithms",
        &[],
        "certificates are not supported",
    ),
    (
        "certificatefile",
        &[],
        "only a KEY-cert.pub beside an identity file is offered",
    ),
    (
        "ciphers",
        &[],
        "certctl uses its SSH library's algorithm list",
    ),
    (
        "connectionattempts",
        &["1"],
        "certctl retries resets during the handshake only",
    ),
    (
        "controlmaster",
        &["no"],
        "certctl keeps one connection per target itself",
    ),
    (
        "controlpath",
        &["none"],
        "certctl keeps one connection per target itself",
    ),
    (
        "controlpersist",
        &["no"],
        "certctl keeps one connection per target itself",
    ),
    ("forwardagent", &["no"], "certctl never forwards the agent"),
    (
        "gssapiauthentication",
        &["no"],
        "only public-key authentication is supported",
    ),
    (
        "gssapidelegatecredentials",
        &["no"],
        "only public-key authentication is supported",
    ),
    (
        "hostbasedacceptedalgorithms",
        &[],
        "host-based authentication is not supported",
    ),
    (
        "hostbasedauthentication",
        &["no"],
        "host-based authentication is not supported",
    ),
    (
        "hostkeyalgorithms",
        &[],
        "certctl asks for the key types known_hosts lists",
    ),
    (
        "hostkeyalias",
        &[],
        "host keys are looked up under the host name",
    ),
    (
        "identityagent",
        &["SSH_AUTH_SOCK"],
        "the agent is taken from SSH_AUTH_SOCK",
    ),
    ("ipqos", &[], "not set by certctl"),
    (
        "kexalgorithms",
        &[],
        "certctl uses its SSH library's algorithm list",
    ),
    (
        "knownhostscommand",
        &["none"],
        "only known_hosts files are checked",
    ),
    ("macs", &[], "certctl uses its SSH library's algorithm list"),
    (
        "nohostauthenticationforlocalhost",
        &["no"],
        "certctl checks localhost host keys too",
    ),
    (
        "pkcs11provider",
        &["none"],
        "PKCS#11 keys are not supported; load them into ssh-agent",
    ),
    (
        "preferredauthentications",
        &["publickey"],
        "only public-key authentication is supported",
    ),
    ("proxyusefdpass", &["no"], "ProxyCommand is not supported"),
    (
        "pubkeyacceptedalgorithms",
        &[],
        "certctl uses its SSH library's algorithm list",
    ),
    (
        "pubkeyacceptedkeytypes",
        &[],
        "certctl uses its SSH library's algorithm list",
    ),
    (
        "pubkeyauthentication",
        &["yes"],
        "certctl authenticates with public keys only",
    ),
    (
        "rekeylimit",
        &[],
        "certctl uses its SSH library's rekey limits",
    ),
    ("remotecommand", &["none"], "certctl runs its own commands"),
    (
        "revokedhostkeys",
        &["none"],
        "use @revoked lines in known_hosts",
    ),
    (
        "securitykeyprovider",
        &["internal"],
        "security keys are not supported; use ssh-agent",
    ),
    ("sendenv", &[], "no environment is sent to the server"),
    (
        "serveralivecountmax",
        &["3"],
        "certctl allows 3 unanswered keepalives",
    ),
    ("setenv", &[], "no environment is sent to the server"),
    ("tag", &[], "Match blocks are not supported"),
    ("tunnel", &["no"], "tunnel devices are not used"),
    ("tunneldevice", &[], "tunnel devices are not used"),
    (
        "verifyhostkeydns",
        &["no"],
        "host keys are checked against known_hosts only",
    ),
];

/// The canonical spelling of a keyword, for messages.
pub(super) fn display_keyword(lower: &str) -> String {
    const NAMES: &[&str] = &[
        "AddressFamily",
        "BindAddress",
        "BindInterface",
        "CanonicalDomains",
        "CanonicalizeFallbackLocal",
        "CanonicalizeHostname",
        "CanonicalizeMaxDots",
        "CanonicalizePermittedCNAMEs",
        "CASignatureAlgorithms",
        "CertificateFile",
        "Ciphers",
        "ConnectionAttempts",
        "ControlMaster",
        "ControlPath",
        "ControlPersist",
        "ForwardAgent",
        "GlobalKnownHostsFile",
        "GSSAPIAuthentication",
        "GSSAPIDelegateCredentials",
        "HostbasedAcceptedAlgorithms",
        "HostbasedAuthentication",
        "HostKeyAlgorithms",
        "HostKeyAlias",
        "IdentityAgent",
        "IPQoS",
        "KexAlgorithms",
        "KnownHostsCommand",
        "MACs",
        "NoHostAuthenticationForLocalhost",
        "PKCS11Provider",
        "PreferredAuthentications",
        "ProxyUseFdpass",
        "PubkeyAcceptedAlgorithms",
        "PubkeyAcceptedKeyTypes",
        "PubkeyAuthentication",
        "RekeyLimit",
        "RemoteCommand",
        "RevokedHostKeys",
        "SecurityKeyProvider",
        "SendEnv",
        "ServerAliveCountMax",
        "SetEnv",
        "Tag",
        "Tunnel",
        "TunnelDevice",
        "VerifyHostKeyDNS",
    ];
    NAMES
        .iter()
        .find(|n| n.eq_ignore_ascii_case(lower))
        .map_or_else(|| lower.to_owned(), |n| (*n).to_owned())
}

/// Checks a supported keyword's value when the file is read, as OpenSSH does.
pub(super) fn validate(keyword: &str, args: &[String]) -> Result<(), String> {
    let first = args[0].as_str();
    match keyword {
        "port" => parse_port(first).map(|_| ()),
        "identitiesonly" => parse_flag(first)
            .map(|_| ())
            .ok_or_else(|| format!("IdentitiesOnly: expected yes or no, got `{first}`")),
        "stricthostkeychecking" => match first.to_ascii_lowercase().as_str() {
            "yes" | "no" | "ask" | "accept-new" | "off" | "true" | "false" => Ok(()),
            _ => Err(format!(
                "StrictHostKeyChecking: expected yes, accept-new, no or ask, got `{first}`"
            )),
        },
        "connecttimeout" | "serveraliveinterval" => parse_time(first).map(|_| ()),
        "proxyjump" => JumpSpec::parse_list(first)
            .map(|_| ())
            .map_err(|e| format!("ProxyJump: {e}")),
        _ => Ok(()),
    }
}
