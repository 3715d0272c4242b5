//! `--user` resolution against the rootfs's `/etc/passwd` and `/etc/group`, the way Docker
//! (moby/sys/user) does it.

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home folder.
    pub home: String,
}

/// One `/etc/group` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Member login names.
    pub members: Vec<String>,
}

/// Parses `/etc/passwd` content; malformed lines are skipped.
pub fn parse_passwd(content: &str) -> Vec<PasswdEntry> {
    content
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Parses `/etc/group` content; malformed lines are skipped.
pub fn parse_group(content: &str) -> Vec<GroupEntry> {
    content
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The identity the container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Home folder (from passwd, `/` when unknown).
    pub home: String,
}

/// Resolves the process identity.
///
/// `uid`, `gid`, `additional` come from `process.user`; `spec_user` is the `io.berth.user`
/// annotation (`name`, `name:group`, `uid:group`, `name:gid`, …) when present; `passwd` and
/// `group` are the rootfs's files (None when absent). Errors use Docker's wording.
pub fn resolve(
    uid: u32,
    gid: u32,
    additional: &[u32],
    spec_user: Option<&str>,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, String> {
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let groups = group.map(parse_group).unwrap_or_default();
    let mut out = ResolvedUser {
        uid,
        gid,
        additional_gids: Vec::new(),
        home: String::from("/"),
    };
    let mut matched_name: Option<String> = None;
    match spec_user.map(str::trim).filter(|s| !s.is_empty()) {
        None => {
            if let Some(u) = users.iter().find(|u| u.uid == uid) {
                out.home = u.home.clone();
                matched_name = Some(u.name.clone());
            }
        }
        Some(s) => {
            let (user_part, group_part) = match s.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (s, None),
            };
            if let Ok(n) = user_part.parse::<u32>() {
                out.uid = n;
                out.gid = 0;
                if let Some(u) = users.iter().find(|u| u.uid == n) {
                    out.gid = u.gid;
                    out.home = u.home.clone();
                    matched_name = Some(u.name.clone());
                }
            } else if user_part.is_empty() {
                // ":group" keeps the uid from process.user
                if let Some(u) = users.iter().find(|u| u.uid == uid) {
                    out.home = u.home.clone();
                }
            } else {
                let u = users.iter().find(|u| u.name == user_part).ok_or_else(|| {
                    format!("unable to find user {user_part}: no matching entries in passwd file")
                })?;
                out.uid = u.uid;
                out.gid = u.gid;
                out.home = u.home.clone();
                matched_name = Some(u.name.clone());
            }
            if let Some(g) = group_part.filter(|g| !g.is_empty()) {
                if let Ok(n) = g.parse::<u32>() {
                    out.gid = n;
                } else {
                    let ge = groups.iter().find(|e| e.name == g).ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?;
                    out.gid = ge.gid;
                }
                // An explicit group replaces the membership-derived supplementary groups.
                matched_name = None;
            }
        }
    }
    if let Some(name) = matched_name {
        for g in &groups {
            if g.members.contains(&name) && !out.additional_gids.contains(&g.gid) {
                out.additional_gids.push(g.gid);
            }
        }
    }
    for g in additional {
        if !out.additional_gids.contains(g) {
            out.additional_gids.push(*g);
        }
    }
    // As Docker does, a process with no supplementary group keeps its primary one
    // (`id` shows `groups=<gid>`).
    if out.additional_gids.is_empty() {
        out.additional_gids.push(out.gid);
    }
    if out.home.is_empty() {
        out.home = "/".into();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        # comment\n\
        bad line\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nstaff:x:50:app,other\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n";

    #[test]
    fn parse() {
        let p = parse_passwd(PASSWD);
        assert_eq!(p.len(), 4);
        assert_eq!(p[3].name, "app");
        assert_eq!(p[3].home, "/home/app");
        let g = parse_group(GROUP);
        assert_eq!(g[1].members, vec!["app", "other"]);
        assert!(g[0].members.is_empty());
    }

    #[test]
    fn by_name() {
        let r = resolve(0, 0, &[], Some("app"), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1000));
        assert_eq!(r.additional_gids, vec![50, 10]);
        assert_eq!(r.home, "/home/app");
    }

    #[test]
    fn name_and_group() {
        let r = resolve(0, 0, &[], Some("nobody:staff"), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((r.uid, r.gid), (65534, 50));
        assert_eq!(r.additional_gids, vec![50]);
        let r = resolve(0, 0, &[7], Some("1000:wheel"), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((r.uid, r.gid, r.additional_gids), (1000, 10, vec![7]));
        let r = resolve(0, 0, &[], Some("app:99"), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 99));
    }

    #[test]
    fn numeric_unknown() {
        let r = resolve(0, 0, &[], Some("4242"), Some(PASSWD), None).unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (4242, 0, "/"));
    }

    #[test]
    fn errors() {
        let e = resolve(0, 0, &[], Some("ghost"), Some(PASSWD), Some(GROUP)).unwrap_err();
        assert_eq!(
            e,
            "unable to find user ghost: no matching entries in passwd file"
        );
        let e = resolve(0, 0, &[], Some("app:ghosts"), Some(PASSWD), Some(GROUP)).unwrap_err();
        assert_eq!(
            e,
            "unable to find group ghosts: no matching entries in group file"
        );
        let e = resolve(0, 0, &[], Some("app"), None, None).unwrap_err();
        assert!(e.contains("unable to find user app"));
    }

    #[test]
    fn no_annotation_uses_process_user() {
        let r = resolve(1000, 1000, &[5], None, Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1000));
        assert_eq!(r.home, "/home/app");
        assert_eq!(r.additional_gids, vec![50, 10, 5]);
        let r = resolve(0, 0, &[], None, None, None).unwrap();
        assert_eq!(r.home, "/");
    }
}
