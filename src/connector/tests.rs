//! Unit tests of connector definitions: the built-ins validate, rendering, each check.

use super::*;

#[test]
fn every_builtin_parses_and_validates() {
    let cat = Catalogue::builtin();
    for (name, def, _) in cat.iter() {
        validate(name, def).unwrap();
    }
    assert!(cat.get("nginx").is_ok());
    assert!(cat.get("ssh").is_ok());
}

#[test]
fn render_substitutes_and_escapes() {
    let values = BTreeMap::from([
        ("a".to_string(), "x y".to_string()),
        ("staged.key".to_string(), "/k".into()),
    ]);
    assert_eq!(
        render("{a}-{staged.key}-{{lit}}", &values).unwrap(),
        "x y-/k-{lit}"
    );
    assert!(
        render("{nope}", &values)
            .unwrap_err()
            .contains("unknown placeholder `{nope}`")
    );
    assert!(render("{a", &values).unwrap_err().contains("unclosed"));
    assert!(render("a}", &values).unwrap_err().contains("unmatched"));
    assert!(
        render("{a b}", &values)
            .unwrap_err()
            .contains("not a placeholder")
    );
}

#[test]
fn validate_rejects_unknown_placeholder_with_hint() {
    let mut def = Catalogue::builtin().get("nginx").unwrap().clone();
    def.reload = vec![vec!["{nginxx}".into(), "-s".into(), "reload".into()]];
    let err = validate("mine", &def).unwrap_err().to_string();
    assert!(err.contains("unknown placeholder `{nginxx}`"), "{err}");
    assert!(err.contains("did you mean `{nginx}`"), "{err}");
}

#[test]
fn validate_rejects_duplicate_roles_and_bad_modes() {
    let mut def = Catalogue::builtin().get("nginx").unwrap().clone();
    def.files.push(def.files[0].clone());
    assert!(
        validate("x", &def)
            .unwrap_err()
            .to_string()
            .contains("appears twice")
    );
    let mut def = Catalogue::builtin().get("nginx").unwrap().clone();
    def.files[0].mode = Some("0666".into());
    assert!(
        validate("x", &def)
            .unwrap_err()
            .to_string()
            .contains("world-writable")
    );
    def.files[0].mode = Some("rw-r--r--".into());
    assert!(
        validate("x", &def)
            .unwrap_err()
            .to_string()
            .contains("octal")
    );
}

#[test]
fn user_connector_may_not_shadow_builtin() {
    let def = Catalogue::builtin().get("ssh").unwrap().clone();
    let user = BTreeMap::from([("nginx".to_string(), def)]);
    assert!(
        Catalogue::builtin()
            .with_user(&user)
            .unwrap_err()
            .to_string()
            .contains("built-in")
    );
}

/// The error `validate` gives for the built-in connector `name` once `change` is applied.
fn invalid(name: &str, change: impl FnOnce(&mut ConnectorDef)) -> String {
    let mut def = Catalogue::builtin().get(name).unwrap().clone();
    change(&mut def);
    validate("x", &def).unwrap_err().to_string()
}

/// A `restore:`/`apply:` command with guards.
fn guarded(if_saved: Option<&str>, unless_saved: Option<&str>, word: Option<&str>) -> RestoreDef {
    RestoreDef::Guarded(GuardedCommand {
        run: vec!["x".into()],
        if_saved: if_saved.map(Into::into),
        unless_saved: unless_saved.map(Into::into),
        word: word.map(Into::into),
    })
}

#[test]
fn validate_checks_inputs() {
    let base = Catalogue::builtin().get("javakeystore").unwrap().clone();
    assert!(known_placeholders(&base).contains("input.storepass"));
    let err = |f: fn(&mut ConnectorDef)| invalid("javakeystore", f);
    assert!(err(|d| d.inputs[0].name = "../x".into()).contains("plain file name"));
    assert!(err(|d| d.inputs[1].name = "storepass".into()).contains("used twice"));
    assert!(err(|d| d.inputs[0].from = Some("nope".into())).contains("names no param"));
    assert!(err(|d| d.inputs[1].from = Some("alias".into())).contains("exactly one"));
    assert!(err(|d| d.inputs[1].role = Some(Role::Keystore)).contains("cannot be an input"));
}

#[test]
fn validate_checks_swap_commands_sections() {
    let err = |f: fn(&mut ConnectorDef)| invalid("k8ssecret", f);
    assert!(
        err(|d| d.files = Catalogue::builtin().get("nginx").unwrap().files.clone())
            .contains("give the material as `inputs`")
    );
    assert!(invalid("nginx", |d| d.shell = Shell::Powershell).contains("needs `swap: commands`"));
    assert!(err(|d| d.apply.clear()).contains("needs `apply`"));
    assert!(err(|d| d.restore.clear()).contains("needs `restore`"));
    assert!(err(|d| d.snapshot[0].save = "../x".into()).contains("plain file name"));
    assert!(err(|d| d.snapshot[0].save = "manifest".into()).contains("plain file name"));
    assert!(err(|d| d.snapshot.push(d.snapshot[0].clone())).contains("saved twice"));
    assert!(err(|d| d.inputs[0].pkcs12 = true).contains("`pkcs12: true` takes no"));
    assert!(err(|d| d.inputs[0].role = Some(Role::Key)).contains("exactly one of"));
}

#[test]
fn validate_checks_guards_and_placeholders_of_commands() {
    let err = |f: fn(&mut ConnectorDef)| invalid("k8ssecret", f);
    assert!(
        err(|d| d.restore[0] = guarded(Some("nope"), None, None))
            .contains("no snapshot is saved as `nope`")
    );
    assert!(
        err(|d| d.restore[0] = guarded(Some("secret.yaml"), Some("secret.yaml"), None))
            .contains("at most one")
    );
    assert!(
        err(|d| d.restore[0] = guarded(None, None, Some("{thumbprint}"))).contains("`word:` needs")
    );
    assert!(
        err(|d| d.apply[0] = guarded(None, Some("nope"), None))
            .contains("apply[0]: no snapshot is saved as `nope`")
    );
    assert!(
        err(|d| d.apply[0] = RestoreDef::Always(vec!["{snapshot.secret.yaml}".into()]))
            .contains("unknown placeholder `{snapshot.secret.yaml}`")
    );
    assert!(err(|d| d.test[0].push("x{words.workloads}".into())).contains("whole argument"));
    assert!(
        err(|d| d.apply[0] = RestoreDef::Always(vec!["{words.workloads}".into()]))
            .contains("whole argument")
    );
    assert!(
        err(|d| d.after_deploy = vec![AfterDeployDef::When(WhenCommand {
            run: vec!["x".into()],
            when: "nope".into(),
        })])
        .contains("`when: nope` names no param")
    );
    assert!(
        err(|d| d.after_deploy = vec![AfterDeployDef::Always(vec!["{snapshot.x}".into()])])
            .contains("unknown placeholder")
    );
}

#[test]
fn files_connectors_refuse_the_commands_only_sections() {
    assert!(
        invalid("nginx", |d| d.after_deploy =
            vec![AfterDeployDef::Always(vec!["x".into()])])
        .contains("`after_deploy` needs `swap: commands`")
    );
    let apply = Catalogue::builtin().get("k8ssecret").unwrap().apply.clone();
    assert!(invalid("nginx", |d| d.apply = apply).contains("`apply` needs `swap: commands`"));
}

#[test]
fn object_name_format() {
    for ok in ["Common", "clientssl-web", "a.b_c-1", "_x"] {
        ParamFormat::ObjectName.check(ok).unwrap();
    }
    for bad in [
        "", "-x", ".x", "a b", "a;b", "a}b", "$x", "`id`", "'q'", "a/b",
    ] {
        assert!(ParamFormat::ObjectName.check(bad).is_err(), "{bad}");
    }
}

#[test]
fn did_you_mean_finds_close_names() {
    assert_eq!(
        did_you_mean("fulchain_path", ["fullchain_path", "key_path"]),
        Some("fullchain_path")
    );
    assert_eq!(did_you_mean("zzz", ["fullchain_path", "key_path"]), None);
}
