//! OpenSSH known_hosts matching: hashed names, `[host]:port`, tab or space separated fields,
//! `@revoked`, `@cert-authority` (recognised, not trusted for plain keys).
