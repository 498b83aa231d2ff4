//! How to reach a target: the inventory's settings first, then the operator's OpenSSH client
//! config for the inventory's `host`, then built-in defaults — as one [`SshConfig`], with the
//! ssh config's warnings for this host.

use std::path::PathBuf;

use super::RunSettings;
use crate::inventory::{Become, Target};
use crate::ssh::SshConfig;
use crate::ssh::config::{HostSettings, LocalUser};

/// How to reach a target. Precedence, per setting: what the inventory writes (target <
/// group < defaults, merged by the inventory), then the operator's ssh config for the
/// inventory's `host` (as `ssh HOST` would read it), then built-in defaults:
///
/// | setting | inventory | ssh config | default |
/// |---|---|---|---|
/// | address | — | `HostName` | `host` |
/// | user | `user` | `User` | the local user |
/// | port | `port` | `Port` | 22 |
/// | keys | `identity_file` (only it) | every `IdentityFile`, `IdentitiesOnly` | agent, then ~/.ssh/id_{ed25519,ecdsa,rsa} |
/// | known_hosts | `known_hosts` (only it) | every `UserKnownHostsFile` (new keys go to the first), then every `GlobalKnownHostsFile` | ~/.ssh/known_hosts{,2}, then /etc/ssh/ssh_known_hosts{,2} |
/// | jump | `jump` | `ProxyJump` | direct |
/// | timeouts | — | `ConnectTimeout`, `ServerAliveInterval` | 10 s, 15 s |
///
/// `StrictHostKeyChecking` never loosens checking: `no` is read as `yes` and `accept-new` is
/// not followed (only `--accept-new-host-keys` trusts on first use); both warn. Jump hops use
/// the inventory's user, key and known_hosts unless the ssh config says otherwise for the hop.
/// Returns the config and the ssh config's warnings for this host.
pub(super) fn ssh_config(
    target: &Target,
    settings: &RunSettings,
) -> Result<(SshConfig, Vec<String>), String> {
    use crate::ssh::config::{HostKeyChecking, JumpDefaults};
    use crate::ssh::jump::JumpSpec;
    let client = &settings.ssh_client;
    let hs = client.resolve(&target.host);
    let mut warnings = hs.warnings.clone();
    let local = client.local_user();
    let user = target
        .user
        .clone()
        .or_else(|| hs.user.clone())
        .unwrap_or_else(|| local.name.clone());
    let identity_files = match &target.identity_file {
        Some(file) => vec![file.clone()],
        None => hs.identity_files.clone(),
    };
    let (known_hosts, known_hosts_extra) = known_hosts_files(target, &hs, local)?;
    if hs.host_key_checking == Some(HostKeyChecking::AcceptNew) && !settings.accept_new_host_keys {
        let warning = format!(
            "ssh config: StrictHostKeyChecking accept-new for `{}` is not followed: certctl \
             trusts a new host key only with --accept-new-host-keys",
            target.host
        );
        warnings.push(warning);
    }
    let specs = match &target.jump {
        Some(jump) => JumpSpec::parse_list(jump).map_err(|e| format!("jump `{jump}`: {e}"))?,
        None => hs.proxy_jump.clone().unwrap_or_default(),
    };
    let defaults = JumpDefaults {
        user: target.user.clone().unwrap_or_else(|| local.name.clone()),
        identity_files: identity_files.clone(),
        known_hosts: known_hosts.clone(),
    };
    let chain = client
        .jump_chain(&specs, &defaults)
        .map_err(|e| e.to_string())?;
    for w in chain.warnings {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    let config = SshConfig {
        host: hs.host_name.clone().unwrap_or_else(|| target.host.clone()),
        port: target.port.or(hs.port).unwrap_or(22),
        user,
        identity_files,
        identities_only: hs.identities_only.unwrap_or(false),
        known_hosts,
        known_hosts_extra,
        become_sudo: target.become_method == Some(Become::Sudo),
        accept_new_host_keys: settings.accept_new_host_keys,
        connect_timeout: hs.connect_timeout.unwrap_or(settings.connect_timeout),
        command_timeout: settings.command_timeout,
        keepalive_interval: hs
            .server_alive_interval
            .filter(|d| !d.is_zero())
            .unwrap_or(settings.keepalive_interval),
        jump: chain.hops,
    };
    Ok((config, warnings))
}

/// The known_hosts file that vouches for the target (and receives new keys), and the further
/// ones read: the inventory's one file, else the ssh config's `UserKnownHostsFile`s, else
/// OpenSSH's defaults; then the system-wide files.
fn known_hosts_files(
    target: &Target,
    hs: &HostSettings,
    local: &LocalUser,
) -> Result<(PathBuf, Vec<PathBuf>), String> {
    // The system-wide files OpenSSH also reads, unless the inventory names its one file.
    let global = hs.global_known_hosts_files.clone().unwrap_or_else(|| {
        vec![
            PathBuf::from("/etc/ssh/ssh_known_hosts"),
            PathBuf::from("/etc/ssh/ssh_known_hosts2"),
        ]
    });
    match (&target.known_hosts, &hs.known_hosts_files) {
        (Some(file), _) => Ok((file.clone(), Vec::new())),
        (None, Some(files)) => match files.split_first() {
            Some((first, rest)) => Ok((first.clone(), [rest, &global].concat())),
            None => Err(format!(
                "the ssh config says `UserKnownHostsFile none` for `{}`, which would trust no \
                 host key; set `known_hosts:` in the inventory",
                target.host
            )),
        },
        (None, None) => match &local.home {
            Some(home) => Ok((
                home.join(".ssh/known_hosts"),
                [vec![home.join(".ssh/known_hosts2")], global].concat(),
            )),
            None => Err(
                "$HOME is not set, so ~/.ssh/known_hosts is unknown; set `known_hosts:` to a \
                 full path"
                    .into(),
            ),
        },
    }
}
