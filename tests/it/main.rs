//! The integration tests: one binary (as ripgrep's `tests/tests.rs` and cargo's `tests/testsuite`),
//! so the shared support code is compiled once. Each module is one area; `support` starts the
//! real daemons (sshd, nginx, apache, haproxy, caddy, postfix, dovecot) on loopback.

mod support;

mod connector_apache;
mod connector_caddy;
mod connector_dovecot;
mod connector_f5_emulated;
mod connector_haproxy;
mod connector_iis_emulated;
mod connector_javakeystore;
mod connector_k8ssecret_emulated;
mod connector_postfix;
mod connector_watchers_emulated;
mod connector_wincertstore_emulated;
mod deploy_nginx;
mod emulator_powershell;
mod faults;
mod fleet;
mod fuzz;
mod generate;
mod history;
mod hooks;
mod input_limits;
mod inventory;
mod journal_recovery;
mod jump_deploy;
mod lab_script;
mod live_layouts;
mod locks;
mod material;
mod material_corpus;
mod monitor_prometheus;
mod notify;
mod pkcs12;
mod plan;
mod policy;
mod powershell_exec_emulated;
mod probe_nginx;
mod release_scripts;
mod rollback_command;
mod secrets;
mod select;
mod sources;
mod ssh_become;
mod ssh_config_deploy;
mod ssh_fleet;
mod ssh_transport;
mod terminal_safety;
mod transport_faults;
mod verify_command;
mod windows_shell_emulated;
