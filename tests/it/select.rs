//! Target selection and rollout arithmetic: `--limit`, `--shard`, `--serial`, `--max-fail`.
//! Pure functions over names; no network.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use certctl::inventory::{Location, Target, TargetCertificate, VerifySettings};
use certctl::select::{
    BatchSize, MaxFail, SelectError, SerialSpec, Shard, batches, budget_exceeded, select, shard,
    shard_hash,
};

fn target(name: &str, groups: &[&str]) -> Target {
    Target {
        name: name.into(),
        host: format!("{name}.example.net"),
        port: Some(22),
        user: Some("root".into()),
        identity_file: None,
        known_hosts: Some(PathBuf::from("/root/.ssh/known_hosts")),
        jump: None,
        become_method: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        certificates: vec![TargetCertificate {
            name: "www".into(),
            params: BTreeMap::new(),
            verify: None,
        }],
        connector: "nginx".into(),
        params: BTreeMap::new(),
        commands: BTreeMap::new(),
        verify: VerifySettings::default(),
        location: Location {
            file: PathBuf::from("certctl.yaml"),
            line: 1,
            column: 1,
        },
    }
}

/// web-01..03 (edge), db-1, db-2 (data), mail (edge, data), lb-a (no group); group `spare`
/// is declared but empty.
fn fleet() -> (Vec<Target>, Vec<String>) {
    let targets = vec![
        target("web-01", &["edge"]),
        target("web-02", &["edge"]),
        target("web-03", &["edge"]),
        target("db-1", &["data"]),
        target("db-2", &["data"]),
        target("mail", &["edge", "data"]),
        target("lb-a", &[]),
    ];
    let groups = ["edge", "data", "spare"].map(String::from).to_vec();
    (targets, groups)
}

fn names(selected: &[&Target]) -> Vec<String> {
    selected.iter().map(|t| t.name.clone()).collect()
}

fn limit(pattern: &str) -> Result<Vec<String>, SelectError> {
    let (targets, groups) = fleet();
    select(&targets, &groups, Some(pattern)).map(|s| names(&s))
}

fn ok(pattern: &str) -> Vec<String> {
    limit(pattern).unwrap_or_else(|e| panic!("--limit {pattern}: {e}"))
}

fn err(pattern: &str) -> String {
    match limit(pattern) {
        Ok(v) => panic!("--limit {pattern} should fail, selected {v:?}"),
        Err(e) => e.to_string(),
    }
}

// --- --limit ---------------------------------------------------------------------------------

#[test]
fn no_limit_selects_everything_in_inventory_order() {
    let (targets, groups) = fleet();
    let all = select(&targets, &groups, None).unwrap();
    assert_eq!(
        names(&all),
        ["web-01", "web-02", "web-03", "db-1", "db-2", "mail", "lb-a"]
    );
}

#[test]
fn limit_by_name_and_group_keeps_inventory_order_without_duplicates() {
    assert_eq!(ok("lb-a,web-02"), ["web-02", "lb-a"]);
    assert_eq!(ok("data"), ["db-1", "db-2", "mail"]);
    assert_eq!(ok("mail,edge,data"), ok("edge,data"));
    assert_eq!(
        ok("mail,edge,data"),
        ["web-01", "web-02", "web-03", "db-1", "db-2", "mail"]
    );
    assert_eq!(ok(" web-01 , db-1 ,"), ["web-01", "db-1"]);
}

#[test]
fn limit_globs_match_target_names_and_group_names() {
    assert_eq!(ok("web-*"), ["web-01", "web-02", "web-03"]);
    assert_eq!(ok("db-?"), ["db-1", "db-2"]);
    // `d*` matches target names db-1, db-2 and the group `data` (which brings in mail).
    assert_eq!(ok("d*"), ["db-1", "db-2", "mail"]);
    // `e*` matches only the group `edge`.
    assert_eq!(ok("e*"), ["web-01", "web-02", "web-03", "mail"]);
    assert_eq!(ok("[lm]*"), ["mail", "lb-a"]);
    assert_eq!(ok("web-0[13]"), ["web-01", "web-03"]);
    assert_eq!(ok("*"), ok("edge,data,lb-a"));
}

#[test]
fn limit_exclusions_apply_after_includes_whatever_their_position() {
    assert_eq!(ok("edge,!mail"), ["web-01", "web-02", "web-03"]);
    assert_eq!(ok("!mail,edge"), ["web-01", "web-02", "web-03"]);
    assert_eq!(ok("edge,!web-0[12]"), ["web-03", "mail"]);
    assert_eq!(ok("edge,data,!data"), ["web-01", "web-02", "web-03"]);
    // Excluding something that is not included is fine, as long as it exists.
    assert_eq!(ok("web-01,!db-1"), ["web-01"]);
}

#[test]
fn limit_with_only_exclusions_starts_from_every_target() {
    assert_eq!(ok("!edge"), ["db-1", "db-2", "lb-a"]);
    assert_eq!(ok("!edge,!db-*"), ["lb-a"]);
}

#[test]
fn limit_include_matching_nothing_is_an_error_with_a_hint() {
    let e = err("web-01,web-04");
    assert!(
        e.starts_with("--limit: `web-04` matches no target or group"),
        "{e}"
    );
    assert!(e.contains("did you mean `web-0"), "{e}");

    let e = err("edgy");
    assert_eq!(
        e,
        "--limit: `edgy` matches no target or group (did you mean `edge`?)"
    );

    let e = err("zzz-*");
    assert_eq!(e, "--limit: `zzz-*` matches no target or group");
}

#[test]
fn limit_exclude_matching_nothing_is_an_error_too() {
    // A typo in an exclusion would otherwise deploy to the very host the operator meant to skip.
    let e = err("edge,!mial");
    assert_eq!(
        e,
        "--limit: `!mial` matches no target or group (did you mean `!mail`?)"
    );
}

#[test]
fn limit_error_variants_carry_the_term() {
    let (targets, groups) = fleet();
    assert_eq!(
        select(&targets, &groups, Some("db-3")).unwrap_err(),
        SelectError::NoMatch {
            term: "db-3".into(),
            hint: Some("db-1".into()),
        }
    );
    assert_eq!(
        select(&targets, &groups, Some("spare")).unwrap_err(),
        SelectError::EmptyGroup {
            term: "spare".into()
        }
    );
}

#[test]
fn limit_naming_only_an_empty_group_is_an_error() {
    let e = err("spare");
    assert_eq!(
        e,
        "--limit: `spare` matches only groups with no targets in them"
    );
    let e = err("sp*");
    assert!(
        e.contains("`sp*` matches only groups with no targets"),
        "{e}"
    );
    // An empty group next to a matching term is still an error: that term did nothing.
    assert!(err("web-01,spare").contains("`spare`"));
    // Excluding an empty group is harmless: the name exists.
    assert_eq!(ok("web-01,!spare"), ["web-01"]);
}

#[test]
fn limit_that_excludes_everything_it_includes_is_an_error() {
    let e = err("edge,!edge");
    assert_eq!(
        e,
        "--limit `edge,!edge` selects no target: every included target is also excluded"
    );
    assert!(err("!*").contains("selects no target"));
}

#[test]
fn limit_bad_patterns_are_rejected() {
    assert_eq!(
        err(""),
        "--limit: bad pattern ``: no target, group or glob given"
    );
    assert!(err(" , ,").contains("no target, group or glob given"));
    assert!(err("web-01,!").contains("`!` needs a target"));
    assert!(err("web-[12").contains("never closed"));
}

#[test]
fn limit_scales_to_ten_thousand_targets_and_many_terms() {
    let targets: Vec<Target> = (0..10_000)
        .map(|i| {
            let region = format!("region-{}", i % 50);
            target(&format!("host-{i:05}"), &[region.as_str()])
        })
        .collect();
    let groups: Vec<String> = (0..50).map(|r| format!("region-{r}")).collect();

    // 2,000 exact names, 10 groups, a glob, and exclusions.
    let mut terms: Vec<String> = (0..10_000)
        .step_by(5)
        .map(|i| format!("host-{i:05}"))
        .collect();
    terms.extend((0..10).map(|r| format!("region-{r}")));
    terms.push("host-099??".into());
    terms.push("!region-3".into());
    terms.push("!host-0000*".into());
    let pattern = terms.join(",");

    let selected = select(&targets, &groups, Some(&pattern)).unwrap();
    let expected: Vec<&str> = targets
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let included = i % 5 == 0 || i % 50 < 10 || (9_900..10_000).contains(i);
            let excluded = i % 50 == 3 || *i < 10;
            included && !excluded
        })
        .map(|(_, t)| t.name.as_str())
        .collect();
    let got: Vec<&str> = selected.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(got, expected);
}

// --- --shard ---------------------------------------------------------------------------------

fn many(n: usize) -> Vec<Target> {
    (0..n).map(|i| target(&format!("srv-{i}"), &[])).collect()
}

#[test]
fn shards_partition_the_selection() {
    let targets = many(300);
    let all: Vec<&Target> = targets.iter().collect();
    let parts: Vec<Vec<&Target>> = (1..=3)
        .map(|i| shard(all.iter().copied(), Shard::new(i, 3).unwrap()))
        .collect();

    let mut seen = HashSet::new();
    for part in &parts {
        assert!(!part.is_empty(), "300 names over 3 shards: none empty");
        for t in part {
            assert!(seen.insert(t.name.clone()), "{} is in two shards", t.name);
        }
    }
    assert_eq!(seen.len(), 300, "union of the shards is everything");
    // Each shard keeps the given order.
    for part in &parts {
        let idx: Vec<usize> = part
            .iter()
            .map(|t| targets.iter().position(|x| x.name == t.name).unwrap())
            .collect();
        assert!(idx.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn shard_membership_ignores_inventory_order() {
    let targets = many(200);
    let mut shuffled = targets.clone();
    // Deterministic Fisher-Yates with a fixed LCG: a different order, same names.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..shuffled.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        shuffled.swap(i, (state >> 33) as usize % (i + 1));
    }
    assert_ne!(
        names(&targets.iter().collect::<Vec<_>>()),
        names(&shuffled.iter().collect::<Vec<_>>())
    );
    for i in 1..=4 {
        let s = Shard::new(i, 4).unwrap();
        let a: HashSet<String> = names(&shard(&targets, s)).into_iter().collect();
        let b: HashSet<String> = names(&shard(&shuffled, s)).into_iter().collect();
        assert_eq!(a, b, "shard {s}");
    }
}

#[test]
fn shard_hash_is_a_fixed_function() {
    // First 8 bytes of SHA-256, big-endian, pinned from coreutils so the partition never
    // changes between releases: `printf %s web-01 | sha256sum | cut -c1-16`.
    assert_eq!(shard_hash(""), 0xe3b0_c442_98fc_1c14);
    assert_eq!(shard_hash("web-01"), 0x0b9d_9f06_cc8c_f447);
    let s = Shard::new(0x0b9d_9f06_cc8c_f447_u64.rem_euclid(7) as u32 + 1, 7).unwrap();
    assert!(s.contains("web-01"));
    for other in (1..=7).filter(|&i| i != s.index()) {
        assert!(!Shard::new(other, 7).unwrap().contains("web-01"));
    }
}

#[test]
fn shard_one_of_one_is_everything() {
    let targets = many(50);
    assert_eq!(shard(&targets, "1/1".parse().unwrap()).len(), 50);
}

#[test]
fn shard_parses_and_displays() {
    let s: Shard = " 2/5 ".parse().unwrap();
    assert_eq!((s.index(), s.count()), (2, 5));
    assert_eq!(s.to_string(), "2/5");
}

#[test]
fn shard_bad_values_are_rejected_clearly() {
    let e = |v: &str| v.parse::<Shard>().unwrap_err().to_string();
    assert_eq!(
        e("0/3"),
        "--shard `0/3`: I must be between 1 and 3 (shards are numbered from 1)"
    );
    assert_eq!(
        e("4/3"),
        "--shard `4/3`: I must be between 1 and 3 (shards are numbered from 1)"
    );
    assert_eq!(e("3"), "--shard `3`: expected I/N, e.g. 1/4");
    assert_eq!(
        e("a/b"),
        "--shard `a/b`: expected I/N with whole numbers, e.g. 1/4"
    );
    assert_eq!(e("1/0"), "--shard `1/0`: N must be at least 1");
    assert!(e("-1/3").contains("whole numbers"));
    assert!(e("1/3/4").contains("whole numbers"));
    assert!(e("99999999999/3").contains("too large"));
    assert!(Shard::new(0, 3).is_err());
}

// --- --serial --------------------------------------------------------------------------------

fn serial(spec: &str, total: usize) -> Vec<usize> {
    let spec: SerialSpec = spec
        .parse()
        .unwrap_or_else(|e| panic!("--serial {spec}: {e}"));
    let b = batches(&spec, total);
    assert_eq!(b.iter().sum::<usize>(), total, "{spec} over {total}: {b:?}");
    assert!(b.iter().all(|&n| n >= 1));
    b
}

#[test]
fn serial_ansible_semantics() {
    assert_eq!(serial("1,50%", 20), [1, 10, 9]);
    assert_eq!(serial("1,10%,100%", 25), [1, 3, 21]);
    assert_eq!(serial("2", 5), [2, 2, 1]);
    assert_eq!(serial("30%", 10), [3, 3, 3, 1]);
    assert_eq!(serial("33%", 10), [4, 4, 2], "rounded up");
    assert_eq!(serial("1%", 3), [1, 1, 1], "at least 1");
    assert_eq!(serial("100", 7), [7]);
    assert_eq!(serial("1,2,3", 4), [1, 2, 1]);
    assert_eq!(serial("5,1", 3), [3]);
    assert_eq!(serial(" 1 , 10% ", 10), [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
}

#[test]
fn serial_of_nothing_is_no_batch() {
    assert_eq!(serial("1,50%", 0), Vec::<usize>::new());
    assert!(batches(&SerialSpec::default(), 0).is_empty());
}

#[test]
fn serial_default_is_one_batch_of_everything() {
    assert_eq!(batches(&SerialSpec::default(), 12), [12]);
    assert_eq!(SerialSpec::default().sizes(), [BatchSize::Percent(100)]);
}

#[test]
fn serial_parses_and_displays() {
    let s: SerialSpec = "1,10%,100%".parse().unwrap();
    assert_eq!(
        s.sizes(),
        [
            BatchSize::Count(1),
            BatchSize::Percent(10),
            BatchSize::Percent(100)
        ]
    );
    assert_eq!(s.to_string(), "1,10%,100%");
}

#[test]
fn serial_bad_values_are_rejected() {
    let e = |v: &str| v.parse::<SerialSpec>().unwrap_err().to_string();
    assert_eq!(
        e("0"),
        "--serial `0`: `0`: each item must be a batch size of at least 1 (N or P%, e.g. 1,10%,100%)"
    );
    assert_eq!(
        e("1,0%"),
        "--serial `1,0%`: `0%`: a percentage must be a whole number from 1% to 100%"
    );
    assert!(e("101%").contains("from 1% to 100%"));
    assert!(e("12.5%").contains("from 1% to 100%"));
    assert!(e("").contains("at least 1"));
    assert!(e("1,").contains("at least 1"));
    assert!(e("-2").contains("at least 1"));
    assert!(e("ten").contains("`ten`"));
}

// --- --max-fail ------------------------------------------------------------------------------

#[test]
fn max_fail_default_stops_at_the_first_failure() {
    let d = MaxFail::default();
    assert_eq!(d, MaxFail::Count(0));
    assert!(!budget_exceeded(&d, 0, 10));
    assert!(budget_exceeded(&d, 1, 10));
}

#[test]
fn max_fail_count_is_exceeded_by_more_than_n() {
    let m: MaxFail = "2".parse().unwrap();
    assert!(!budget_exceeded(&m, 2, 10));
    assert!(budget_exceeded(&m, 3, 10));
}

#[test]
fn max_fail_percent_is_of_the_total() {
    let m: MaxFail = "10%".parse().unwrap();
    assert_eq!(m, MaxFail::Percent(10));
    assert!(
        !budget_exceeded(&m, 2, 20),
        "2/20 = 10% is not more than 10%"
    );
    assert!(budget_exceeded(&m, 3, 20));
    assert!(!budget_exceeded(&m, 0, 5));
    assert!(budget_exceeded(&m, 1, 5), "1/5 = 20%");

    let zero: MaxFail = "0%".parse().unwrap();
    assert!(!budget_exceeded(&zero, 0, 100));
    assert!(budget_exceeded(&zero, 1, 100));

    let all: MaxFail = "100%".parse().unwrap();
    assert!(!budget_exceeded(&all, 100, 100));
    assert!(!budget_exceeded(&all, 0, 0));
}

#[test]
fn max_fail_parses_and_displays() {
    assert_eq!(" 3 ".parse::<MaxFail>().unwrap(), MaxFail::Count(3));
    assert_eq!("3".parse::<MaxFail>().unwrap().to_string(), "3");
    assert_eq!("5%".parse::<MaxFail>().unwrap().to_string(), "5%");
}

#[test]
fn max_fail_bad_values_are_rejected() {
    let e = |v: &str| v.parse::<MaxFail>().unwrap_err().to_string();
    assert_eq!(
        e("-1"),
        "--max-fail `-1`: expected a number of targets (N) or a percentage (P%), e.g. 3 or 5%"
    );
    assert_eq!(
        e("150%"),
        "--max-fail `150%`: a percentage must be a whole number from 0% to 100%"
    );
    assert!(e("").contains("expected a number"));
    assert!(e("%").contains("percentage"));
    assert!(e("1.5").contains("expected a number"));
}
