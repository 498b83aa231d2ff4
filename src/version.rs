//! What `certctl --version` says: the package version (`-V` prints only that), and for
//! `--version` also the commit and date of the build (captured by `build.rs`), the target it
//! was built for, and the versions of the two contracts a user's files and scripts depend on:
//! the inventory (docs/inventory.md) and the JSON report schema.

use std::sync::LazyLock;

/// The package version, as `-V` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from (`unknown` when built outside a git checkout without
/// `CERTCTL_BUILD_COMMIT`).
pub const COMMIT: &str = env!("CERTCTL_BUILD_COMMIT");
/// The build date, UTC `YYYY-MM-DD` (`SOURCE_DATE_EPOCH` when the build set it).
pub const BUILD_DATE: &str = env!("CERTCTL_BUILD_DATE");
/// The Rust target triple the binary was built for.
pub const TARGET: &str = env!("CERTCTL_BUILD_TARGET");

/// The text after `certctl ` for `--version`.
pub fn long() -> &'static str {
    static LONG: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{VERSION}\n\
             commit:             {COMMIT}\n\
             build date:         {BUILD_DATE}\n\
             target:             {TARGET}\n\
             inventory contract: v{}\n\
             JSON report schema: {}",
            crate::inventory::CONTRACT_VERSION,
            crate::report::SCHEMA_VERSION,
        )
    });
    LONG.as_str()
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_version_starts_with_the_short_one_and_names_both_contracts() {
        let long = super::long();
        assert!(long.starts_with(&format!("{}\n", super::VERSION)), "{long}");
        assert!(long.contains("\ninventory contract: v1\n"), "{long}");
        assert!(long.ends_with("\nJSON report schema: 2"), "{long}");
        assert_eq!(super::BUILD_DATE.len(), 10, "{}", super::BUILD_DATE);
    }
}
