//! `swap: files` (most connectors): what each file becomes and where it is written — the
//! decisions after inspect (mode, owner, a symlink followed or replaced, a missing or broken
//! live file to repair), staging, and the remote commands of the backup, the swap and a
//! restore. The scripts are in `scripts/`; what they print is read here, purely.

use super::content::{FileBytes, content_for, new_sha256};
use super::inspect::{LiveFile, LiveState, OwnerIds};
use super::journal::Entry;
use super::mounts::InPlaceWrite;
use super::names::{parent, set_dir, temp_beside};

use crate::connector::Role;
use crate::material::{CertInfo, Material};
use crate::plan::{PlannedFile, TargetPlan};
use crate::report::FileReport;
use crate::ssh::quote::Script;

/// One file after inspect: what is there, what it becomes, and where it is written.
pub(super) struct StagedFile<'a> {
    pub planned: &'a PlannedFile,
    pub live: LiveFile,
    pub content: FileBytes,
    pub sha256: String,
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
    /// The certificates in the live file (certificate roles whose content differs).
    pub old_certs: Vec<CertInfo>,
    /// What is wrong with the live file (`missing`, …): the deploy repairs it.
    pub repair: Option<String>,
    /// Written into the live file's own inode instead of renamed over it (a bind mount).
    pub in_place: Option<InPlaceWrite>,
}

impl StagedFile<'_> {
    /// Whether the live file holds exactly the new content.
    pub fn current(&self) -> bool {
        matches!(&self.live.state, LiveState::File(s) if s.sha256 == self.sha256)
    }

    /// The file written differs from the live path: a symlink that is followed.
    pub fn followed(&self) -> bool {
        self.live.write != self.planned.path
    }

    /// Where the staged file is renamed from: beside the file written (for a followed
    /// symlink, moved there from the planned name beside the link just before the swap).
    pub fn staged_at_write(&self, run_id: &str) -> String {
        if self.followed() {
            temp_beside(&self.live.write, run_id, "tmp")
        } else {
            self.planned.staged.clone()
        }
    }

    /// This run's temp files beside live files that cleanup removes.
    pub fn temps(&self, run_id: &str) -> Vec<String> {
        let mut temps = vec![
            self.planned.staged.clone(),
            temp_beside(&self.live.write, run_id, "restore"),
            temp_beside(&self.planned.path, run_id, "link"),
        ];
        if self.followed() {
            temps.push(self.staged_at_write(run_id));
        }
        temps
    }

    /// The journal's record of this file, its copy named `INDEX.ROLE` in the set, or the
    /// live file's own name (`by_name`, see [`entries`]).
    pub fn entry(&self, index: usize, by_name: bool) -> Entry {
        let name = match by_name {
            true => base_name(&self.live.write).to_string(),
            false => format!("{index}.{}", self.planned.role),
        };
        let copy = match &self.live.state {
            LiveState::File(stat) => Some((name, stat)),
            LiveState::Absent | LiveState::Link => None,
        };
        Entry {
            role: self.planned.role.to_string(),
            path: self.planned.path.clone(),
            write: self.live.write.clone(),
            link: self.live.link.clone(),
            copy_sha256: copy.as_ref().map(|(_, s)| s.sha256.clone()),
            copy: copy.map(|(name, _)| name),
            new_sha256: self.sha256.clone(),
            in_place: self.in_place.is_some(),
        }
    }
}

/// The journal's records of `files`. Each copy in the set keeps the name of the file it holds
/// when every copied file's name is plain (letters, digits, `._+@,-`, not a dot first, not
/// `journal`) and distinct: then ONE `cp` makes the whole set ([`backup_commands`]).
/// Otherwise the copies are `INDEX.ROLE`, one `cp` each.
pub(super) fn entries(files: &[StagedFile<'_>]) -> Vec<Entry> {
    let copied: Vec<&str> = files
        .iter()
        .filter(|f| matches!(f.live.state, LiveState::File(_)))
        .map(|f| base_name(&f.live.write))
        .collect();
    let by_name = names_can_be_kept(&copied);
    files
        .iter()
        .enumerate()
        .map(|(i, f)| f.entry(i, by_name))
        .collect()
}

/// Whether copies named `names` can keep them in a set: plain and distinct (see [`entries`]).
fn names_can_be_kept(names: &[&str]) -> bool {
    let plain = |n: &&str| {
        n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+@,-".contains(c))
            && *n != "journal"
    };
    names.iter().all(plain)
        && names
            .iter()
            .enumerate()
            .all(|(i, n)| !names[..i].contains(n))
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Mode, owner and content for one file. Explicit params win; a replaced file keeps its own
/// mode and owner (a secret never becomes world-readable); a new file gets the connector's.
pub(super) fn decide<'p>(
    planned: &'p PlannedFile,
    live: LiveFile,
    ids: OwnerIds,
    material: &Material,
) -> StagedFile<'p> {
    let content = content_for(material, planned);
    let sha256 = new_sha256(material, planned);
    let stat = match &live.state {
        LiveState::File(stat) => Some(stat),
        LiveState::Absent | LiveState::Link => None,
    };
    let mut mode = match (planned.explicit_mode, stat) {
        (Some(m), _) => m,
        (None, Some(s)) => s.mode & 0o7777,
        (None, None) => planned.default_mode,
    };
    // No set-id, sticky or execute bit on a certificate or key, whatever the live file had.
    mode &= 0o666;
    if planned.role.is_secret() {
        mode &= !0o007;
    }
    mode &= !0o002;
    let keep = |explicit: bool, id: Option<u32>, live: Option<u32>| {
        if explicit { id } else { live.or(id) }
    };
    let uid = keep(planned.explicit_owner.is_some(), ids.0, stat.map(|s| s.uid));
    let gid = keep(planned.explicit_group.is_some(), ids.1, stat.map(|s| s.gid));
    let owner = match (uid, gid) {
        (Some(u), Some(g)) => Some((u, g)),
        (Some(u), None) => Some((u, stat.map_or(0, |s| s.gid))),
        (None, Some(g)) => Some((stat.map_or(0, |s| s.uid), g)),
        (None, None) => None,
    };
    StagedFile {
        in_place: super::mounts::decide(planned, &live),
        planned,
        live,
        content,
        sha256,
        mode,
        owner,
        old_certs: Vec::new(),
        repair: None,
    }
}

/// Finds what is broken among the live files: a file missing (or a symlink that points
/// nowhere) beside files that exist, a certificate that does not load, a key openssl cannot
/// load, or a key that does not belong to the certificate beside it. Each such file is marked
/// for repair. A first deploy (none of the files exists) creates them, it repairs nothing; an
/// engine-rendered file (a watcher's dynamic config) that is missing is created too. Each
/// certificate's files are diagnosed on their own (a certificate new to the target is its
/// first deploy even where the others' files exist).
pub(super) fn diagnose(files: &mut [StagedFile<'_>], plan: &crate::plan::TargetPlan) {
    for group in files.chunk_by_mut(|a, b| a.planned.cert == b.planned.cert) {
        let material = plan.material(group[0].planned.cert);
        diagnose_one(group, material);
    }
}

fn diagnose_one(files: &mut [StagedFile<'_>], material: &Material) {
    let leaf_spki = crate::material::spki_der(&material.leaf.der);
    let first_deploy = files
        .iter()
        .filter(|f| f.planned.role != Role::Rendered)
        .all(|f| f.live.state == LiveState::Absent && f.live.link.is_none());
    for f in files.iter_mut() {
        if f.live.state == LiveState::Absent
            && f.live.link.is_none()
            && (first_deploy || f.planned.role == Role::Rendered)
        {
            continue;
        }
        if f.planned.role == Role::Keystore {
            continue;
        }
        f.repair = match &f.live.state {
            LiveState::Absent if f.live.link.is_some() => Some(format!(
                "missing (the symlink points to {}, which does not exist)",
                f.live.write
            )),
            LiveState::Absent => Some("missing".into()),
            LiveState::Link => None,
            LiveState::File(_) if f.current() => None,
            LiveState::File(_)
                if matches!(f.planned.role, Role::Cert | Role::Fullchain | Role::Bundle)
                    && f.old_certs.is_empty() =>
            {
                Some("not a loadable certificate".into())
            }
            LiveState::File(_) if f.live.key_pub.as_deref() == Some("-") => {
                Some("not a loadable private key (openssl cannot read it)".into())
            }
            LiveState::File(_) => None,
        };
    }
    // The pair: the certificate's public key against the key's.
    let cert = files.iter().position(|f| {
        matches!(f.planned.role, Role::Cert | Role::Fullchain | Role::Bundle) && f.repair.is_none()
    });
    let key = files
        .iter()
        .position(|f| matches!(f.planned.role, Role::Key | Role::Bundle) && f.repair.is_none());
    let (Some(c), Some(k)) = (cert, key) else {
        return;
    };
    let cert_spki = if files[c].current() {
        leaf_spki.clone()
    } else {
        files[c]
            .old_certs
            .first()
            .and_then(|leaf| crate::material::spki_der(&leaf.der))
    };
    let key_spki = if files[k].current() {
        leaf_spki
    } else {
        files[k]
            .live
            .key_pub
            .as_deref()
            .and_then(crate::material::public_key_der)
    };
    if let (Some(cert_spki), Some(key_spki)) = (cert_spki, key_spki)
        && cert_spki != key_spki
        && matches!(files[k].live.state, LiveState::File(_))
    {
        let path = files[c].planned.path.clone();
        files[k].repair = Some(if c == k {
            "its key does not match its certificate".into()
        } else {
            format!("does not match the certificate in {path}")
        });
    }
}

/// Whether a live configuration test may fail because of the live files being replaced: one
/// is missing (a first deploy onto a configuration that already names the files) or broken.
pub(super) fn live_test_may_fail(files: &[StagedFile<'_>]) -> bool {
    files
        .iter()
        .any(|f| f.repair.is_some() || f.live.state == LiveState::Absent)
}

/// `repairs: fullchain missing, key does not match …` for messages, or `None`.
pub(super) fn repairs(files: &[StagedFile<'_>]) -> Option<String> {
    let list: Vec<String> = files
        .iter()
        .filter_map(|f| Some(format!("{} {}", f.planned.role, f.repair.as_ref()?)))
        .collect();
    (!list.is_empty()).then(|| format!("repairs: {}", list.join(", ")))
}

pub(super) fn file_report(f: &StagedFile<'_>, material: &Material) -> FileReport {
    let stat = match &f.live.state {
        LiveState::File(s) => Some(s),
        LiveState::Absent | LiveState::Link => None,
    };
    let action = if f.repair.is_some() {
        "repair"
    } else if f.current() {
        "unchanged"
    } else if stat.is_some() || f.live.link.is_some() {
        "replace"
    } else {
        "create"
    };
    let leaf = f.planned.role.has_leaf() || f.planned.role == Role::Keystore;
    FileReport {
        role: f.planned.role.to_string(),
        path: f.planned.path.clone(),
        action: action.to_string(),
        via_symlink: f.followed().then(|| f.live.write.clone()),
        in_place: f.in_place.as_ref().map(|w| w.why.clone()),
        repair: f.repair.clone(),
        old_sha256: stat.map(|s| s.sha256.clone()),
        new_sha256: f.sha256.clone(),
        mode: format!("{:04o}", f.mode),
        owner: f.owner.map(|(u, _)| u.to_string()),
        group: f.owner.map(|(_, g)| g.to_string()),
        old_fingerprint: f.old_certs.first().map(|c| c.fingerprint),
        new_fingerprint: leaf.then_some(material.leaf.fingerprint),
        subject: leaf.then(|| material.leaf.subject.clone()),
        sans: if leaf {
            material.leaf.sans.clone()
        } else {
            Vec::new()
        },
        not_after: leaf.then(|| crate::report::format_unix(material.leaf.not_after)),
        chain_length: matches!(
            f.planned.role,
            Role::Fullchain | Role::Bundle | Role::Chain | Role::Keystore
        )
        .then_some(material.chain.len()),
    }
}

/// The backup's commands (they need [`super::script::STRICT`], [`super::script::BACKUP`]
/// and [`super::script::JOURNAL`]): the set (0700), a copy of every live file (one `cp` for
/// all when they keep their names, [`entries`]), the copies checked against inspect's hashes,
/// then the journal (the intent, `journal`) — fsync'd in ONE `sync` with the copies, the set
/// and `staged` (this run's staged files, which the swap renames over live ones) — then old
/// sets pruned. `$fail` says whether it all worked; `B` lines name what did not.
pub(super) fn backup_commands(
    s: &mut Script,
    plan: &TargetPlan,
    journal: &str,
    entries: &[Entry],
    staged: &[String],
) {
    let set = set_dir(plan);
    s.cmd(&["certctl_set", &set]);
    let mut check = vec!["certctl_backup_check".to_string(), set.clone()];
    let mut write = vec![
        "certctl_journal_write".to_string(),
        plan.backup_dir.clone(),
        journal.to_string(),
        set.clone(),
    ];
    let copied: Vec<&Entry> = entries.iter().filter(|e| e.copy.is_some()).collect();
    let by_name = copied
        .iter()
        .all(|e| e.copy.as_deref() == Some(base_name(&e.write)));
    let mut all = vec!["certctl_backup_all".to_string(), set.clone()];
    for e in &copied {
        if let (Some(copy), Some(sha)) = (&e.copy, &e.copy_sha256) {
            let to = format!("{set}/{copy}");
            if by_name {
                all.push(e.write.clone());
            } else {
                s.cmd(&["certctl_backup", &e.write, &to]);
            }
            check.extend([copy.clone(), sha.clone()]);
            write.push(to);
        }
    }
    if by_name && all.len() > 2 {
        s.cmd(&all);
    }
    s.cmd(&check);
    write.extend(staged.iter().cloned());
    s.cmd(&write);
    s.cmd(&[
        "certctl_prune",
        &plan.backup_dir,
        &plan.keep_backups.to_string(),
    ]);
}

/// The swap's commands (they need [`super::script::SWAP`], [`super::script::JOURNAL`], and
/// run under [`super::script::NO_HANGUP`]): staged files of followed symlinks moved beside the
/// files they resolve to, then every rename (or in-place write, for a bind-mounted file) in
/// plan order, `swapped` marked, the directories and the journal fsync'd in one `sync`.
pub(super) fn swap_commands(s: &mut Script, plan: &TargetPlan, files: &[StagedFile<'_>]) {
    s.cmd(&["certctl_busy", &plan.backup_dir]);
    for (i, f) in files.iter().enumerate() {
        if f.followed() {
            let idx = i.to_string();
            s.cmd(&[
                "certctl_premove",
                &f.planned.staged,
                &f.staged_at_write(&plan.run_id),
                &idx,
            ]);
        }
    }
    let mut dirs: Vec<String> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let idx = i.to_string();
        let staged = f.staged_at_write(&plan.run_id);
        match &f.in_place {
            Some(w) => super::mounts::write_command(s, &staged, &f.live.write, &idx, w),
            None => {
                s.cmd(&["certctl_rename", &staged, &f.live.write, &idx]);
            }
        }
        let dir = parent(&f.live.write);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let mut mark = vec![
        "certctl_mark_synced".to_string(),
        plan.backup_dir.clone(),
        "swapped".into(),
    ];
    mark.extend(dirs);
    s.cmd(&mark);
}

/// The certificates of live files whose content differs (as inspect read them back, only
/// their CERTIFICATE blocks), parsed.
pub(super) fn read_old_certs(files: &mut [StagedFile<'_>]) {
    for f in files.iter_mut() {
        if let Some(pem) = &f.live.certs_pem {
            f.old_certs = crate::material::parse_certs(pem.as_bytes()).unwrap_or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names_can_be_kept;

    #[test]
    fn copies_keep_their_names_only_when_plain_and_distinct() {
        assert!(names_can_be_kept(&[
            "fullchain.pem",
            "privkey.pem",
            "chain.pem"
        ]));
        assert!(names_can_be_kept(&["cert3.pem", "privkey3.pem"]));
        assert!(names_can_be_kept(&[]));
        // The same name in two directories.
        assert!(!names_can_be_kept(&["cert.pem", "key.pem", "cert.pem"]));
        // The journal's own name in the set, a dot file (`*` leaves it out), odd characters.
        assert!(!names_can_be_kept(&["journal", "key.pem"]));
        assert!(!names_can_be_kept(&[".cert.pem"]));
        assert!(!names_can_be_kept(&["a cert.pem"]));
        assert!(!names_can_be_kept(&["back\\slash.pem"]));
        assert!(!names_can_be_kept(&["new\nline.pem"]));
    }
}
